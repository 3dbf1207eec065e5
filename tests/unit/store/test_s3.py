"""S3Store offline: botocore's Stubber answers instead of a server (no socket is opened)."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from esp32tasks.config import StoreConfig
from esp32tasks.errors import StoreAuthError, StoreBucketMissing, StoreError
from esp32tasks.s3store import S3Store, parse_url

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
        "Bucket": "bucket", "Key": "pre/fix/sdkconfig", "Body": b"CONFIG_A=y\n",
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
        "Bucket": "bucket", "Key": "pre/fix/t/hello.bin", "Body": b"fw2",
        "ContentType": "application/octet-stream", "Metadata": {"sha256": sha},
        "ChecksumSHA256": ANY})
    assert store.put_files([("t/hello.bin", path, sha)], overwrite={"t/hello.bin"}) == [True]


def test_put_bytes_unchecked_sends_without_a_head(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stub = stubbed
    stub.add_response("put_object", {}, {
        "Bucket": "bucket", "Key": "pre/fix/release.json", "Body": b"{}",
        "ContentType": "application/json", "Metadata": ANY, "ChecksumSHA256": ANY})
    assert store.put_bytes("release.json", b"{}", check=False)


def sent_headers(monkeypatch: pytest.MonkeyPatch, bucket: str,
                 call: Callable[[S3Store], object]) -> dict[str, str]:
    """The headers our configured client puts on the wire for ``call`` (no socket opened)."""
    from botocore.awsrequest import AWSResponse, HTTPHeaders

    for name, value in {"AWS_ACCESS_KEY_ID": "AKUNIT", "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_CONFIG_FILE": os.devnull,
                        "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():
        monkeypatch.setenv(name, value)
    store = S3Store.from_config(StoreConfig(url=f"s3://{bucket}/p",
                                            endpoint_url="http://127.0.0.1:9"))
    seen: dict[str, str] = {}

    def answer(request: Any, **_: Any) -> AWSResponse:
        seen.update({k: v.decode() if isinstance(v, bytes) else v
                     for k, v in request.headers.items()})

        class Raw:
            def stream(self, **_: Any) -> Iterator[bytes]:
                yield b""

        return AWSResponse(request.url, 200, HTTPHeaders(), Raw())

    events: Any = store.client.meta.events  # the stubs expect handlers to return None
    events.register_first("before-send.s3", answer)
    call(store)
    return seen


def test_a_put_carries_no_telemetry_and_no_second_payload_hash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    headers = sent_headers(monkeypatch, "unit-headers-put",
                           lambda s: s.put_bytes("k.json", b"{}", check=False))
    assert "Expect" not in headers
    assert not {h for h in headers if h.lower().startswith("amz-sdk-")}
    assert headers["User-Agent"].startswith("esp32tasks/")
    assert len(headers["User-Agent"]) < 40
    # the body's integrity is signed through its checksum header, not hashed twice
    assert headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    signed = headers["Authorization"].split("SignedHeaders=", 1)[1].split(",", 1)[0]
    assert "x-amz-checksum-sha256" in signed.split(";")
    assert SECRET not in str(headers)


def test_a_body_without_a_signed_checksum_keeps_its_payload_hash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    headers = sent_headers(monkeypatch, "unit-headers-bucket", lambda s: s._create_bucket())
    assert headers["X-Amz-Content-SHA256"] != "UNSIGNED-PAYLOAD"
    assert len(headers["X-Amz-Content-SHA256"]) == 64
