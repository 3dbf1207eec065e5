"""The fault proxy itself, against a small loopback upstream: each mode does what it says,
and plain forwarding changes nothing (so a fault test's failure is the fault's)."""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.servers.faults import HTML, CaptureServer, Fault, FaultProxy

pytestmark = pytest.mark.integration

BIG = bytes(range(256)) * 4096  # 1 MiB


class Upstream(BaseHTTPRequestHandler):
    """Echoes what it got: its Host, its body's SHA-256 and length, in headers and body."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def handle_request(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        answer = BIG if self.path == "/big" else b"hello"
        self.send_response_only(201 if self.command == "PUT" else 200)
        self.send_header("X-Got-Host", self.headers.get("Host", ""))
        self.send_header("X-Got-Sha256", hashlib.sha256(body).hexdigest())
        self.send_header("X-Got-Custom", self.headers.get("X-Custom", ""))
        self.send_header("Docker-Content-Digest", "sha256:" + "a" * 64)
        self.send_header("Location", f"http://{self.headers.get('Host')}/v2/uploads/1?state=x")
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(b"5\r\nhello\r\n0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer)

    do_GET = do_HEAD = do_PUT = do_POST = handle_request


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(upstream: str) -> Iterator[FaultProxy]:
    with FaultProxy(upstream) as made:
        yield made


def ask(proxy: FaultProxy, method: str = "GET", path: str = "/", body: object = None, *,
        headers: dict[str, str] | None = None, timeout: float = 5
        ) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    chunked = not isinstance(body, bytes | None)  # an iterable: sent chunked
    connection.request(method, path, body=body, headers=headers or {},  # type: ignore[arg-type]
                       encode_chunked=chunked)
    response = connection.getresponse()
    return response, response.read()


def test_forwarding_keeps_host_headers_and_bodies(proxy: FaultProxy) -> None:
    response, body = ask(proxy, "PUT", "/x?a=1", BIG, headers={"X-Custom": "kept"})
    assert response.status == 201
    assert response.getheader("X-Got-Host") == proxy.host  # Host as the client sent it
    assert response.getheader("X-Got-Sha256") == hashlib.sha256(BIG).hexdigest()
    assert response.getheader("X-Got-Custom") == "kept"
    assert body == b"hello"
    assert ask(proxy, "GET", "/big")[1] == BIG
    assert ask(proxy, "GET", "/chunked")[1] == b"hello"
    response, body = ask(proxy, "HEAD", "/big")
    assert (response.getheader("Content-Length"), body) == (str(len(BIG)), b"")
    response, _ = ask(proxy, "POST", "/", iter([b"abc", b"def"]))
    assert response.getheader("X-Got-Sha256") == hashlib.sha256(b"abcdef").hexdigest()
    seen = proxy.requests()
    assert [(s.method, s.path, s.status) for s in seen][:2] == [("PUT", "/x?a=1", 201),
                                                                ("GET", "/big", 200)]
    assert seen[0].headers["x-custom"] == "kept"


def test_nth_and_times_pick_the_requests(proxy: FaultProxy) -> None:
    proxy.inject(Fault.http_status(503, retry_after=7), method="get", path="^/a", nth=2,
                 times=2)
    got = [ask(proxy, "GET", p)[0].status for p in ("/a", "/b", "/a", "/a", "/a")]
    assert got == [200, 200, 503, 503, 200]
    assert ask(proxy, "GET", "/a")[0].status == 200  # the rule's turn is over
    proxy.inject(Fault.too_many(3), path="^/v2/")
    response, body = ask(proxy, "GET", "/v2/x")
    assert (response.status, response.getheader("Retry-After")) == (429, "3")
    assert b"TOOMANYREQUESTS" in body
    assert [s.fault for s in proxy.faulted()] == ["status", "status", "retry_after"]


def test_reset_hang_and_truncate(proxy: FaultProxy) -> None:
    proxy.inject(Fault.reset(), path="^/reset")
    proxy.inject(Fault.hang(), path="^/hang")
    proxy.inject(Fault.truncate(), path="^/cut")
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        ask(proxy, "GET", "/reset")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        ask(proxy, "GET", "/hang", timeout=0.3)
    assert time.monotonic() - started < 2
    with pytest.raises(http.client.IncompleteRead):
        ask(proxy, "GET", "/cut/big")


def test_drip_sends_everything_slowly(proxy: FaultProxy) -> None:
    proxy.inject(Fault.drip(0.002))
    started = time.monotonic()
    response, body = ask(proxy, "GET", "/")
    elapsed = time.monotonic() - started
    assert (response.status, body) == (200, b"hello")
    raw_length = 300  # about: status line, the upstream's headers, the body
    assert elapsed > raw_length * 0.002, elapsed
    # headers too: the first byte alone comes at once, the status line not
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.01)
        assert len(sock.recv(100)) < len(b"HTTP/1.1 200 OK")


def test_html_digest_location_and_redirect(proxy: FaultProxy,
                                           capture_server: CaptureServer) -> None:
    proxy.inject(Fault.html(), path="^/html")
    proxy.inject(Fault.wrong_digest(), path="^/wrong")
    proxy.inject(Fault.wrong_digest(None), path="^/drop")
    proxy.inject(Fault.location(capture_server.host), path="^/loc")
    proxy.inject(Fault.redirect(capture_server.host), path="^/away")
    response, body = ask(proxy, "GET", "/html")
    assert (response.status, response.getheader("Content-Type"), body) == \
        (200, "text/html; charset=utf-8", HTML)
    assert ask(proxy, "GET", "/wrong")[0].getheader("Docker-Content-Digest") != \
        "sha256:" + "a" * 64
    assert ask(proxy, "GET", "/drop")[0].getheader("Docker-Content-Digest") is None
    assert ask(proxy, "GET", "/loc")[0].getheader("Location") == \
        f"http://{capture_server.host}/v2/uploads/1?state=x"
    response, _ = ask(proxy, "PUT", "/away/x", b"data")
    assert (response.status, response.getheader("Location")) == \
        (307, f"http://{capture_server.host}/away/x")
    connection = http.client.HTTPConnection("127.0.0.1", capture_server.port, timeout=5)
    connection.request("PUT", "/away/x", body=b"data", headers={"Authorization": "Basic eA=="})
    assert connection.getresponse().status == 401
    assert capture_server.credentials_seen() == ["PUT /away/x: authorization: Basic eA=="]
