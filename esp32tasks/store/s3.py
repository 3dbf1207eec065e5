"""The S3 store: boto3, credentials from its standard chain, every object checked by SHA-256.

Imported only by :func:`esp32tasks.store.open_store` when the URL is ``s3://``: boto3
alone costs more than doit's whole no-op run.

What goes over the wire, per object: one ``HEAD`` (is the SHA-256 we would write already
there? then nothing else), else one ``PUT`` carrying ``x-amz-checksum-sha256`` (the
server refuses bytes that do not hash to it) or, above :data:`MULTIPART_THRESHOLD`, a
multipart upload whose every part carries its own SHA-256. Each object's metadata holds
the SHA-256 of the whole file (``x-amz-meta-sha256``), which is what the ``HEAD`` reads.

Timeouts and retries are ours, not boto3's defaults (60 s reads, up to 5 attempts in
legacy mode): a dead endpoint or one that never answers fails in about 10 s with one
line naming the endpoint and the bucket.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from esp32tasks import __version__
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
#: Objects of one target in flight at once (boto3's pool holds 10 connections).
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
    """Keys are relative to the URL's prefix; see the module docstring for the protocol."""

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
            max_concurrency=4)
        self._credential_source = credential_source
        self._bucket_created = False
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: StoreConfig) -> S3Store:
        """One store (and client) per configuration per run: doit runs every action of a
        release in one process, and each new client costs about 50 ms."""
        return _cached_store(config)

    @property
    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

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
        # "Already there" first (as twine does), unless the caller knows the object holds
        # other bytes: a rerun after a crash sends one HEAD per object already there and
        # nothing else for it.
        if check and self.head_sha256(key) == sha256:
            return False
        if path.stat().st_size < self.transfer.multipart_threshold:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != sha256:
                raise StoreError(f"{path} changed while being uploaded; run the release again")
            self._with_bucket(lambda: self._put(key, data, sha256))
            return True
        extra = {"Metadata": {SHA256_META: sha256}, "ContentType": _content_type(key),
                 "ChecksumAlgorithm": "SHA256"}

        def upload() -> None:
            with self._errors(key, "upload"), \
                    create_transfer_manager(self.client, self.transfer) as manager:
                manager.upload(str(path), self.bucket, self.prefix + key, extra).result()

        self._with_bucket(upload)
        return True

    def put_files(self, files: Sequence[tuple[str, Path, str]], *,
                  overwrite: Collection[str] = ()) -> list[bool]:
        """Several at a time: per object maybe a HEAD and maybe a PUT, so latency, not
        bandwidth, is what a release of small files waits for. The first error wins."""
        if len(files) <= 1:
            return [self.put_file(k, p, s, check=k not in overwrite) for k, p, s in files]
        with ThreadPoolExecutor(min(CONCURRENCY, len(files)),
                                thread_name_prefix="s3-upload") as pool:
            futures = [pool.submit(self.put_file, k, p, s, check=k not in overwrite)
                       for k, p, s in files]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def get_bytes(self, key: str) -> bytes | None:
        try:
            with self._errors(key, "GET"):
                response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
                return response["Body"].read()
        except _NotFound:
            return None

    def put_bytes(self, key: str, data: bytes, *, check: bool = True) -> bool:
        sha256 = hashlib.sha256(data).hexdigest()
        if check and self.head_sha256(key) == sha256:
            return False
        self._with_bucket(lambda: self._put(key, data, sha256))
        return True

    # -- internals ---------------------------------------------------------------------

    def _with_bucket(self, write: Callable[[], None]) -> None:
        """Run ``write``; with ``create_bucket = true``, create a missing bucket and retry."""
        try:
            write()
        except StoreBucketMissing:
            if not self.create_bucket:
                raise
            with self._lock:  # put_files writes from several threads
                if not self._bucket_created:
                    self._create_bucket()
            write()

    def _put(self, key: str, data: bytes, sha256: str) -> None:
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode()
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
            raise StoreUnreachable(
                f"{self._where()}: the connection closed before an answer, {ATTEMPTS} "
                "attempts; check that the server is up") from None
        except ReadTimeoutError:
            raise StoreUnreachable(
                f"{self._where()}: no answer within {READ_TIMEOUT:.0f} s, {ATTEMPTS} "
                "attempts; the server accepts connections but does not respond") from None
        except BotoCoreError as exc:
            raise StoreError(f"{self._where()}: {operation} {self.describe(key)} failed: "
                             f"{exc}") from None

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


def _content_type(key: str) -> str:
    return content_type(key.rsplit("/", 1)[-1])


def _reason(exc: BotoCoreError) -> str:
    """botocore's message minus the URL (we name the endpoint ourselves)."""
    text = str(exc)
    return text.split(": ", 1)[0] if "Could not connect" in text else type(exc).__name__


#: Operations whose body is empty or carries a signed ``x-amz-checksum-sha256``.
_CHECKSUMMED: Final = ("PutObject", "UploadPart", "HeadObject", "GetObject")


def _trim_requests(client: S3Client, unsigned: Config) -> None:
    """What botocore adds to every request that a release does not need (about 330 bytes
    of a 1 KiB PUT header), dropped from this client only:

    - ``Expect: 100-continue`` on each PUT: a round trip before the body, to spare a body
      the server would refuse; ours are at most one multipart chunk and rarely refused.
    - ``amz-sdk-invocation-id`` and ``amz-sdk-request``: retry telemetry for the server.
    - the payload's SHA-256 in ``x-amz-content-sha256`` (and a second pass over the body
      to compute it): botocore signs it on plain http even where the body's integrity is
      already signed, as a ``x-amz-checksum-sha256`` header. There, and for bodiless
      requests, ``UNSIGNED-PAYLOAD`` (what botocore itself sends over https). Requests
      whose body carries no signed checksum (CreateBucket, CompleteMultipartUpload) keep
      the signed payload hash.
    """
    from botocore.handlers import add_expect_header, add_retry_headers

    events = client.meta.events
    events.unregister("before-call.s3", add_expect_header)
    events.unregister("request-created", add_retry_headers)

    def unsigned_payload(request: Any, **_: Any) -> None:
        if request.body and "x-amz-checksum-sha256" not in request.headers:
            return
        # ``unsigned`` differs from the client's config in that flag alone, which
        # botocore's S3 signer reads from here
        request.context["client_config"] = unsigned

    for operation in _CHECKSUMMED:
        events.register(f"before-sign.s3.{operation}", unsigned_payload)


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
        max_pool_connections=CONCURRENCY + 2,
    )
    client = session.client("s3", endpoint_url=config.endpoint_url, region_name=region,
                            config=client_config)
    _trim_requests(client, client_config.merge(Config(
        s3={"addressing_style": addressing, "payload_signing_enabled": False})))

    def credential_source() -> str:
        creds = session.get_credentials()
        return creds.method if creds is not None else "nowhere"

    return S3Store(client, bucket, prefix, create_bucket=config.create_bucket,
                   credential_source=credential_source)
