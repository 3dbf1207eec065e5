"""The S3 store: boto3, credentials from its standard chain, every object checked by SHA-256.

Imported only by :func:`esp32tasks.store.open_store` when the URL is ``s3://``: boto3
alone costs more than doit's whole no-op run.

What goes over the wire, per object of :meth:`S3Store.put_files`: one ``HEAD`` (is the
SHA-256 we would write already there? then nothing else) unless the caller knows the
object holds other bytes, then the object itself through the run's one s3transfer
``TransferManager``: below :data:`MULTIPART_THRESHOLD` one ``PUT`` carrying
``x-amz-checksum-sha256`` (the server refuses bytes that do not hash to it), from it up a
multipart upload whose every part carries its own SHA-256. Each object's metadata holds
the SHA-256 of the whole file (``x-amz-meta-sha256``), which is what the ``HEAD`` reads.
What the server proves in each case is told at :meth:`S3Store._submit`.

Only boto3's, botocore's and s3transfer's public interfaces are used: the client is
configured by :class:`botocore.config.Config`, and one handler of ours is registered on
botocore's documented event system (:func:`_no_expect`); none of botocore's is touched.
So botocore's own headers stay (``amz-sdk-invocation-id`` and ``amz-sdk-request``), and
on plain http every body is hashed once more for the signature (``x-amz-content-sha256``).

Timeouts and retries are ours, not boto3's defaults (60 s reads, up to 5 attempts in
legacy mode): a dead endpoint or one that never answers fails in about 10 s with one
line naming the endpoint and the bucket.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
import weakref
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.awsrequest import (
    AWSHTTPConnection,
    AWSHTTPConnectionPool,
    AWSHTTPSConnection,
    AWSHTTPSConnectionPool,
)
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from esp32tasks import __version__, deadline, interrupts
from esp32tasks.config import StoreConfig
from esp32tasks.errors import (
    StoreAuthError,
    StoreBucketMissing,
    StoreError,
    StoreUnreachable,
)
from esp32tasks.runcache import per_run
from esp32tasks.store.base import content_type

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from s3transfer.futures import TransferFuture
    from s3transfer.manager import TransferManager

__all__ = [
    "ATTEMPTS",
    "CONCURRENCY",
    "CONNECT_TIMEOUT",
    "MULTIPART_CHUNKSIZE",
    "MULTIPART_THRESHOLD",
    "READ_TIMEOUT",
    "S3Store",
    "parse_url",
]

#: Seconds to open a TCP connection, and to wait for any byte of an answer.
CONNECT_TIMEOUT: Final = 3.0
READ_TIMEOUT: Final = 5.0
#: Attempts per request, the first included (botocore "standard" mode: jittered backoff
#: of at most 1 s before the second). Worst case for a silent server: 5 + 1 + 5 s.
ATTEMPTS: Final = 2
#: Requests of the transfer manager in flight at once (all objects and parts of the run),
#: and likewise HEADs.
CONCURRENCY: Final = 8
MULTIPART_THRESHOLD: Final = 16 * 1024 * 1024
MULTIPART_CHUNKSIZE: Final = 8 * 1024 * 1024
#: The metadata key (``x-amz-meta-sha256``) holding the whole object's SHA-256, hex.
SHA256_META: Final = "sha256"

_AUTH_CODES: Final = {
    "SignatureDoesNotMatch": "the secret key is wrong",
    "InvalidAccessKeyId": "the access key ID is unknown to the server",
    "AccessDenied": "these credentials may not do this",
    "InvalidToken": "the session token is invalid",
    "ExpiredToken": "the session token has expired",
    "403": "access denied",
}


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` to ``("bucket", "some/prefix/")`` (prefix "" or ending /)."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url}")
    bucket, _, prefix = url[5:].partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class S3Store:
    """Keys are relative to the URL's prefix; see the module docstring for the protocol.

    The transfer manager and the pool the HEADs of :meth:`put_files` run in are made on
    first use and shut down when the store is dropped (:func:`esp32tasks.runcache.reset`
    forgets the run's store) or closed; both are idle by then, as :meth:`put_files` returns
    or raises only when none of its requests is still running.
    """

    def __init__(self, client: S3Client, bucket: str, prefix: str, *,
                 create_bucket: bool = False,
                 transfer: TransferConfig | None = None,
                 credential_source: Callable[[], str] = lambda: "boto3") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.create_bucket = create_bucket
        self.transfer = transfer or TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNKSIZE,
            max_concurrency=CONCURRENCY,
            # s3transfer's own manager, whose ExtraArgs and checksums are described here,
            # even where awscrt is installed
            preferred_transfer_client="classic")
        self._credential_source = credential_source
        self._bucket_created = False
        self._lock = threading.Lock()  # the bucket's creation
        self._setup = threading.Lock()  # the manager's and the HEAD pool's
        self._manager: TransferManager | None = None
        self._heads: ThreadPoolExecutor | None = None
        self._finalizers: list[weakref.finalize[Any, S3Store]] = []
        #: full key -> what the server must answer to its upload (see _submit)
        self._expected: dict[str, _Proof] = {}
        #: keys whose abandoned multipart uploads were looked for this run
        self._swept: set[str] = set()
        self._opened = datetime.now(UTC)
        #: set when a request overran its deadline: the errors that follow say "too slow"
        self.too_slow: float | None = None

    @classmethod
    def from_config(cls, config: StoreConfig) -> S3Store:
        """One store (and client) per configuration per run: doit runs every action of a
        release in one process, and each new client costs about 50 ms."""
        return _cached_store(config)

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    @property
    def transfer_manager(self) -> TransferManager:
        """The one manager every object of this store goes through (made on first use)."""
        with self._setup:
            if self._manager is None:
                self._manager = create_transfer_manager(self.client, self.transfer)
                # cancel=True: nothing is in flight by then, and if something were, the
                # process should not wait for it
                self._finalizers.append(weakref.finalize(self, _shut_down, self._manager))
            return self._manager

    def close(self) -> None:
        """Shut the transfer manager and the HEAD pool down now (else when dropped); not
        while a :meth:`put_files` runs. A later call makes new ones."""
        with self._setup:
            finalizers, self._finalizers = self._finalizers, []
            self._manager = self._heads = None
        for finalizer in finalizers:
            finalizer()

    def describe(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _where(self) -> str:
        return f"S3 endpoint {self.endpoint} (bucket '{self.bucket}')"

    # -- the Store protocol ------------------------------------------------------------

    def head_sha256(self, key: str) -> str | None:
        """The SHA-256 the object's metadata records, "" if it has none, None if no object."""
        try:
            with self._errors(key, "HEAD"):
                head = self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except _NotFound:
            return None
        return head.get("Metadata", {}).get(SHA256_META, "")

    def put_file(self, key: str, path: Path, sha256: str, *, check: bool = True) -> bool:
        return self.put_files([(key, path, sha256)], overwrite=() if check else {key})[0]

    def put_files(self, files: Sequence[tuple[str, Path, str]], *,
                  overwrite: Collection[str] = ()) -> list[bool]:
        """Every object through the run's transfer manager, all of them submitted at once
        (it runs :data:`CONCURRENCY` requests at a time): keys in ``overwrite`` at once,
        the others as soon as their ``HEAD`` (several at a time) says the object does not
        hold the file's SHA-256 ("already there" first, as twine does: a rerun after a
        crash sends one HEAD per object already there and nothing else for it).

        The first error wins; the rest is cancelled and waited for, so no request of this
        call is still running when it returns or raises.
        """
        transfers: dict[int, tuple[str, TransferFuture]] = {}
        heads: list[Future[str | None]] = []
        self._sweep([key for key, path, _ in files
                     if path.stat().st_size >= self.transfer.multipart_threshold])
        try:
            for i, (key, path, sha256) in enumerate(files):
                if key in overwrite:
                    transfers[i] = self._submit_file(key, path, sha256)
            checked = [i for i, (key, _, _) in enumerate(files) if key not in overwrite]
            for i in self._not_there(files, checked, heads):
                transfers[i] = self._submit_file(*files[i])
            self._wait(files, transfers)
        except BaseException:
            for head in heads:
                head.cancel()  # one already asked finishes in its thread; it writes nothing
            for _, future in transfers.values():
                future.cancel()
            for _, future in transfers.values():
                with suppress(Exception):
                    future.result()
            raise
        return [i in transfers for i in range(len(files))]

    def directories(self, prefix: str) -> list[str]:
        found: list[str] = []
        base = self.prefix + prefix
        with self._errors(prefix, "LIST"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/")
            for page in pages:
                found += [str(p["Prefix"])[len(base):].rstrip("/")
                          for p in page.get("CommonPrefixes", [])]
        return sorted(found)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            with self._errors(key, "GET"):
                try:
                    response = self.client.get_object(Bucket=self.bucket,
                                                      Key=self.prefix + key)
                    return response["Body"].read()
                finally:
                    deadline.stop()  # GetObject's runs until its body is read (_watch)
        except _NotFound:
            return None

    def put_bytes(self, key: str, data: bytes, *, check: bool = True) -> bool:
        sha256 = hashlib.sha256(data).hexdigest()
        if check and self.head_sha256(key) == sha256:
            return False
        self._with_bucket(lambda: self._put(key, data, sha256))
        return True

    # -- internals ---------------------------------------------------------------------

    def _not_there(self, files: Sequence[tuple[str, Path, str]], indexes: list[int],
                   heads: list[Future[str | None]]) -> Iterator[int]:
        """Those of ``indexes`` whose object does not hold the file's SHA-256, as their
        HEADs answer; the futures go to ``heads`` for the caller to cancel.

        Several at a time, in a pool of their own (s3transfer has no HEAD to give its
        manager): each is a round trip, and one after another a target's nine took a
        third longer even against SeaweedFS on loopback (all there: 148 ms instead of
        110 for three targets; nothing there: 351 instead of 306), a round trip each more
        on a real network. One alone is asked in the caller's thread."""
        if len(indexes) == 1:
            key, _, sha256 = files[indexes[0]]
            if self.head_sha256(key) != sha256:
                yield indexes[0]
            return
        if not indexes:
            return
        pool = self._head_pool()
        with interrupts.deferred():  # each future reaches heads, for the caller to cancel
            asked = {pool.submit(self.head_sha256, files[i][0]): i for i in indexes}
            heads.extend(asked)
        for head in as_completed(asked):
            i = asked[head]
            if head.result() != files[i][2]:
                yield i

    def _head_pool(self) -> ThreadPoolExecutor:
        with self._setup:
            if self._heads is None:
                self._heads = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="s3-head")
                self._finalizers.append(weakref.finalize(
                    self, self._heads.shutdown, wait=False, cancel_futures=True))
            return self._heads

    def _submit_file(self, key: str, path: Path, sha256: str) -> tuple[str, TransferFuture]:
        """The file to the transfer manager: ("PUT" or "upload", its future)."""
        if path.stat().st_size < self.transfer.multipart_threshold:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != sha256:
                raise StoreError(f"{path} changed while being uploaded; run the release again")
            return "PUT", self._submit(key, data, sha256)
        return "upload", self._submit(key, path, sha256)

    def _submit(self, key: str, body: bytes | Path, sha256: str) -> TransferFuture:
        """One object to the transfer manager, its ``x-amz-meta-sha256`` being ``sha256``.

        What the server checks:

        - ``bytes`` (below the multipart threshold): one PutObject whose
          ``x-amz-checksum-sha256`` header (``ChecksumSHA256``, signed) is ``sha256``
          itself, the receipt's. The server hashes the bytes it received and refuses them
          (400 ``BadDigest``) unless they hash to it: what is stored is the receipt's bytes.
          (They are also the bytes :meth:`_submit_file` hashed before sending, so a server
          that ignores the header still gets no other file.)
        - a ``Path`` (multipart): ``ChecksumAlgorithm=SHA256``, so botocore computes each
          part's SHA-256 from the bytes it reads and sends it with the part; the server
          refuses a part that does not hash to it, and CompleteMultipartUpload lists every
          part's SHA-256, the object's checksum being the SHA-256 of those ("-N",
          COMPOSITE). That proves each part arrived as read, not that the file read is the
          receipt's: S3 takes a whole-object (FULL_OBJECT) checksum of a multipart upload
          for CRC algorithms only, and s3transfer turns an ExtraArgs ``ChecksumSHA256``
          into exactly that, so the receipt's SHA-256 is in the metadata alone (the upload
          action hashes the file against its receipt just before).
        """
        extra: dict[str, Any] = {"ContentType": _content_type(key),
                                 "Metadata": {SHA256_META: sha256}}
        source: io.BytesIO | str
        if isinstance(body, bytes):
            if len(body) >= self.transfer.multipart_threshold:  # s3transfer: FULL_OBJECT
                raise ValueError(f"{key}: {len(body)} bytes do not go as one PutObject")
            extra["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
            source = io.BytesIO(body)
            self._expected[self.prefix + key] = _Proof.single(body)
        else:
            extra["ChecksumAlgorithm"] = "SHA256"
            source = str(body)
            self._expected[self.prefix + key] = _Proof.parts(
                body, self.transfer.multipart_chunksize)
        with interrupts.deferred():  # a worker thread started half is never stopped
            return self.transfer_manager.upload(source, self.bucket, self.prefix + key, extra)

    def _wait(self, files: Sequence[tuple[str, Path, str]],
              transfers: dict[int, tuple[str, TransferFuture]]) -> None:
        """Each transfer's end, in order; with ``create_bucket = true``, a missing bucket is
        created once and what it refused sent again (into ``transfers``)."""
        refused = []
        for i, (operation, future) in list(transfers.items()):
            try:
                with self._errors(files[i][0], operation):
                    future.result()
            except StoreBucketMissing:
                if not self.create_bucket:
                    raise
                refused.append(i)
        if refused:
            self._ensure_bucket()
            for i in refused:
                transfers[i] = self._submit_file(*files[i])
            for i in refused:
                operation, future = transfers[i]
                with self._errors(files[i][0], operation):
                    future.result()

    def _with_bucket(self, write: Callable[[], None]) -> None:
        """Run ``write``; with ``create_bucket = true``, create a missing bucket and retry."""
        try:
            write()
        except StoreBucketMissing:
            if not self.create_bucket:
                raise
            self._ensure_bucket()
            write()

    def _ensure_bucket(self) -> None:
        with self._lock:  # several threads may find it missing
            if not self._bucket_created:
                self._create_bucket()

    def _put(self, key: str, data: bytes, sha256: str) -> None:
        """One PutObject of bytes in memory (:meth:`put_bytes`: one object, no manager)."""
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
        self._expected[self.prefix + key] = _Proof.single(data)
        with self._errors(key, "PUT"):
            self.client.put_object(
                Bucket=self.bucket, Key=self.prefix + key, Body=data,
                ContentType=_content_type(key), Metadata={SHA256_META: sha256},
                # the server refuses the object unless the bytes it got hash to this
                ChecksumSHA256=checksum)

    def _create_bucket(self) -> None:
        region = self.client.meta.region_name
        with self._errors("", "CreateBucket"):
            try:
                if region and region != "us-east-1":
                    self.client.create_bucket(
                        Bucket=self.bucket,
                        CreateBucketConfiguration={"LocationConstraint": region})  # type: ignore[typeddict-item]
                else:
                    self.client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:  # another runner was quicker: fine
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise
        self._bucket_created = True

    def _sweep(self, keys: Sequence[str]) -> None:
        """Abort the multipart uploads of these keys that a killed run left behind.

        S3 keeps the parts of an upload that was neither completed nor aborted (and bills
        them) until someone aborts it; s3transfer aborts its own on failure, but not when
        the process is killed. So before a key goes up in parts, its incomplete uploads
        begun before this run are listed and aborted: one request per call that sends a
        large file, none otherwise. Where listing is not allowed (credentials without
        ``s3:ListBucketMultipartUploads``) or not offered, nothing is swept and nothing
        fails.
        """
        todo = {self.prefix + key for key in keys} - self._swept
        if not todo:
            return
        self._swept |= todo
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=os.path.commonprefix(sorted(todo)))  # noqa: RUF071  # keys
            stale = [(u["Key"], u["UploadId"]) for page in pages
                     for u in page.get("Uploads", [])
                     if u.get("Key") in todo and u.get("Initiated", self._opened) < self._opened]
        except (ClientError, BotoCoreError):
            return
        for key, upload_id in stale:
            # suppress: already gone (another run swept it) is fine
            with self._errors(key[len(self.prefix):], "AbortMultipartUpload"), \
                    suppress(ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                   UploadId=upload_id)

    # -- botocore event handlers (registered by _watch) --------------------------------

    def _begin(self, request: Any, **_: Any) -> None:
        """``before-send``: this attempt's deadline, sized by its body."""
        size = int(request.headers.get("Content-Length") or 0)
        deadline.start(deadline.allowance(READ_TIMEOUT, size), _Overran(weakref.ref(self)))

    def _end(self, model: Any = None, **_: Any) -> None:
        """``after-call``/``after-call-error``: the exchange is over (a GetObject's
        body is still to be read: :meth:`get_bytes` ends that one)."""
        if model is None or model.name != "GetObject":
            deadline.stop()

    def _remember_key(self, params: Mapping[str, Any], context: dict[str, Any],
                      **_: Any) -> None:
        """``before-parameter-build``: which object the call is for, for :meth:`_check`."""
        key = params.get("Key")
        if isinstance(key, str):
            context[_CONTEXT_KEY] = key

    def _check(self, http_response: Any, parsed: Mapping[str, Any], model: Any,
               context: Mapping[str, Any], **_: Any) -> None:
        """``after-call``: an answer that is not S3's is never a verdict, and an upload
        counts only when the server confirms the checksum (or, for a server that sends
        none, the ETag) of the bytes we sent."""
        key = str(context.get(_CONTEXT_KEY, ""))
        shown = key[len(self.prefix):] if key.startswith(self.prefix) else key
        operation = _VERBS.get(model.name, model.name)
        watch = deadline.current()
        if watch is not None and watch.expired:  # a head cut off by the shutdown
            self._raise_if_too_slow(shown, operation)
        status = int(http_response.status_code)
        headers: Mapping[str, str] = http_response.headers
        kind = headers.get("Content-Type", "").split(";")[0].strip().lower()
        if (200 <= status < 300 or status == 404) and kind in ("text/html",
                                                               "application/xhtml+xml"):
            raise self._not_s3(operation, shown, f"{status} and an HTML page")
        if 200 <= status < 300 and model.name in _ETAG_OPERATIONS and not headers.get("ETag"):
            raise self._not_s3(operation, shown, f"{status} without an ETag")
        proof = self._expected.get(key) if model.name in _UPLOAD_ENDS else None
        if proof is None or status >= 300:
            return
        checksum = str(parsed.get("ChecksumSHA256") or "")
        etag = str(parsed.get("ETag") or "").strip('"')
        if checksum == proof.checksum or (not checksum and etag == proof.etag):
            del self._expected[key]
            return
        if checksum or etag:
            raise StoreError(
                f"{self._where()}: {operation} of {self.describe(shown)} was answered with "
                f"checksum {checksum or '(none)'} and ETag {etag or '(none)'}, not those of "
                "the bytes sent; the object holds something else: nothing was recorded as "
                "uploaded, run `doit release` again, and if it recurs, ask the server's "
                "operators")
        raise self._not_s3(operation, shown, f"{status} without a checksum or an ETag")

    def _not_s3(self, operation: str, key: str, answer: str) -> StoreError:
        return StoreError(
            f"{self._where()} answered {operation} {self.describe(key)} with {answer}: this "
            "is not an S3 endpoint; nothing was recorded as uploaded; check "
            "store.endpoint_url (the S3 API's address, not a web page or a proxy's login)")

    @contextmanager
    def _errors(self, key: str, operation: str) -> Iterator[None]:
        """botocore's exceptions to ours: one line naming the endpoint and the bucket."""
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("NoSuchKey", "404") and operation in ("HEAD", "GET"):
                # a HEAD has no body, so its 404 may also mean "no such bucket"; the PUT
                # that follows tells them apart
                raise _NotFound from None
            if code == "NoSuchBucket":
                if self.create_bucket and operation in ("HEAD", "GET"):
                    raise _NotFound from None  # the PUT that follows creates it
                raise StoreBucketMissing(
                    f"{self._where()}: the bucket does not exist; create it, fix store.url, "
                    "or set `create_bucket = true` in [store]") from None
            if code in _AUTH_CODES or status == 403:
                reason = _AUTH_CODES.get(code, "access denied")
                if code in ("403", "AccessDenied") and operation == "HEAD":
                    reason = self._diagnose(key) or reason
                raise StoreAuthError(
                    f"{self._where()}: {operation} {self.describe(key)} refused: {reason} "
                    f"(credentials from {self._credential_source()}); check AWS_PROFILE or "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from None
            message = str(error.get("Message", "")) or str(exc)
            raise StoreError(f"{self._where()}: {operation} {self.describe(key)} failed: "
                             f"{code or status}: {message}") from None
        except NoCredentialsError:
            raise StoreAuthError(
                f"{self._where()}: no AWS credentials found; set AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where an instance role "
                "applies") from None
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise StoreUnreachable(
                f"{self._where()}: cannot connect after {ATTEMPTS} attempts ({_reason(exc)});"
                " check that the server is up and store.endpoint_url") from None
        except ConnectionClosedError:
            self._raise_if_too_slow(key, operation)
            raise StoreUnreachable(
                f"{self._where()}: the connection closed before an answer, {ATTEMPTS} "
                "attempts; check that the server is up") from None
        except ReadTimeoutError:
            self._raise_if_too_slow(key, operation)
            raise StoreUnreachable(
                f"{self._where()}: no answer within {READ_TIMEOUT:.0f} s, {ATTEMPTS} "
                "attempts; the server accepts connections but does not respond") from None
        except (IncompleteReadError, ResponseStreamingError):
            self._raise_if_too_slow(key, operation)
            raise StoreUnreachable(
                f"{self._where()}: {operation} {self.describe(key)}: the server cut its answer "
                "short; run the release again, and if it recurs check the server and the "
                "network to it") from None
        except BotoCoreError as exc:
            self._raise_if_too_slow(key, operation)
            raise StoreError(f"{self._where()}: {operation} {self.describe(key)} failed: "
                             f"{exc}") from None

    def _raise_if_too_slow(self, key: str, operation: str) -> None:
        """A failure after a request overran its deadline is the server's slowness."""
        if self.too_slow is not None:
            raise StoreUnreachable(
                f"{self._where()}: too slow: {operation} {self.describe(key)} did not finish "
                f"within {self.too_slow:.0f} s (at under {deadline.MIN_RATE // 1024} KiB/s, "
                f"{ATTEMPTS} attempts); the server or the network to it is overloaded: try "
                "again later") from None

    def _diagnose(self, key: str) -> str | None:
        """A refused HEAD carries no error code; a GET of the same key does."""
        try:
            self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, Range="bytes=0-0")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            return _AUTH_CODES.get(code)
        except BotoCoreError:
            return None
        return None


class _NotFound(Exception):  # control flow, never escapes this module
    pass


_CONTEXT_KEY: Final = "esp32tasks.key"
#: botocore's operation names as our messages name them.
_VERBS: Final = {"HeadObject": "HEAD", "GetObject": "GET", "PutObject": "PUT",
                 "UploadPart": "upload (part)", "CompleteMultipartUpload": "upload"}
#: Operations whose successful answer always carries an ETag.
_ETAG_OPERATIONS: Final = frozenset({"PutObject", "GetObject", "HeadObject", "UploadPart"})
#: The answers that finish writing an object.
_UPLOAD_ENDS: Final = frozenset({"PutObject", "CompleteMultipartUpload"})


class _Proof:
    """What a server that stored exactly our bytes answers: their SHA-256 checksum (the
    COMPOSITE one, ``-N``, for a multipart upload) and, for servers that send no
    checksum, their ETag (MD5 of the bytes; of the parts' MD5s, ``-N``, multipart)."""

    __slots__ = ("checksum", "etag")

    def __init__(self, checksum: str, etag: str) -> None:
        self.checksum, self.etag = checksum, etag

    @classmethod
    def single(cls, data: bytes) -> _Proof:
        return cls(base64.b64encode(hashlib.sha256(data).digest()).decode(),
                   hashlib.md5(data, usedforsecurity=False).hexdigest())

    @classmethod
    def parts(cls, path: Path, chunksize: int) -> _Proof:
        sha, md5, count = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
        with path.open("rb") as file:
            while chunk := file.read(chunksize):
                sha.update(hashlib.sha256(chunk).digest())
                md5.update(hashlib.md5(chunk, usedforsecurity=False).digest())
                count += 1
        return cls(f"{base64.b64encode(sha.digest()).decode()}-{count}",
                   f"{md5.hexdigest()}-{count}")


class _Connection(deadline.Watched, AWSHTTPConnection):  # type: ignore[misc]
    pass


class _TLSConnection(deadline.Watched, AWSHTTPSConnection):  # type: ignore[misc]
    pass


class _Pool(AWSHTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(AWSHTTPSConnectionPool):
    ConnectionCls = _TLSConnection


class _Overran:
    """A deadline's ``on_expire``: marks the store too slow, holding it weakly (a thread's
    deadline may outlive the store, which must not be kept alive by it)."""

    __slots__ = ("store",)

    def __init__(self, store: weakref.ref[S3Store]) -> None:
        self.store = store

    def __call__(self, watch: deadline.Deadline) -> None:
        store = self.store()
        if store is not None:
            store.too_slow = watch.seconds


def _shut_down(manager: TransferManager) -> None:
    """The transfer manager's finalizer. The last reference to a store may go in one of
    the manager's own worker threads, where shutting it down would join that very thread
    (a deadlock that held the process at exit): there, a thread of its own does it."""
    if threading.current_thread() is threading.main_thread():
        manager.shutdown(True)
    else:
        threading.Thread(target=manager.shutdown, args=(True,), daemon=True,
                         name="s3-manager-shutdown").start()


class _Weak:
    """An event handler calling a method of a store that may be gone (then: nothing)."""

    __slots__ = ("method",)

    def __init__(self, method: weakref.WeakMethod[Callable[..., None]]) -> None:
        self.method = method

    def __call__(self, **kwargs: Any) -> None:
        method = self.method()
        if method is not None:
            method(**kwargs)


def _watch(client: Any, store: S3Store) -> None:
    """Deadlines and proofs on every request of ``client``.

    botocore bounds each read (``read_timeout``), not a whole request, and offers no
    public way to choose its connection class; its pools are urllib3's, whose connection
    class is the pool's ``ConnectionCls``. So the one non-public step of this module: the
    client's HTTP session's pool classes become ours, whose connections join the running
    request's :class:`~esp32tasks.deadline.Deadline` (a unit test fails should botocore
    rename them). Everything else is the documented event system.
    """
    pools = getattr(getattr(client._endpoint, "http_session", None),
                    "_pool_classes_by_scheme", None)
    if isinstance(pools, dict):
        pools.update(http=_Pool, https=_TLSPool)
    events = client.meta.events
    # weakly: the store's finalizers hold the client, whose events must not hold the store
    ref = weakref.WeakMethod
    for event, handler in (("before-send.s3", ref(store._begin)),
                           ("after-call.s3", ref(store._check)),
                           ("after-call.s3", ref(store._end)),
                           ("after-call-error.s3", ref(store._end)),
                           ("before-parameter-build.s3", ref(store._remember_key))):
        events.register(event, _Weak(handler))


def _content_type(key: str) -> str:
    return content_type(key.rsplit("/", 1)[-1])


def _reason(exc: BotoCoreError) -> str:
    """botocore's message minus the URL (we name the endpoint ourselves)."""
    text = str(exc)
    return text.split(": ", 1)[0] if "Could not connect" in text else type(exc).__name__


def _no_expect(request: Any, **_: Any) -> None:
    """``before-send``: the body goes with the head, without waiting for ``100 Continue``.

    botocore asks the server first (``Expect: 100-continue``) on every PUT with a file body,
    and s3transfer's bodies always are: a round trip per object, to spare a body the server
    would refuse. Ours are at most one multipart chunk, refused only by a bad signature or
    checksum. Measured on loopback SeaweedFS, 3 targets of 9 objects: 257 ms with the
    wait, 226 ms without (218 ms before the transfer manager); on a network, a round trip
    more per object. botocore never signs ``Expect``, so dropping it after signing is
    safe; should a release of botocore stop honouring this, only the time is lost.
    """
    request.headers.pop("Expect", None)


@per_run
def _cached_store(config: StoreConfig) -> S3Store:
    bucket, prefix = parse_url(config.url)
    session = boto3.session.Session()
    region = config.region or session.region_name or "us-east-1"
    # IP and localhost endpoints (SeaweedFS, MinIO) have no per-bucket host names
    addressing: Final = "path" if config.endpoint_url else "auto"
    client_config = Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
        s3={"addressing_style": addressing},
        # we send SHA-256 checksums where they mean something; no CRC32 on top
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # botocore's own names 20 facts about this machine in 190 bytes, on every request;
        # boto3's session appends "Botocore/<version>"
        user_agent=f"esp32tasks/{__version__}",
        # the manager's requests, the HEADs of put_files and a caller's own
        max_pool_connections=2 * CONCURRENCY + 2,
    )
    client = session.client("s3", endpoint_url=config.endpoint_url, region_name=region,
                            config=client_config)
    for operation in ("PutObject", "UploadPart"):
        client.meta.events.register(f"before-send.s3.{operation}", _no_expect)

    def credential_source() -> str:
        creds = session.get_credentials()
        return creds.method if creds is not None else "nowhere"

    store = S3Store(client, bucket, prefix, create_bucket=config.create_bucket,
                    credential_source=credential_source)
    _watch(client, store)
    return store
