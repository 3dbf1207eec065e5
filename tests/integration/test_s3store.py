"""S3Store against a real SeaweedFS: bytes, metadata, checksums, skips and every failure."""

from __future__ import annotations

import hashlib
import itertools
import os
import time
from pathlib import Path

import pytest

from esp32tasks.config import StoreConfig
from esp32tasks.errors import StoreAuthError, StoreBucketMissing, StoreUnreachable
from esp32tasks.store.s3 import MULTIPART_CHUNKSIZE, MULTIPART_THRESHOLD, S3Store
from tests.servers.s3 import ADMIN, Credentials, RecordingProxy, Seaweed, SilentServer, free_port

pytestmark = pytest.mark.integration

_names = itertools.count()


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> Credentials:
    """Credentials through boto3's standard chain (the environment), as a user gives them."""
    for name, value in ADMIN.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return ADMIN


def bucket_name() -> str:
    return f"store-{os.getpid()}-{next(_names)}"


def open_s3(endpoint: str, bucket: str, *, prefix: str = "base/dir",
            create_bucket: bool = False) -> S3Store:
    return S3Store.from_config(StoreConfig(url=f"s3://{bucket}/{prefix}",
                                           endpoint_url=endpoint, create_bucket=create_bucket))


@pytest.mark.usefixtures("creds")
def test_put_file_round_trips_with_metadata_and_skips_when_present(
        s3_server: Seaweed, s3_proxy: RecordingProxy, tmp_path: Path) -> None:
    bucket = s3_server.bucket(bucket_name())
    store = open_s3(s3_proxy.endpoint, bucket)
    files = {"hello.bin": os.urandom(70_000), "sdkconfig": b"CONFIG_X=y\n",
             "flasher_args.json": b'{"a": 1}\n', "partitions.csv": b"nvs,data,nvs\n",
             "hello.elf": b"\x7fELF....", "hello.map": b"map\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert store.put_file(f"t/{name}", tmp_path / name, hashlib.sha256(data).hexdigest())

    s3 = s3_server.client()
    types = {}
    for name, data in files.items():
        obj = s3.get_object(Bucket=bucket, Key=f"base/dir/t/{name}")
        assert obj["Body"].read() == data
        assert obj["Metadata"] == {"sha256": hashlib.sha256(data).hexdigest()}
        types[name] = obj["ContentType"]
    assert types == {"hello.bin": "application/octet-stream", "sdkconfig": "text/plain",
                     "flasher_args.json": "application/json", "partitions.csv": "text/csv",
                     "hello.elf": "application/x-elf", "hello.map": "text/plain"}

    # already there: one HEAD each, nothing written
    s3_proxy.clear()
    for name, data in files.items():
        assert not store.put_file(f"t/{name}", tmp_path / name,
                                  hashlib.sha256(data).hexdigest())
    assert [(r.method, r.key) for r in s3_proxy.snapshot()] == \
        [("HEAD", f"base/dir/t/{name}") for name in files]

    # changed: HEAD, then one PUT of that object
    s3_proxy.clear()
    (tmp_path / "sdkconfig").write_bytes(b"CONFIG_X=n\n")
    assert store.put_file("t/sdkconfig", tmp_path / "sdkconfig",
                          hashlib.sha256(b"CONFIG_X=n\n").hexdigest())
    assert [(r.method, r.key) for r in s3_proxy.snapshot()] == \
        [("HEAD", "base/dir/t/sdkconfig"), ("PUT", "base/dir/t/sdkconfig")]
    assert s3.get_object(Bucket=bucket, Key="base/dir/t/sdkconfig")["Body"].read() == \
        b"CONFIG_X=n\n"


@pytest.mark.usefixtures("creds")
def test_large_file_goes_multipart_with_sha256_per_part(
        s3_server: Seaweed, s3_proxy: RecordingProxy, tmp_path: Path) -> None:
    bucket = s3_server.bucket(bucket_name())
    store = open_s3(s3_proxy.endpoint, bucket)
    data = os.urandom(MULTIPART_THRESHOLD + MULTIPART_CHUNKSIZE // 2)
    path = tmp_path / "big.elf"
    path.write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    assert store.put_file("big.elf", path, sha256)

    parts = [r for r in s3_proxy.snapshot() if "partNumber=" in r.query]
    assert len(parts) == 3
    assert all(r.status == 200 for r in s3_proxy.snapshot() if r.method != "HEAD")
    s3 = s3_server.client()
    head = s3.head_object(Bucket=bucket, Key="base/dir/big.elf", ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-3"')  # a multipart object
    assert head["ChecksumSHA256"].endswith("-3")  # composite: a SHA-256 per part, checked
    assert head["Metadata"] == {"sha256": sha256}
    assert head["ContentType"] == "application/x-elf"
    body = s3.get_object(Bucket=bucket, Key="base/dir/big.elf")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == sha256
    s3_proxy.clear()
    assert not store.put_file("big.elf", path, sha256)
    assert [r.method for r in s3_proxy.snapshot()] == ["HEAD"]


@pytest.mark.usefixtures("creds")
def test_bytes_and_missing_objects(s3_server: Seaweed, tmp_path: Path) -> None:
    bucket = s3_server.bucket(bucket_name())
    store = open_s3(s3_server.endpoint, bucket, prefix="")
    assert store.get_bytes("release.json") is None
    assert store.head_sha256("release.json") is None
    assert store.put_bytes("p/release.json", b'{"a": 1}\n')
    assert not store.put_bytes("p/release.json", b'{"a": 1}\n')
    assert store.get_bytes("p/release.json") == b'{"a": 1}\n'
    obj = s3_server.client().get_object(Bucket=bucket, Key="p/release.json")
    assert obj["ContentType"] == "application/json"
    assert store.describe("p/release.json") == f"s3://{bucket}/p/release.json"


@pytest.mark.usefixtures("creds")
def test_a_corrupted_upload_is_refused_by_the_server(s3_server: Seaweed, tmp_path: Path) -> None:
    """The SHA-256 we send is checked by the server: bytes that differ are not stored."""
    from botocore.exceptions import ClientError

    from esp32tasks.errors import StoreError

    bucket = s3_server.bucket(bucket_name())
    store = open_s3(s3_server.endpoint, bucket)
    path = tmp_path / "hello.bin"
    path.write_bytes(b"firmware")
    claimed = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(StoreError, match="changed while being uploaded"):
        store.put_file("hello.bin", path, claimed)  # found before sending
    # past our own check: the PutObject put_files sends through the transfer manager,
    # claiming a SHA-256 its bytes do not have
    with pytest.raises(ClientError) as info:
        store._submit("hello.bin", b"firmware", claimed).result()
    assert info.value.response["Error"]["Code"] == "BadDigest"
    with pytest.raises(StoreError, match="BadDigest"):  # put_bytes' PutObject
        store._put("hello.bin", b"firmware", claimed)
    assert store.head_sha256("hello.bin") is None
    store._submit("hello.bin", b"firmware", hashlib.sha256(b"firmware").hexdigest()).result()
    assert store.head_sha256("hello.bin") == hashlib.sha256(b"firmware").hexdigest()


@pytest.mark.usefixtures("creds")
def test_put_files_asks_only_outside_overwrite_and_sends_only_what_differs(
        s3_server: Seaweed, s3_proxy: RecordingProxy, tmp_path: Path) -> None:
    bucket = s3_server.bucket(bucket_name())
    store = open_s3(s3_proxy.endpoint, bucket)
    objects = []
    for i in range(9):  # a target's worth
        data = os.urandom(1000 * (i + 1))
        (tmp_path / f"{i}.bin").write_bytes(data)
        objects.append((f"t/{i}.bin", tmp_path / f"{i}.bin", hashlib.sha256(data).hexdigest()))
    assert store.put_files(objects[:2]) == [True, True]  # already there: 0 and 1
    s3_proxy.clear()
    overwrite = {"t/7.bin", "t/8.bin"}
    assert store.put_files(objects, overwrite=overwrite) == [False, False] + [True] * 7
    requests = s3_proxy.snapshot()
    assert sorted(r.key for r in requests if r.method == "HEAD") == \
        [f"base/dir/t/{i}.bin" for i in range(7)]
    assert sorted(r.key for r in requests if r.method == "PUT") == \
        [f"base/dir/t/{i}.bin" for i in range(2, 9)]
    assert all(r.status == 200 for r in requests if r.method == "PUT")
    s3 = s3_server.client()
    for key, path, sha in objects:
        obj = s3.get_object(Bucket=bucket, Key=f"base/dir/{key}")
        assert obj["Body"].read() == path.read_bytes()
        assert obj["Metadata"] == {"sha256": sha}


@pytest.mark.usefixtures("creds")
def test_missing_bucket_is_named_and_create_bucket_creates_it(
        s3_server: Seaweed, tmp_path: Path) -> None:
    name = bucket_name()
    path = tmp_path / "a.bin"
    path.write_bytes(b"a")
    sha = hashlib.sha256(b"a").hexdigest()
    with pytest.raises(StoreBucketMissing) as info:
        open_s3(s3_server.endpoint, name).put_file("a.bin", path, sha)
    assert str(info.value) == (
        f"S3 endpoint {s3_server.endpoint} (bucket '{name}'): the bucket does not exist; "
        "create it, fix store.url, or set `create_bucket = true` in [store]")
    with pytest.raises(StoreBucketMissing, match=name):
        open_s3(s3_server.endpoint, name).get_bytes("release.json")

    store = open_s3(s3_server.endpoint, name, create_bucket=True)
    assert store.get_bytes("release.json") is None
    assert store.put_file("a.bin", path, sha)
    s3 = s3_server.client()
    assert s3.get_object(Bucket=name, Key="base/dir/a.bin")["Body"].read() == b"a"


@pytest.mark.parametrize("case", [
    (ADMIN.access_key, "not-the-secret-0d9f8e7c", "the secret key is wrong"),
    ("unknown-key-id", "not-the-secret-0d9f8e7c", "the access key ID is unknown"),
], ids=["wrong-secret", "unknown-key"])
def test_wrong_credentials_are_refused_without_showing_the_secret(
        s3_server: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        case: tuple[str, str, str]) -> None:
    key, secret, reason = case
    for name, value in Credentials(key, secret).env.items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.bucket(bucket_name())
    path = tmp_path / "a.bin"
    path.write_bytes(b"a")
    store = open_s3(s3_server.endpoint, bucket, prefix=key)
    for call in (lambda: store.put_file("a.bin", path, hashlib.sha256(b"a").hexdigest()),
                 lambda: store.get_bytes("release.json")):
        with pytest.raises(StoreAuthError) as info:
            call()
        message = str(info.value)
        assert reason in message
        assert f"S3 endpoint {s3_server.endpoint} (bucket '{bucket}')" in message
        assert "credentials from env" in message
        assert secret not in message
        assert "\n" not in message


@pytest.mark.usefixtures("creds")
def test_endpoint_down_fails_fast_in_one_line(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = open_s3(endpoint, "some-bucket")
    started = time.monotonic()
    with pytest.raises(StoreUnreachable) as info:
        store.get_bytes("release.json")
    assert time.monotonic() - started < 15
    assert str(info.value).startswith(
        f"S3 endpoint {endpoint} (bucket 'some-bucket'): cannot connect after 2 attempts")
    assert "\n" not in str(info.value)


@pytest.mark.usefixtures("creds")
def test_silent_server_fails_within_15_seconds(silent_server: SilentServer,
                                               tmp_path: Path) -> None:
    store = open_s3(silent_server.endpoint, "some-bucket")
    path = tmp_path / "a.bin"
    path.write_bytes(b"a")
    started = time.monotonic()
    with pytest.raises(StoreUnreachable) as info:
        store.put_file("a.bin", path, hashlib.sha256(b"a").hexdigest())
    elapsed = time.monotonic() - started
    assert elapsed < 15
    assert str(info.value) == (
        f"S3 endpoint {silent_server.endpoint} (bucket 'some-bucket'): no answer within 5 s, "
        "2 attempts; the server accepts connections but does not respond")


@pytest.mark.usefixtures("creds")
def test_a_killed_multipart_upload_of_our_key_is_aborted_by_the_next_upload(
        s3_server: Seaweed, tmp_path: Path) -> None:
    """What a SIGKILLed run leaves: an upload begun, parts stored, never completed. The
    next upload of that key aborts it; another key's, and a newer one, are left alone."""
    bucket = s3_server.bucket(bucket_name())
    s3 = s3_server.client()
    abandoned = {}
    for key in ("base/dir/t/big.elf", "base/dir/t/other.elf"):
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1,
                       Body=b"\0" * 1024)
        abandoned[key] = upload
    store = open_s3(s3_server.endpoint, bucket)
    big = tmp_path / "big.elf"
    big.write_bytes(os.urandom(MULTIPART_THRESHOLD + 1024))
    sha = hashlib.sha256(big.read_bytes()).hexdigest()

    assert store.put_files([("t/big.elf", big, sha)]) == [True]

    left = {(u["Key"], u["UploadId"])
            for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    assert left == {("base/dir/t/other.elf", abandoned["base/dir/t/other.elf"])}
    assert s3.head_object(Bucket=bucket, Key="base/dir/t/big.elf")["Metadata"] == {
        "sha256": sha}
