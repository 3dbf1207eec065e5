"""S3Store offline: botocore's Stubber, or a fake S3 answering at ``before-send``, instead
of a server (no socket is opened)."""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from botocore.stub import ANY, Stubber

from esp32tasks import runcache
from esp32tasks.config import StoreConfig
from esp32tasks.errors import StoreAuthError, StoreBucketMissing, StoreError
from esp32tasks.store import s3 as s3_module
from esp32tasks.store.s3 import MULTIPART_CHUNKSIZE, MULTIPART_THRESHOLD, S3Store, parse_url

SECRET = "unit-secret-never-shown"


@pytest.fixture
def stubbed() -> Iterator[tuple[S3Store, Stubber]]:
    import boto3

    client = boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                          aws_access_key_id="AKUNIT", aws_secret_access_key=SECRET)
    store = S3Store(client, "bucket", "pre/fix/", credential_source=lambda: "env")
    with Stubber(client) as stub:
        yield store, stub
        stub.assert_no_pending_responses()
    store.close()


class BodyOf:
    """Matches a request body (bytes or a file object such as s3transfer's) by content."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        if isinstance(other, bytes):
            return other == self.data
        read = getattr(other, "read", None)
        if read is None:
            return False
        data = read()
        other.seek(0)  # type: ignore[attr-defined]
        return bool(data == self.data)

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"BodyOf({self.data!r})"


@pytest.mark.parametrize(("url", "expected"), [
    ("s3://bucket", ("bucket", "")),
    ("s3://bucket/", ("bucket", "")),
    ("s3://bucket/a/b", ("bucket", "a/b/")),
    ("s3://bucket/a/b/", ("bucket", "a/b/")),
])
def test_parse_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_url(url) == expected


def test_parse_url_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="not an s3:// URL"):
        parse_url("gs://bucket")


def test_from_config_is_one_store_per_config_with_our_timeouts() -> None:
    config = StoreConfig(url="s3://unit-bucket/p", endpoint_url="http://127.0.0.1:9")
    store = S3Store.from_config(config)
    assert store is S3Store.from_config(config)
    assert (store.bucket, store.prefix) == ("unit-bucket", "p/")
    client_config: Any = store.client.meta.config  # botocore-stubs omit these attributes
    assert client_config.connect_timeout == 3
    assert client_config.read_timeout == 5
    assert client_config.retries == {"mode": "standard", "total_max_attempts": 2}
    assert store.describe("k") == "s3://unit-bucket/p/k"


def head(sha256: str) -> dict[str, Any]:
    return {"Metadata": {"sha256": sha256}, "ContentLength": 1}


def test_put_file_skips_an_object_that_holds_the_sha256(
        stubbed: tuple[S3Store, Stubber], tmp_path: Path) -> None:
    store, stub = stubbed
    path = tmp_path / "hello.bin"
    path.write_bytes(b"fw")
    sha = hashlib.sha256(b"fw").hexdigest()
    stub.add_response("head_object", head(sha), {"Bucket": "bucket", "Key": "pre/fix/t/hello.bin"})
    assert not store.put_file("t/hello.bin", path, sha)


def test_put_file_sends_sha256_metadata_checksum_and_type(
        stubbed: tuple[S3Store, Stubber], tmp_path: Path) -> None:
    store, stub = stubbed
    path = tmp_path / "sdkconfig"
    path.write_bytes(b"CONFIG_A=y\n")
    sha = hashlib.sha256(b"CONFIG_A=y\n").hexdigest()
    stub.add_response("head_object", head("0" * 64), {"Bucket": "bucket",
                                                      "Key": "pre/fix/sdkconfig"})
    stub.add_response("put_object", {}, {
        "Bucket": "bucket", "Key": "pre/fix/sdkconfig", "Body": BodyOf(b"CONFIG_A=y\n"),
        "ContentType": "text/plain", "Metadata": {"sha256": sha},
        "ChecksumSHA256": base64.b64encode(bytes.fromhex(sha)).decode()})
    assert store.put_file("sdkconfig", path, sha)


def test_put_file_refuses_a_file_that_no_longer_matches(
        stubbed: tuple[S3Store, Stubber], tmp_path: Path) -> None:
    store, stub = stubbed
    path = tmp_path / "a.bin"
    path.write_bytes(b"new")
    stub.add_client_error("head_object", "404", http_status_code=404)
    with pytest.raises(StoreError, match="changed while being uploaded"):
        store.put_file("a.bin", path, hashlib.sha256(b"old").hexdigest())


def test_missing_bucket_names_the_bucket(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stub = stubbed
    stub.add_client_error("get_object", "NoSuchBucket", http_status_code=404)
    with pytest.raises(StoreBucketMissing) as info:
        store.get_bytes("release.json")
    assert str(info.value) == (
        "S3 endpoint http://127.0.0.1:9 (bucket 'bucket'): the bucket does not exist; create "
        "it, fix store.url, or set `create_bucket = true` in [store]")


def test_create_bucket_creates_it_once_and_retries_the_write(
        stubbed: tuple[S3Store, Stubber]) -> None:
    store, stub = stubbed
    store.create_bucket = True
    stub.add_client_error("get_object", "NoSuchBucket", http_status_code=404)
    stub.add_client_error("head_object", "404", http_status_code=404)
    stub.add_client_error("put_object", "NoSuchBucket", http_status_code=404)
    stub.add_response("create_bucket", {}, {"Bucket": "bucket"})
    stub.add_response("put_object", {}, {"Bucket": "bucket", "Key": "pre/fix/release.json",
                                         "Body": b"{}", "ContentType": "application/json",
                                         "Metadata": ANY, "ChecksumSHA256": ANY})
    assert store.get_bytes("release.json") is None
    assert store.put_bytes("release.json", b"{}")


def test_a_refused_head_is_explained_by_a_get(stubbed: tuple[S3Store, Stubber],
                                              tmp_path: Path) -> None:
    store, stub = stubbed
    path = tmp_path / "a.bin"
    path.write_bytes(b"a")
    stub.add_client_error("head_object", "403", http_status_code=403)
    stub.add_client_error("get_object", "SignatureDoesNotMatch", http_status_code=403)
    with pytest.raises(StoreAuthError) as info:
        store.put_file("a.bin", path, hashlib.sha256(b"a").hexdigest())
    assert str(info.value) == (
        "S3 endpoint http://127.0.0.1:9 (bucket 'bucket'): HEAD s3://bucket/pre/fix/a.bin "
        "refused: the secret key is wrong (credentials from env); check AWS_PROFILE or "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    assert SECRET not in str(info.value)


def test_other_server_errors_are_one_line(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stub = stubbed
    stub.add_client_error("get_object", "InternalError", "We encountered an internal error",
                          http_status_code=500)
    with pytest.raises(StoreError) as info:
        store.get_bytes("release.json")
    assert str(info.value) == (
        "S3 endpoint http://127.0.0.1:9 (bucket 'bucket'): GET "
        "s3://bucket/pre/fix/release.json failed: InternalError: We encountered an internal "
        "error")


def test_put_file_unchecked_sends_without_a_head(
        stubbed: tuple[S3Store, Stubber], tmp_path: Path) -> None:
    store, stub = stubbed
    path = tmp_path / "hello.bin"
    path.write_bytes(b"fw2")
    sha = hashlib.sha256(b"fw2").hexdigest()
    stub.add_response("put_object", {}, {
        "Bucket": "bucket", "Key": "pre/fix/t/hello.bin", "Body": BodyOf(b"fw2"),
        "ContentType": "application/octet-stream", "Metadata": {"sha256": sha},
        "ChecksumSHA256": ANY})
    assert store.put_files([("t/hello.bin", path, sha)], overwrite={"t/hello.bin"}) == [True]


def test_put_bytes_unchecked_sends_without_a_head(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stub = stubbed
    stub.add_response("put_object", {}, {
        "Bucket": "bucket", "Key": "pre/fix/release.json", "Body": b"{}",
        "ContentType": "application/json", "Metadata": ANY, "ChecksumSHA256": ANY})
    assert store.put_bytes("release.json", b"{}", check=False)


# -- the client our configuration builds, answered by a fake S3 ----------------------------


@dataclass(frozen=True)
class Sent:
    method: str
    key: str
    """The object key under the bucket ("" for the bucket itself)."""
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Lower-case names."""
    body: bytes


class Raw:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def _md5(data: bytes) -> Any:
    return hashlib.md5(data, usedforsecurity=False)


def xml(tag: str, **fields: str) -> bytes:
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return f'<?xml version="1.0" encoding="UTF-8"?><{tag}>{inner}</{tag}>'.encode()


class FakeS3:
    """Answers every request of one client at ``before-send`` (the request is signed and
    complete, headers and body, but no socket is opened), keeping objects in a dict.

    ``gate`` runs in the requesting thread before the answer; ``refuse`` maps a key to
    the error code its writes get (403).
    """

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.bucket_exists = True
        self.objects: dict[str, str] = {}  # key -> x-amz-meta-sha256
        self.sent: list[Sent] = []
        self.in_flight = 0
        self.gate: Callable[[Sent], None] | None = None
        self.refuse: dict[str, str] = {}
        self._uploads: dict[str, str] = {}  # upload id -> metadata sha256
        self._parts: dict[str, dict[int, tuple[str, bytes]]] = {}  # -> (checksum, md5)
        self._lock = threading.Lock()

    def attach(self, store: S3Store) -> None:
        events: Any = store.client.meta.events  # the stubs expect handlers to return None
        events.register_first("before-send.s3", self.answer)

    def answer(self, request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse, HTTPHeaders

        url = urlsplit(request.url)
        body = request.body
        data = body.read() if hasattr(body, "read") else body or b""
        sent = Sent(request.method,
                    unquote(url.path).lstrip("/").partition("/")[2],
                    parse_qs(url.query, keep_blank_values=True),
                    {k.lower(): v.decode() if isinstance(v, bytes) else v
                     for k, v in request.headers.items()},
                    data.encode() if isinstance(data, str) else data)
        with self._lock:
            self.sent.append(sent)
            self.in_flight += 1
        try:
            if self.gate is not None:
                self.gate(sent)
            status, headers, payload = self.respond(sent)
        finally:
            with self._lock:
                self.in_flight -= 1
        return AWSResponse(request.url, status, HTTPHeaders.from_dict(headers), Raw(payload))

    def respond(self, r: Sent) -> tuple[int, dict[str, str], bytes]:  # noqa: PLR0911
        if not r.key:
            if r.method == "PUT":  # CreateBucket
                self.bucket_exists = True
                return 200, {}, b""
            return 400, {}, xml("Error", Code="NotImplemented")
        if not self.bucket_exists:
            return 404, {}, xml("Error", Code="NoSuchBucket", Message="no bucket")
        if r.key in self.refuse and r.method in ("PUT", "POST"):
            return 403, {}, xml("Error", Code=self.refuse[r.key], Message="refused")
        meta = r.headers.get("x-amz-meta-sha256", "")
        if r.method == "HEAD":
            if r.key not in self.objects:
                return 404, {}, b""
            return 200, {"x-amz-meta-sha256": self.objects[r.key], "ETag": '"head"'}, b""
        if r.method == "GET":
            return 404, {}, xml("Error", Code="NoSuchKey", Message="no key")
        if r.method == "POST" and "uploads" in r.query:
            upload_id = f"u{len(self._uploads)}"
            self._uploads[upload_id] = meta
            self._parts[upload_id] = {}
            return 200, {}, xml("InitiateMultipartUploadResult", Bucket=self.bucket,
                                Key=r.key, UploadId=upload_id)
        if r.method == "PUT" and "partNumber" in r.query:
            checksum = r.headers["x-amz-checksum-sha256"]
            part = int(r.query["partNumber"][0])
            self._parts[r.query["uploadId"][0]][part] = (checksum, _md5(r.body).digest())
            return 200, {"ETag": f'"{_md5(r.body).hexdigest()}"',
                         "x-amz-checksum-sha256": checksum}, b""
        if r.method == "POST" and "uploadId" in r.query:
            upload_id = r.query["uploadId"][0]
            self.objects[r.key] = self._uploads[upload_id]
            parts = [self._parts[upload_id][n] for n in sorted(self._parts[upload_id])]
            composite = base64.b64encode(hashlib.sha256(
                b"".join(base64.b64decode(c) for c, _ in parts)).digest()).decode()
            etag = _md5(b"".join(m for _, m in parts)).hexdigest()
            return 200, {}, xml("CompleteMultipartUploadResult", Bucket=self.bucket,
                                Key=r.key, ETag=f'"{etag}-{len(parts)}"',
                                ChecksumSHA256=f"{composite}-{len(parts)}")
        if r.method == "PUT":
            self.objects[r.key] = meta
            headers = {"ETag": f'"{_md5(r.body).hexdigest()}"'}
            if "x-amz-checksum-sha256" in r.headers:
                headers["x-amz-checksum-sha256"] = r.headers["x-amz-checksum-sha256"]
            return 200, headers, b""
        return 400, {}, xml("Error", Code="NotImplemented")

    def of(self, method: str) -> list[Sent]:
        with self._lock:
            return [r for r in self.sent if r.method == method]


def env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "AKUNIT", "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_CONFIG_FILE": os.devnull,
                        "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():
        monkeypatch.setenv(name, value)


def configured(bucket: str, *, create_bucket: bool = False) -> S3Store:
    return S3Store.from_config(StoreConfig(url=f"s3://{bucket}/p",
                                           endpoint_url="http://127.0.0.1:9",
                                           create_bucket=create_bucket))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> tuple[S3Store, FakeS3]:
    """The run's store (our client configuration), answered by a fake S3."""
    env_credentials(monkeypatch)
    store = configured("unit-fake")
    server = FakeS3("unit-fake")
    server.attach(store)
    return store, server


def files(tmp_path: Path, count: int, prefix: str = "t/") -> list[tuple[str, Path, str]]:
    out = []
    for i in range(count):
        data = f"object {prefix}{i}\n".encode() * (i + 1)
        path = tmp_path / f"{prefix.strip('/')}-{i}.bin"
        path.write_bytes(data)
        out.append((f"{prefix}{i}.bin", path, hashlib.sha256(data).hexdigest()))
    return out


def meeting(count: int, method: str) -> tuple[Callable[[Sent], None], threading.Barrier]:
    """A gate that holds each ``method`` request until ``count`` of them are in flight at
    once (3 s at most: requests sent one after another break the barrier instead)."""
    barrier = threading.Barrier(count, timeout=3)

    def gate(sent: Sent) -> None:
        if sent.method == method:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()

    return gate, barrier


def test_a_put_carries_our_sha256_and_metadata_signed_and_never_the_secret(
        fake: tuple[S3Store, FakeS3], tmp_path: Path) -> None:
    store, server = fake
    [(key, path, sha)] = files(tmp_path, 1)
    assert store.put_files([(key, path, sha)], overwrite={key}) == [True]
    [put] = server.of("PUT")
    assert put.body == path.read_bytes()
    # the server refuses the object unless its bytes hash to our (the receipt's) SHA-256
    assert put.headers["x-amz-checksum-sha256"] == base64.b64encode(bytes.fromhex(sha)).decode()
    assert put.headers["x-amz-meta-sha256"] == sha
    assert put.headers["content-type"] == "application/octet-stream"
    signed = put.headers["authorization"].split("SignedHeaders=", 1)[1].split(",", 1)[0]
    assert {"x-amz-checksum-sha256", "x-amz-meta-sha256"} <= set(signed.split(";"))
    assert put.headers["user-agent"].startswith("esp32tasks/")
    assert len(put.headers["user-agent"]) < 40
    assert SECRET not in str(put.headers)


def test_a_body_without_a_signed_checksum_keeps_its_payload_hash(
        fake: tuple[S3Store, FakeS3]) -> None:
    store, server = fake
    store._create_bucket()
    [create] = server.of("PUT")
    assert create.headers["x-amz-content-sha256"] != "UNSIGNED-PAYLOAD"
    assert len(create.headers["x-amz-content-sha256"]) == 64


def test_our_handlers_are_on_the_clients_documented_events_only(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """botocore's requests as botocore makes them, but for the ``Expect: 100-continue`` wait:
    we configure the client with :class:`botocore.config.Config`, register our handlers
    (the Expect one, deadlines, proofs) on documented events, and unregister nothing of
    botocore's; and the one non-public step, the pools' connection class, took."""
    from botocore.hooks import HierarchicalEmitter

    calls: list[tuple[str, str, object]] = []
    for name in ("register", "register_first", "register_last", "unregister"):
        original = getattr(HierarchicalEmitter, name)

        def spy(self: Any, event_name: str, handler: Any = None, *args: Any,
                _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            calls.append((_name, event_name, handler))
            return _original(self, event_name, handler, *args, **kwargs)

        monkeypatch.setattr(HierarchicalEmitter, name, spy)
    env_credentials(monkeypatch)
    store = configured("unit-handlers")
    server = FakeS3("unit-handlers")
    server.attach(store)
    big = tmp_path / "big.elf"
    big.write_bytes(b"\0" * MULTIPART_THRESHOLD)
    objects = [*files(tmp_path, 3), ("big.elf", big, hashlib.sha256(big.read_bytes()).hexdigest())]
    assert store.put_files(objects) == [True] * 4
    assert store.put_bytes("release.json", b"{}")

    ours = [(how, event) for how, event, handler in calls
            if getattr(handler, "__module__", "").startswith("esp32tasks")]
    assert ours == [("register", "before-send.s3.PutObject"),
                    ("register", "before-send.s3.UploadPart"),
                    ("register", "before-send.s3"),
                    ("register", "after-call.s3"),
                    ("register", "after-call.s3"),
                    ("register", "after-call-error.s3"),
                    ("register", "before-parameter-build.s3")]
    pools = cast(Any, store.client)._endpoint.http_session._pool_classes_by_scheme
    assert {scheme: pool.ConnectionCls.__module__ for scheme, pool in pools.items()} == {
        "http": "esp32tasks.store.s3", "https": "esp32tasks.store.s3"}
    assert [(how, event) for how, event, _ in calls if how == "unregister"] == []
    # botocore's own headers are still there (we no longer strip them); the body is not
    # held back for a 100 Continue
    for put in server.of("PUT"):
        assert put.headers["amz-sdk-invocation-id"]
        assert "expect" not in put.headers


def test_one_transfer_manager_serves_every_put_files_of_the_run(
        fake: tuple[S3Store, FakeS3], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, server = fake
    from boto3.s3.transfer import create_transfer_manager as original

    made: list[object] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(manager := original(*args, **kwargs))
        return manager

    monkeypatch.setattr(s3_module, "create_transfer_manager", counting)
    big = tmp_path / "big.elf"
    big.write_bytes(os.urandom(MULTIPART_THRESHOLD + 1))
    big_sha = hashlib.sha256(big.read_bytes()).hexdigest()
    for prefix in ("a/", "b/", "c/"):  # three targets, each several objects
        assert all(store.put_files(files(tmp_path, 4, prefix)))
    assert store.put_file("big.elf", big, big_sha)
    assert store.put_file("one.bin", *files(tmp_path, 1, "one/")[0][1:])
    assert S3Store.from_config(StoreConfig(url="s3://unit-fake/p",
                                           endpoint_url="http://127.0.0.1:9")) is store
    assert len(made) == 1
    assert made[0] is store.transfer_manager
    assert len(server.of("POST")) == 2  # the big one went multipart, through it too


def test_a_reset_shuts_the_runs_transfer_manager_down(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_credentials(monkeypatch)
    store = configured("unit-reset")
    FakeS3("unit-reset").attach(store)
    assert all(store.put_files(files(tmp_path, 3)))
    manager = store.transfer_manager
    threads = {t for t in threading.enumerate() if t.name.startswith("s3-head")}
    assert threads  # the HEADs ran several at a time
    del store
    runcache.reset()  # what the tasks session does when a run starts
    gc.collect()
    with pytest.raises(RuntimeError, match="shutdown"):
        manager.upload(io.BytesIO(b"x"), "unit-reset", "late")
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()


def test_the_objects_of_one_put_files_are_in_flight_together(
        fake: tuple[S3Store, FakeS3], tmp_path: Path) -> None:
    store, server = fake
    server.gate, barrier = meeting(5, "PUT")
    objects = files(tmp_path, 5)
    started = time.monotonic()
    assert store.put_files(objects, overwrite={k for k, _, _ in objects}) == [True] * 5
    assert not barrier.broken, "the PUTs were not all in flight at once"
    assert time.monotonic() - started < 3
    assert server.of("HEAD") == []
    assert sorted(r.key for r in server.of("PUT")) == sorted(f"p/{k}" for k, _, _ in objects)


def test_the_heads_of_one_put_files_are_in_flight_together(
        fake: tuple[S3Store, FakeS3], tmp_path: Path) -> None:
    store, server = fake
    objects = files(tmp_path, 5)
    server.objects.update({f"p/{k}": sha for k, _, sha in objects[:3]})  # 3 already there
    server.gate, barrier = meeting(5, "HEAD")
    assert store.put_files(objects) == [False, False, False, True, True]
    assert not barrier.broken, "the HEADs were not all in flight at once"
    assert sorted(r.key for r in server.of("PUT")) == ["p/t/3.bin", "p/t/4.bin"]


def test_only_keys_outside_overwrite_are_asked_first(
        fake: tuple[S3Store, FakeS3], tmp_path: Path) -> None:
    store, server = fake
    objects = files(tmp_path, 4)
    server.objects.update({f"p/{k}": sha for k, _, sha in objects})
    assert store.put_files(objects, overwrite={"t/0.bin", "t/1.bin"}) == \
        [True, True, False, False]
    assert sorted(r.key for r in server.of("HEAD")) == ["p/t/2.bin", "p/t/3.bin"]
    assert sorted(r.key for r in server.of("PUT")) == ["p/t/0.bin", "p/t/1.bin"]


def test_the_first_error_wins_and_nothing_is_left_running(
        fake: tuple[S3Store, FakeS3], tmp_path: Path) -> None:
    store, server = fake
    objects = files(tmp_path, 6)

    def slow(sent: Sent) -> None:
        if sent.method == "PUT" and sent.key != "p/t/0.bin":
            time.sleep(0.3)

    server.gate = slow
    server.refuse["p/t/0.bin"] = "AccessDenied"
    with pytest.raises(StoreAuthError) as info:
        store.put_files(objects, overwrite={k for k, _, _ in objects})
    assert str(info.value).startswith(
        "S3 endpoint http://127.0.0.1:9 (bucket 'unit-fake'): PUT s3://unit-fake/p/t/0.bin "
        "refused: these credentials may not do this")
    assert server.in_flight == 0


def test_a_large_file_goes_multipart_with_a_sha256_per_part(
        fake: tuple[S3Store, FakeS3], tmp_path: Path) -> None:
    store, server = fake
    data = os.urandom(MULTIPART_THRESHOLD + MULTIPART_CHUNKSIZE // 2)
    path = tmp_path / "big.elf"
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    assert store.put_file("big.elf", path, sha)
    [create, complete] = server.of("POST")
    assert create.headers["x-amz-checksum-algorithm"] == "SHA256"
    assert create.headers["x-amz-meta-sha256"] == sha
    assert create.headers["content-type"] == "application/x-elf"
    parts = sorted(server.of("PUT"), key=lambda r: int(r.query["partNumber"][0]))
    assert [len(r.body) for r in parts] == [MULTIPART_CHUNKSIZE, MULTIPART_CHUNKSIZE,
                                           MULTIPART_CHUNKSIZE // 2]
    assert b"".join(r.body for r in parts) == data
    for part in parts:
        assert part.headers["x-amz-checksum-sha256"] == \
            base64.b64encode(hashlib.sha256(part.body).digest()).decode()
    assert complete.body.count(b"<ChecksumSHA256>") == 3
    assert server.objects["p/big.elf"] == sha


def test_create_bucket_creates_it_once_for_a_put_files(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_credentials(monkeypatch)
    store = configured("unit-create", create_bucket=True)
    server = FakeS3("unit-create")
    server.bucket_exists = False
    server.attach(store)
    objects = files(tmp_path, 3)
    assert store.put_files(objects) == [True] * 3
    assert [r.method for r in server.sent if r.key == ""] == ["PUT"]  # one CreateBucket
    assert sorted(server.objects) == sorted(f"p/{k}" for k, _, _ in objects)
    assert len(server.of("PUT")) == 3 + 1 + 3  # refused, CreateBucket, sent again


def _answer_puts(server: FakeS3, headers: Callable[[Sent], dict[str, str]]) -> None:
    """PUTs of whole objects get these headers (and nothing else); the rest as S3 would."""
    respond = server.respond

    def answer(r: Sent) -> tuple[int, dict[str, str], bytes]:
        if r.method == "PUT" and r.key and "partNumber" not in r.query:
            return 200, headers(r), b""
        return respond(r)

    server.respond = answer  # type: ignore[method-assign]


def test_an_upload_counts_only_when_the_server_confirms_its_checksum(
        fake: tuple[S3Store, FakeS3], tmp_path: Path) -> None:
    store, server = fake
    _answer_puts(server, lambda r: {"ETag": '"0123"', "x-amz-checksum-sha256":
                                    base64.b64encode(hashlib.sha256(b"other").digest()).decode()})
    with pytest.raises(StoreError) as caught:
        store.put_files(files(tmp_path, 1))
    assert str(caught.value) == (
        "S3 endpoint http://127.0.0.1:9 (bucket 'unit-fake'): PUT of s3://unit-fake/p/t/0.bin "
        "was answered with checksum "
        f"{base64.b64encode(hashlib.sha256(b'other').digest()).decode()} and ETag 0123, not "
        "those of the bytes sent; the object holds something else: nothing was recorded as "
        "uploaded, run `doit release` again, and if it recurs, ask the server's operators")


def test_without_a_checksum_the_etag_proves_a_single_put(
        fake: tuple[S3Store, FakeS3], tmp_path: Path) -> None:
    store, server = fake
    _answer_puts(server, lambda r: {"ETag": f'"{_md5(r.body).hexdigest()}"'})
    assert store.put_files(files(tmp_path, 2)) == [True, True]
    _answer_puts(server, lambda r: {"ETag": '"not-the-md5"'})
    with pytest.raises(StoreError, match="not those of the bytes sent"):
        store.put_bytes("release.json", b"{}")


def test_an_answer_without_checksum_or_etag_is_not_s3(
        fake: tuple[S3Store, FakeS3], tmp_path: Path) -> None:
    store, server = fake
    _answer_puts(server, lambda r: {})
    with pytest.raises(StoreError) as caught:
        store.put_files(files(tmp_path, 1))
    assert str(caught.value) == (
        "S3 endpoint http://127.0.0.1:9 (bucket 'unit-fake') answered PUT "
        "s3://unit-fake/p/t/0.bin with 200 without an ETag: this is not an S3 endpoint; "
        "nothing was recorded as uploaded; check store.endpoint_url (the S3 API's address, "
        "not a web page or a proxy's login)")


def test_a_multipart_upload_counts_when_its_composite_checksum_is_ours(
        fake: tuple[S3Store, FakeS3], tmp_path: Path) -> None:
    store, server = fake
    big = tmp_path / "big.elf"
    big.write_bytes(os.urandom(1024) * (MULTIPART_THRESHOLD // 1024 + 1))
    sha = hashlib.sha256(big.read_bytes()).hexdigest()
    assert store.put_files([("big.elf", big, sha)]) == [True]
    respond = server.respond

    def lie(r: Sent) -> tuple[int, dict[str, str], bytes]:
        status, headers, payload = respond(r)
        if r.method == "POST" and "uploadId" in r.query:
            payload = payload.replace(b"<ChecksumSHA256>", b"<ChecksumSHA256>AAAA")
        return status, headers, payload

    server.respond = lie  # type: ignore[method-assign]
    with pytest.raises(StoreError, match=r"upload of s3://unit-fake/p/big.elf was answered "
                                         r"with checksum AAAA"):
        store.put_files([("big.elf", big, sha)], overwrite={"big.elf"})


def test_a_store_dropped_in_a_worker_thread_never_joins_that_thread() -> None:
    """The last reference to a store may go in one of its manager's threads: shutting
    the manager down there would join that very thread (the process hung at exit)."""
    from esp32tasks.store.s3 import _shut_down

    ran = threading.Event()
    seen: list[str] = []

    class Manager:
        def shutdown(self, cancel: bool) -> None:
            seen.append(threading.current_thread().name)
            ran.set()

    worker = threading.Thread(target=_shut_down, args=(Manager(),), name="s3transfer-worker")
    worker.start()
    worker.join(5)
    assert ran.wait(5)
    assert seen == ["s3-manager-shutdown"]
    _shut_down(Manager())  # type: ignore[arg-type]  # from the main thread: at once
    assert seen == ["s3-manager-shutdown", "MainThread"]
