"""A TCP proxy on 127.0.0.1 that counts what a client sends: HTTP requests and bytes.

Bytes are counted on the wire (headers and bodies, client to server and back). Requests
are counted by reading the client's stream as HTTP/1.1 (request line, headers, then a
``Content-Length`` or chunked body). The times of the first and last request are kept,
so a push can be timed from its first request to its last.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

__all__ = ["Counts", "WireProxy"]

_BUF = 65536


@dataclass
class Counts:
    requests: int = 0
    sent: int = 0
    received: int = 0
    first: float | None = None
    last: float | None = None
    methods: dict[str, int] = field(default_factory=dict)


class _RequestParser:
    """Feeds on the client's bytes; calls ``on_request(method)`` per request line."""

    def __init__(self, counts: Counts, lock: threading.Lock) -> None:
        self.counts, self.lock = counts, lock
        self.buf = b""
        self.body_left = 0
        self.chunked = False

    def feed(self, data: bytes) -> None:
        self.buf += data
        for _ in range(100000):  # bounded: each pass consumes input or returns
            if self.body_left:
                take = min(self.body_left, len(self.buf))
                self.buf, self.body_left = self.buf[take:], self.body_left - take
                if self.body_left:
                    return
            if self.chunked:
                if not self._chunk():
                    return
                continue
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
            lines = head.split("\r\n")
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines[1:])}
            with self.lock:
                c = self.counts
                c.requests += 1
                method = lines[0].split(" ", 1)[0]
                c.methods[method] = c.methods.get(method, 0) + 1
                now = time.perf_counter()
                c.first = now if c.first is None else c.first
                c.last = now
            if headers.get("transfer-encoding", "").lower() == "chunked":
                self.chunked = True
            else:
                self.body_left = int(headers.get("content-length", "0") or 0)

    def _chunk(self) -> bool:
        line_end = self.buf.find(b"\r\n")
        if line_end < 0:
            return False
        size = int(self.buf[:line_end].split(b";")[0] or b"0", 16)
        if size == 0:
            end = self.buf.find(b"\r\n\r\n", line_end)
            if end < 0:
                return False
            self.buf, self.chunked = self.buf[end + 4:], False
            return True
        if len(self.buf) < line_end + 2 + size + 2:
            return False
        self.buf = self.buf[line_end + 2 + size + 2:]
        return True


class WireProxy:
    """Forwards 127.0.0.1:<port> to ``upstream`` (host, port); counts per :meth:`reset`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.counts = Counts()
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset(self) -> Counts:
        """The counts so far; start counting afresh."""
        with self.lock:
            counts, self.counts = self.counts, Counts()
        return counts

    def close(self) -> None:
        self.closed = True
        self.server.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream, timeout=60)
            # forward each chunk at once: Nagle would delay a client's body behind its
            # headers by 40 ms on both legs, which no real network path adds
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            parser = _RequestParser(self.counts, self.lock)
            threading.Thread(target=self._pipe, args=(client, upstream, parser),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket,
              parser: _RequestParser | None) -> None:
        try:
            while data := src.recv(_BUF):
                with self.lock:
                    if parser is not None:
                        self.counts.sent += len(data)
                    else:
                        self.counts.received += len(data)
                if parser is not None:
                    parser.counts = self.counts
                    parser.feed(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
