"""The S3 store against loopback servers that answer the way broken ones do: a drip is
"too slow" within the deadline, an HTML page is "not an S3 endpoint", never a verdict."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from esp32tasks.config import StoreConfig
from esp32tasks.errors import StoreError, StoreUnreachable
from esp32tasks.store import s3
from tests.support.loopback import Answer, Server, drip, html, serve

__all__ = ["serve"]  # a fixture, used by name


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "AKUNIT", "AWS_SECRET_ACCESS_KEY": "unit-secret",
                        "AWS_CONFIG_FILE": os.devnull,
                        "AWS_SHARED_CREDENTIALS_FILE": os.devnull}.items():
        monkeypatch.setenv(name, value)


def store_at(server: Server) -> s3.S3Store:
    return s3.S3Store.from_config(StoreConfig(url="s3://bucket/p",
                                              endpoint_url=f"http://{server.host}"))


def test_a_dripping_answer_is_too_slow_within_the_deadline(
        serve: Callable[[Answer], Server], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3, "READ_TIMEOUT", 0.5)  # the deadline's base: 1 s an attempt
    server = serve(drip)
    store = store_at(server)
    started = time.monotonic()
    with pytest.raises(StoreUnreachable) as caught:
        store.head_sha256("a.bin")
    elapsed = time.monotonic() - started
    assert str(caught.value) == (
        f"S3 endpoint http://{server.host} (bucket 'bucket'): too slow: HEAD "
        "s3://bucket/p/a.bin did not finish within 1 s (at under 64 KiB/s, 2 attempts); the "
        "server or the network to it is overloaded: try again later")
    assert elapsed < 2 * 1 + 1 + 2, elapsed  # two attempts, botocore's backoff, slack
    assert server.closed.wait(5)


@pytest.mark.parametrize("operation", ["HEAD", "GET"])
def test_an_html_page_is_not_an_s3_endpoint(serve: Callable[[Answer], Server],
                                            operation: str) -> None:
    server = serve(html)
    store = store_at(server)
    ask = store.head_sha256 if operation == "HEAD" else store.get_bytes
    with pytest.raises(StoreError) as caught:
        ask("release.json")
    assert str(caught.value) == (
        f"S3 endpoint http://{server.host} (bucket 'bucket') answered {operation} "
        "s3://bucket/p/release.json with 200 and an HTML page: this is not an S3 endpoint; "
        "nothing was recorded as uploaded; check store.endpoint_url (the S3 API's address, "
        "not a web page or a proxy's login)")
