"""Retry, timeout and auth policy of the oras-py transport, with a fake session (no sockets)."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from esp32tasks.errors import RegistryAuthError, RegistryError, RegistryUnreachable
from esp32tasks.registry.credentials import Credentials
from esp32tasks.registry.http import (
    CONNECT_BACKOFF,
    RETRY_BUDGET,
    STATUS_BACKOFF,
    Transport,
)

URL = "http://registry.test:5000/v2/cloud-iot/hello/manifests/t"
CREDS = Credentials("abc", "pw", "the test's variables")
BASIC = CREDS.basic()


def response(status: int, reason: str = "", **headers: str) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r.reason = reason
    r.headers.update(headers)
    r._content = b"{}"
    r.raw = io.BytesIO(b"{}")
    return r


class FakeSession:
    """Answers from a script: a status code, or an exception to raise."""

    def __init__(self, script: list[int | Exception | requests.Response]) -> None:
        self.script: Iterator[int | Exception | requests.Response] = iter(script)
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.calls.append({"method": method, "url": url, **kwargs})
        step = next(self.script)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, requests.Response):
            return step
        return response(step, "Service Unavailable" if step == 503 else "")


def transport(script: list[int | Exception | requests.Response], *,
              credentials: Credentials | None = CREDS, timeout: float = 7.0,
              insecure: bool = True, host: str = "registry.test:5000",
              ) -> tuple[Transport, FakeSession, list[float]]:
    sleeps: list[float] = []
    t = Transport(host=host, insecure=insecure, verify=True, timeout=timeout,
                  credentials=credentials, what_to_check="the registry",
                  sleep=sleeps.append)
    fake = FakeSession(script)
    t.session = fake
    return t, fake, sleeps


def test_credentials_go_with_the_first_request_and_timeout_is_set() -> None:
    t, fake, sleeps = transport([200])
    assert t.do_request(URL, "HEAD").status_code == 200
    [call] = fake.calls
    assert call["headers"]["Authorization"] == BASIC
    assert call["timeout"] == (7.0, 7.0)
    assert sleeps == []


def test_no_credentials_no_header() -> None:
    t, fake, _ = transport([200], credentials=None)
    t.do_request(URL, "GET")
    assert "Authorization" not in fake.calls[0]["headers"]


def test_redirects_are_ours_to_follow() -> None:
    t, fake, _ = transport([response(307, Location="/v2/x/blobs/elsewhere"), 200])
    assert t.do_request(URL, "GET").status_code == 200
    assert [c["url"] for c in fake.calls] == [URL, "http://registry.test:5000/v2/x/blobs/elsewhere"]
    assert all(c["allow_redirects"] is False for c in fake.calls)
    assert fake.calls[1]["headers"]["Authorization"] == BASIC  # the same origin


@pytest.mark.parametrize("elsewhere", [
    "http://storage.test/blob?sig=1",       # another host
    "http://registry.test:5001/v2/x",       # another port
    "http://REGISTRY.test.evil/v2/x",       # a look-alike
])
def test_credentials_never_follow_to_another_origin(elsewhere: str) -> None:
    t, fake, _ = transport([response(302, Location=elsewhere), 200])
    t.do_request(URL, "GET")
    assert fake.calls[0]["headers"]["Authorization"] == BASIC
    assert fake.calls[1]["url"] == elsewhere
    assert "Authorization" not in fake.calls[1]["headers"]


def test_an_upload_location_elsewhere_gets_no_credentials() -> None:
    """oras-py PUTs to the POST's Location through do_request: the URL decides."""
    t, fake, _ = transport([201])
    t.do_request("http://capture.test:9/upload/abc?_state=x&digest=sha256:0", "PUT",
                 data=b"blob")
    assert "Authorization" not in fake.calls[0]["headers"]


def test_the_default_port_is_the_same_origin() -> None:
    t, fake, _ = transport([200], insecure=False, host="registry.test")
    t.do_request("https://registry.test:443/v2/", "GET")
    assert fake.calls[0]["headers"]["Authorization"] == BASIC


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_step_down_from_https_is_refused_before_sending(status: int) -> None:
    t, fake, _ = transport([response(status, Location="http://registry.test/v2/x")],
                           insecure=False, host="registry.test")
    with pytest.raises(RegistryError) as info:
        t.do_request("https://registry.test/v2/x/blobs/sha256:0", "GET")
    assert str(info.value) == (
        "registry registry.test sent GET /v2/x to http://registry.test, off HTTPS; refusing "
        "to send anything unencrypted (if that registry is plain HTTP, set [registry] "
        "insecure = true)")
    assert len(fake.calls) == 1  # the plain-HTTP URL was never asked


def test_303_turns_into_a_get_without_the_body() -> None:
    t, fake, _ = transport([response(303, Location="/v2/x/done"), 200])
    t.do_request(URL, "PUT", data=b"body")
    assert (fake.calls[1]["method"], fake.calls[1]["data"]) == ("GET", None)


def test_endless_redirects_end() -> None:
    t, fake, _ = transport([response(302, Location=f"/v2/{i}") for i in range(10)])
    with pytest.raises(RegistryError, match=r"redirected GET /v2/5 more than 5 times"):
        t.do_request(URL, "GET")
    assert len(fake.calls) == 6


def test_a_refusal_elsewhere_blames_elsewhere() -> None:
    t, _, _ = transport([response(307, Location="http://storage.test/b"), 403])
    with pytest.raises(RegistryAuthError) as info:
        t.do_request(URL, "GET")
    assert str(info.value) == (
        "storage.test, where registry registry.test:5000 sent GET /b, answered 403; "
        "esp32tasks sends the registry's credentials to the registry alone: ask its "
        "operators")


def test_503_is_retried_with_backoff_then_succeeds() -> None:
    t, fake, sleeps = transport([503, 502, 201])
    assert t.do_request(URL, "PUT", data=b"x").status_code == 201
    assert len(fake.calls) == 3
    assert sleeps == list(STATUS_BACKOFF[:2])
    assert all(c["data"] == b"x" for c in fake.calls)


def test_persistent_5xx_is_bounded_and_under_30_s() -> None:
    t, fake, sleeps = transport([503] * 10)
    with pytest.raises(RegistryError, match=r"answered 503 Service Unavailable to HEAD "
                       r"/v2/cloud-iot/hello/manifests/t 4 times"):
        t.do_request(URL, "HEAD")
    assert len(fake.calls) == 1 + len(STATUS_BACKOFF)
    assert sleeps == list(STATUS_BACKOFF)
    assert sum(sleeps) < RETRY_BUDGET < 30


def test_retry_after_is_honoured_but_capped() -> None:
    t, _, sleeps = transport([response(429, "Too Many Requests", **{"Retry-After": "600"}),
                              response(429, "Too Many Requests", **{"Retry-After": "0"}), 200])
    assert t.do_request(URL, "GET").status_code == 200
    assert sleeps == [max(STATUS_BACKOFF), 0.0]


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_is_immediate(status: int) -> None:
    t, fake, sleeps = transport([status, 200])
    with pytest.raises(RegistryAuthError, match=r"registry\.test:5000"):
        t.do_request(URL, "HEAD")
    assert len(fake.calls) == 1
    assert sleeps == []


def test_auth_message_never_holds_the_header() -> None:
    t, _, _ = transport([401], credentials=Credentials("secret-user", "secret", "env"))
    with pytest.raises(RegistryAuthError) as info:
        t.do_request(URL, "HEAD")
    assert "c2VjcmV0" not in str(info.value)
    assert "authentication failed for registry registry.test:5000" in str(info.value)


def test_refused_connection_is_retried_briefly_then_one_line() -> None:
    refused = requests.exceptions.ConnectionError("[Errno 111] Connection refused")
    t, fake, sleeps = transport([refused] * 5)
    with pytest.raises(RegistryUnreachable) as info:
        t.do_request(URL, "HEAD")
    assert len(fake.calls) == 1 + len(CONNECT_BACKOFF)
    assert sleeps == list(CONNECT_BACKOFF)
    assert str(info.value).startswith("cannot reach registry registry.test:5000 over http "
                                      "(Connection refused); check the registry")
    assert "\n" not in str(info.value)


def test_timeout_is_not_retried() -> None:
    t, fake, sleeps = transport([requests.exceptions.ReadTimeout("read timed out")])
    with pytest.raises(RegistryUnreachable, match=r"did not answer HEAD "
                       r"/v2/cloud-iot/hello/manifests/t within 7 s"):
        t.do_request(URL, "HEAD")
    assert len(fake.calls) == 1
    assert sleeps == []


def test_tls_failure_points_at_ca_bundle() -> None:
    error = requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
                                         "failed: unable to get local issuer certificate")
    t, _, sleeps = transport([error])
    with pytest.raises(RegistryUnreachable, match=r"\(certificate verify failed\); check "
                       r"\[registry\] ca_bundle"):
        t.do_request(URL, "HEAD")
    assert sleeps == []


def test_upload_session_state_stays_out_of_messages() -> None:
    t, _, _ = transport([500] * 10)
    with pytest.raises(RegistryError) as info:
        t.do_request("http://registry.test:5000/v2/x/blobs/uploads/u?_state=SECRETSTATE"
                     "&digest=sha256%3Aab", "PUT")
    assert "SECRETSTATE" not in str(info.value)


def test_requests_carry_only_what_the_registry_reads_on_one_connection() -> None:
    """A loopback socket (no registry): the exact request heads, and one connection."""
    heads: list[bytes] = []
    accepted: list[int] = []
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        accepted.append(1)
        with conn:
            buffer = b""
            while len(heads) < 2:
                buffer += conn.recv(65536)
                # a head, then its body: they may arrive in one segment or in several
                while b"\r\n\r\n" in buffer:
                    head, _, rest = buffer.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    if len(rest) < length:
                        break  # the body is still on its way
                    buffer = rest[length:]
                    heads.append(head)
                    conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    host = f"127.0.0.1:{server.getsockname()[1]}"
    t = Transport(host=host, insecure=True, verify=True, timeout=5.0,
                  credentials=CREDS, what_to_check="the registry")
    url = f"http://{host}/v2/x/manifests/t"
    t.do_request(url, "PUT", data=b"{}", headers={"Content-Type": "application/json"})
    t.do_request(url, "HEAD", headers={"Accept": "application/json"})
    thread.join(5)
    server.close()
    assert accepted == [1]  # keep-alive: the second request reused the connection
    parsed = [(h.split(b"\r\n")[0], sorted(h.split(b"\r\n")[1:])) for h in heads]
    assert parsed == [
        (b"PUT /v2/x/manifests/t HTTP/1.1",
         sorted([f"Host: {host}".encode(), b"Content-Length: 2", b"User-Agent: esp32tasks",
                 b"Content-Type: application/json", f"Authorization: {BASIC}".encode()])),
        (b"HEAD /v2/x/manifests/t HTTP/1.1",
         sorted([f"Host: {host}".encode(), b"User-Agent: esp32tasks",
                 b"Accept: application/json", f"Authorization: {BASIC}".encode()]))]
