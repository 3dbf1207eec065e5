"""A fault-injecting HTTP/1.1 proxy for the real registry and the real S3 server.

:class:`FaultProxy` listens on 127.0.0.1 (a free port, or a given one) and forwards every
request to its upstream as it came: the same method, path and headers (``Host`` untouched,
so S3 signatures and the registry's own ``Location`` URLs still hold), bodies streamed
both ways. Rules (:meth:`FaultProxy.inject`) pick requests by method and path (regular
expressions) and, optionally, only the Nth match or N matches from there, and answer them
with a :class:`Fault` instead:

- ``status``: a 5xx (or any) answer in the server's own error format;
- ``retry_after``: 429 with ``Retry-After``;
- ``hang``: the request is read and never answered (until the client leaves);
- ``reset``: the connection is reset (RST) instead of an answer;
- ``drip``: the upstream's answer, one byte per ``interval`` seconds, status line and
  headers included;
- ``html``: 200 ``text/html`` (a captive portal, a web server at the wrong port);
- ``digest``: the upstream's answer with ``Docker-Content-Digest`` (or another header:
  ``x-amz-checksum-sha256``, ``x-amz-meta-sha256``) replaced, or dropped;
- ``location``: the upstream's answer with its ``Location`` pointing at another host;
- ``redirect``: a 307 to the same path on another host;
- ``truncate``: the upstream's answer declaring more bytes (``Content-Length``) than it
  sends, then the connection closed (an answer without a body is cut in its headers).

Every request the proxy receives is recorded (:attr:`FaultProxy.seen`: method, path,
headers, the fault applied, the status answered). :class:`CaptureServer` is the "other
host" a rewritten ``Location`` or a redirect points at: it records what reaches it
(``Authorization`` above all) and answers 401, asking for credentials.

Fixtures: ``fault_proxy`` (a factory: ``fault_proxy(upstream)``, closed after the test),
``registry_faults`` (one in front of ``registry``), ``s3_faults`` (one in front of the
shared ``s3_server``), ``capture_server``.
"""

from __future__ import annotations

import email.message
import hashlib
import http.client
import re
import select
import socket
import struct
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Literal

import pytest

if TYPE_CHECKING:
    from tests.servers.registry import RegistryServer
    from tests.servers.s3 import Seaweed

__all__ = ["CaptureServer", "Fault", "FaultProxy", "Rule", "Seen"]

Kind = Literal["status", "retry_after", "hang", "reset", "drip", "html", "digest",
               "location", "redirect", "truncate"]

#: Seconds the proxy waits on its upstream (the real servers answer in milliseconds).
UPSTREAM_TIMEOUT = 60.0
READY_TIMEOUT = 10.0
#: The proxy's own readiness probe: answered by the proxy, never forwarded or recorded.
_PING = "/__fault_proxy__/ping"
#: Hop-by-hop headers (RFC 9110 7.6.1) and the framing the proxy sets itself.
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                  "expect", "transfer-encoding", "content-length"})
_CHUNK = 64 * 1024
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie",
                                 "x-amz-security-token"})
HTML = (b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head>"
        b"<body><h1>Welcome to the guest network</h1><p>Please sign in.</p></body></html>\n")
#: A digest no answer of the real servers has (``wrong_digest`` default).
WRONG_DIGEST = "sha256:" + hashlib.sha256(b"not the bytes you sent").hexdigest()


@dataclass(frozen=True)
class Fault:
    """What to answer instead of the upstream's answer (see the module docstring)."""

    kind: Kind
    status: int = 503
    retry_after: int | None = None
    interval: float = 1.0
    #: ``digest``: the value sent instead, or None to drop the header
    digest: str | None = WRONG_DIGEST
    header: str = "Docker-Content-Digest"
    #: ``location`` and ``redirect``: the other ``host:port``
    host: str = ""

    @staticmethod
    def http_status(status: int = 503, retry_after: int | None = None) -> Fault:
        """``status``; with ``retry_after``, a ``Retry-After`` header (0: retry at once)."""
        return Fault("status", status=status, retry_after=retry_after)

    @staticmethod
    def too_many(retry_after: int = 1) -> Fault:
        return Fault("retry_after", status=429, retry_after=retry_after)

    @staticmethod
    def hang() -> Fault:
        return Fault("hang")

    @staticmethod
    def reset() -> Fault:
        return Fault("reset")

    @staticmethod
    def drip(interval: float = 1.0) -> Fault:
        return Fault("drip", interval=interval)

    @staticmethod
    def html() -> Fault:
        return Fault("html", status=200)

    @staticmethod
    def wrong_digest(digest: str | None = WRONG_DIGEST,
                     header: str = "Docker-Content-Digest") -> Fault:
        """The upstream's ``header`` (a digest or checksum) replaced, or dropped (None)."""
        return Fault("digest", digest=digest, header=header)

    @staticmethod
    def location(host: str) -> Fault:
        return Fault("location", host=host)

    @staticmethod
    def redirect(host: str, status: int = 307) -> Fault:
        return Fault("redirect", status=status, host=host)

    @staticmethod
    def truncate() -> Fault:
        return Fault("truncate")


@dataclass
class Rule:
    """``fault`` for requests whose method matches ``method`` (whole, any case) and whose
    path (query included) contains a match of ``path``: from the ``nth`` such request
    (1 = the first) on, ``times`` of them (None: every one)."""

    fault: Fault
    method: str = ".*"
    path: str = ".*"
    nth: int = 1
    times: int | None = None
    matched: int = 0
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        return bool(re.fullmatch(self.method, method, re.IGNORECASE)
                    and re.search(self.path, path))

    def count(self) -> bool:
        """Count one more match; True when this one gets the fault."""
        self.matched += 1
        hit = self.matched >= self.nth and (self.times is None
                                            or self.matched < self.nth + self.times)
        self.fired += hit
        return hit


@dataclass
class Seen:
    """One request as received: header names lower case."""

    method: str
    path: str
    headers: dict[str, str]
    at: float
    fault: Kind | None = None
    #: the status answered (None: no answer, e.g. hang or reset; 0: upstream unreachable)
    status: int | None = None
    #: the upstream's answer's headers, names lower case (empty when not forwarded)
    answer: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status} ({self.fault or 'forwarded'})"


def _headers(message: email.message.Message) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in message.items():
        key = name.lower()
        found[key] = f"{found[key]}, {value}" if key in found else value
    return found


def _wait_ready(host: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            # our own server on loopback
            with urllib.request.urlopen(f"http://{host}{_PING}", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.01)  # polling interval while waiting for a condition


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client gone mid-answer (killed, timed out) is part of the game; else report."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FaultProxy:
    """See the module docstring. ``upstream`` is ``host:port`` (plain HTTP)."""

    def __init__(self, upstream: str, *, port: int = 0) -> None:
        self.upstream = upstream
        up_host, _, up_port = upstream.rpartition(":")
        self._up = (up_host, int(up_port))
        self.rules: list[Rule] = []
        self.seen: list[Seen] = []
        #: called with each request (already recorded) before it is answered or forwarded
        self.on_request: Callable[[Seen], None] | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.server = _Server(("127.0.0.1", port), _handler(self))
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        daemon=True, name=f"fault-proxy-{self.port}")
        self._thread.start()
        _wait_ready(self.host)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"

    def inject(self, fault: Fault, *, method: str = ".*", path: str = ".*", nth: int = 1,
               times: int | None = None) -> Rule:
        rule = Rule(fault, method, path, nth, times)
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """No more faults for the requests to come (one hanging or dripping goes on until
        its client leaves or the proxy closes)."""
        with self.lock:
            self.rules.clear()

    def forget(self) -> None:
        """Clear the record of requests seen."""
        with self.lock:
            self.seen.clear()

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def faulted(self) -> list[Seen]:
        return [s for s in self.requests() if s.fault is not None]

    def _decide(self, method: str, path: str) -> Fault | None:
        with self.lock:
            chosen = None
            for rule in self.rules:
                if rule.matches(method, path) and rule.count() and chosen is None:
                    chosen = rule.fault
            return chosen

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        # -- the request --------------------------------------------------------------

        def handle_request(self) -> None:
            if self.path == _PING:
                self._answer(200, [("Content-Type", "text/plain")], b"ok")
                return
            seen = Seen(self.command, self.path, _headers(self.headers), time.monotonic())
            fault = proxy._decide(self.command, self.path)
            seen.fault = fault.kind if fault else None
            with proxy.lock:
                proxy.seen.append(seen)
            if proxy.on_request is not None:
                proxy.on_request(seen)
            if fault is None or fault.kind in ("drip", "digest", "location", "truncate"):
                self._forward(seen, fault)
                return
            self._drain()
            match fault.kind:
                case "status" | "retry_after":
                    extra = [] if fault.retry_after is None \
                        else [("Retry-After", str(fault.retry_after))]
                    self._error(seen, fault.status, extra)
                case "html":
                    seen.status = 200
                    self._answer(200, [("Content-Type", "text/html; charset=utf-8")], HTML)
                case "redirect":
                    seen.status = fault.status
                    self._answer(fault.status, [("Location", f"http://{fault.host}{self.path}"),
                                                ("Content-Type", "text/plain")], b"moved\n")
                case "hang":
                    self._hang()
                case "reset":
                    self._reset()

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_request

        def _body(self) -> Iterator[bytes]:
            """The request body as it arrives (Content-Length or chunked), undecoded."""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    size_line = self.rfile.readline()
                    size = int(size_line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:  # then trailers, if any, up to an empty line
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return
                    data = self.rfile.read(size)
                    self.rfile.readline()  # the chunk's CRLF
                    yield data
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                data = self.rfile.read(min(left, _CHUNK))
                if not data:
                    return
                left -= len(data)
                yield data

        def _drain(self) -> None:
            for _ in self._body():
                pass

        # -- answers of our own ---------------------------------------------------------

        def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response_only(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, seen: Seen, status: int, extra: list[tuple[str, str]]) -> None:
            try:
                reason = http.HTTPStatus(status).phrase
            except ValueError:
                reason = "Error"
            if self.path.startswith("/v2"):  # the registry's error format
                code = "TOOMANYREQUESTS" if status == 429 else "UNAVAILABLE"
                body = (f'{{"errors":[{{"code":"{code}","message":"{reason}",'
                        '"detail":"injected by the fault proxy"}]}\n').encode()
                ctype = "application/json; charset=utf-8"
            else:  # S3's
                code = {429: "SlowDown", 500: "InternalError", 503: "ServiceUnavailable"}.get(
                    status, reason.replace(" ", ""))
                body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                        f"<Message>{reason}</Message><RequestId>fault</RequestId></Error>"
                        ).encode()
                ctype = "application/xml"
            seen.status = status
            self._answer(status, [("Content-Type", ctype), *extra], body)

        def _client_left(self) -> bool:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            try:
                return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
            except OSError:
                return True

        def _hang(self) -> None:
            while not proxy.stopping.wait(0.2) and not self._client_left():
                pass
            self.close_connection = True

        def _reset(self) -> None:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        # -- forwarding -----------------------------------------------------------------

        def _forward(self, seen: Seen, fault: Fault | None) -> None:
            upstream = http.client.HTTPConnection(*proxy._up, timeout=UPSTREAM_TIMEOUT)
            try:
                try:
                    response = self._send_upstream(upstream)
                except OSError:
                    # upstream is gone: hang up without an answer, as a dead server would
                    seen.status = 0
                    self.close_connection = True
                    return
                seen.status = response.status
                seen.answer = _headers(response.msg)
                headers = self._rewrite(response.getheaders(), fault)
                if fault is not None and fault.kind in ("drip", "truncate"):
                    self._whole(response, headers, fault)
                else:
                    self._relay(response, headers)
            finally:
                upstream.close()

        def _send_upstream(self, upstream: http.client.HTTPConnection
                           ) -> http.client.HTTPResponse:
            upstream.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
            chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
            for name, value in self.headers.items():
                if name.lower() not in _HOP:
                    upstream.putheader(name, value)
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            elif self.headers.get("Content-Length") is not None:
                upstream.putheader("Content-Length", self.headers["Content-Length"])
            upstream.endheaders()
            for data in self._body():
                upstream.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            if chunked:
                upstream.send(b"0\r\n\r\n")
            return upstream.getresponse()

        def _rewrite(self, headers: list[tuple[str, str]], fault: Fault | None
                     ) -> list[tuple[str, str]]:
            if fault is None:
                return headers
            out = []
            for name, value in headers:
                key = name.lower()
                if fault.kind == "digest" and key == fault.header.lower():
                    if fault.digest is None:
                        continue
                    value = fault.digest  # noqa: PLW2901
                elif fault.kind == "location" and key == "location":
                    value = (re.sub(r"^https?://[^/]+", f"http://{fault.host}", value)  # noqa: PLW2901
                             if "://" in value else f"http://{fault.host}{value}")
                out.append((name, value))
            return out

        def _bodiless(self, status: int) -> bool:
            return self.command == "HEAD" or status in (204, 304) or 100 <= status < 200

        def _head(self, response: http.client.HTTPResponse,
                  headers: list[tuple[str, str]]) -> None:
            self.send_response_only(response.status, response.reason)
            for name, value in headers:
                if name.lower() not in _HOP:
                    self.send_header(name, value)

        def _relay(self, response: http.client.HTTPResponse,
                   headers: list[tuple[str, str]]) -> None:
            """The answer as it comes: headers kept (order and case), the body streamed."""
            self._head(response, headers)
            length = response.getheader("Content-Length")
            if self._bodiless(response.status):
                if length is not None:
                    self.send_header("Content-Length", length)
                self.end_headers()
                return
            if length is not None:
                self.send_header("Content-Length", length)
            elif response.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Connection", "close")  # the body ends where it closes
            self.end_headers()
            while data := (response.read1(_CHUNK) if response.chunked
                           else response.read(_CHUNK)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data)
                                 if length is None and response.chunked else data)
            if length is None and response.chunked:
                self.wfile.write(b"0\r\n\r\n")

        def _whole(self, response: http.client.HTTPResponse, headers: list[tuple[str, str]],
                   fault: Fault) -> None:
            """The answer as raw bytes, dripped or cut short."""
            body = b"" if self._bodiless(response.status) else response.read()
            declared = response.getheader("Content-Length")
            if fault.kind == "truncate" and not self._bodiless(response.status):
                declared = str(len(body) + max(64, len(body)))
            elif declared is None or not self._bodiless(response.status):
                declared = str(len(body))
            lines = [f"HTTP/1.1 {response.status} {response.reason}"]
            lines += [f"{n}: {v}" for n, v in headers if n.lower() not in _HOP]
            lines += [f"Content-Length: {declared}", "Connection: close"]
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            self.close_connection = True
            if fault.kind == "truncate":
                raw = head[:len(head) // 2] if self._bodiless(response.status) \
                    else head + body[:len(body) // 2]
                self.wfile.write(raw)
                return
            for i in range(len(head + body)):
                if proxy.stopping.wait(fault.interval if i else 0):
                    return
                try:
                    self.wfile.write((head + body)[i:i + 1])
                except OSError:
                    return  # the client gave up

    return Handler


class CaptureServer:
    """Another host: records every request (credentials above all) and answers 401."""

    def __init__(self, status: int = 401) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        capture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def handle_request(self) -> None:
                left = int(self.headers.get("Content-Length") or 0)
                while left > 0:
                    data = self.rfile.read(min(left, _CHUNK))
                    if not data:
                        break
                    left -= len(data)
                if self.path != _PING:
                    with capture.lock:
                        capture.seen.append(Seen(self.command, self.path,
                                                 _headers(self.headers), time.monotonic(),
                                                 status=status))
                code = 200 if self.path == _PING else status
                body = b'{"errors":[{"code":"UNAUTHORIZED","message":"sign in"}]}\n'
                self.send_response_only(code)
                if code == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="capture"')
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_request

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        _wait_ready(self.host)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def credentials_seen(self) -> list[str]:
        """Every header that carries credentials, as received (must stay empty)."""
        return [f"{s.method} {s.path}: {name}: {value}" for s in self.requests()
                for name, value in s.headers.items()
                if name in _CREDENTIAL_HEADERS or (name.startswith("x-amz-")
                                                   and "signature" in name)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[str], FaultProxy]]:
    """``fault_proxy("127.0.0.1:port")``: a new proxy in front of that server, closed after
    the test."""
    made: list[FaultProxy] = []

    def make(upstream: str) -> FaultProxy:
        made.append(FaultProxy(upstream))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


@pytest.fixture
def registry_faults(registry: RegistryServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the test's plain-HTTP ``registry``."""
    with FaultProxy(registry.host) as proxy:
        yield proxy


@pytest.fixture
def s3_faults(s3_server: Seaweed) -> Iterator[FaultProxy]:
    """A fault proxy in front of the shared SeaweedFS."""
    with FaultProxy(s3_server.endpoint.removeprefix("http://")) as proxy:
        yield proxy


@pytest.fixture
def capture_server() -> Iterator[CaptureServer]:
    server = CaptureServer()
    yield server
    server.close()
