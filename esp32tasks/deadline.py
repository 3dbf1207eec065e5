"""A deadline on a whole HTTP exchange, not only on each read.

Socket timeouts bound each read: a server that answers one byte a second never trips
them, and held a push for 240 s. A :class:`Deadline` bounds the exchange: when it passes,
every connection the exchange used is shut down (``shutdown(SHUT_RDWR)``), so the read or
write blocked on it returns at once and the caller, seeing :attr:`Deadline.expired`, says
the server was too slow.

The deadline of the running exchange is per thread (:func:`within`, or :func:`start` and
:func:`stop` where the exchange begins and ends in callbacks); a connection class mixing in
:class:`Watched` attaches itself to it as each request goes out. The registry transport
and the S3 store each give their HTTP library such a connection class.

Sizing (:func:`allowance`): the connect and first-byte timeouts, plus the bytes the
exchange moves at :data:`MIN_RATE`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Final

__all__ = ["MIN_RATE", "Deadline", "Watched", "allowance", "current", "start", "stop",
           "within"]

#: The slowest transfer waited for, in bytes per second (512 kbit/s): a 2 MB app gets
#: 32 s on top of the timeouts.
MIN_RATE: Final = 64 * 1024


def allowance(timeout: float, size: int = 0) -> float:
    """Seconds for an exchange that moves ``size`` bytes: connect, first byte, transfer."""
    return 2 * timeout + max(size, 0) / MIN_RATE


class Deadline:
    """Shuts the exchange's connections down when ``seconds`` have passed (unless
    cancelled first); :meth:`extend` moves it later, e.g. once an answer's length is
    known."""

    def __init__(self, seconds: float,
                 on_expire: Callable[[Deadline], None] | None = None) -> None:
        self.seconds = seconds
        self.on_expire = on_expire
        self.started = time.monotonic()
        self.expired = False
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._timer: threading.Timer | None = None
        self._arm(seconds)

    def _arm(self, delay: float) -> None:
        timer = threading.Timer(delay, self._expire)
        timer.daemon = True
        timer.args = (timer,)  # which arming fired: a replaced timer's call is ignored
        self._timer = timer
        timer.start()

    def extend(self, seconds: float) -> None:
        with self._lock:
            if self._timer is None:
                return
            self._timer.cancel()
            self.seconds += seconds
            self._arm(max(0.0, self.started + self.seconds - time.monotonic()))

    def attach(self, connection: Any) -> None:
        with self._lock:
            if connection not in self._connections:
                self._connections.append(connection)

    def cancel(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
            self._connections.clear()
        if timer is not None:
            timer.cancel()

    def _expire(self, timer: threading.Timer) -> None:
        with self._lock:
            if self._timer is not timer:
                return  # cancelled or extended meanwhile
            self._timer = None
            self.expired = True
            connections, self._connections = self._connections, []
        if self.on_expire is not None:
            self.on_expire(self)
        for connection in connections:
            sock = getattr(connection, "sock", None)
            if isinstance(sock, socket.socket):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


_local = threading.local()


def current() -> Deadline | None:
    """This thread's running deadline, if any."""
    deadline: Deadline | None = getattr(_local, "deadline", None)
    return deadline


def start(seconds: float,
          on_expire: Callable[[Deadline], None] | None = None) -> Deadline:
    """This thread's exchange begins (a running one is cancelled)."""
    stop()
    deadline = Deadline(seconds, on_expire)
    _local.deadline = deadline
    return deadline


def stop(deadline: Deadline | None = None) -> None:
    """This thread's exchange ends (only if it is still ``deadline``, when given)."""
    running = current()
    if running is not None and (deadline is None or running is deadline):
        running.cancel()
        _local.deadline = None


@contextmanager
def within(seconds: float) -> Iterator[Deadline]:
    deadline = start(seconds)
    try:
        yield deadline
    finally:
        stop(deadline)


class Watched:
    """Mix into an ``http.client``-style connection class (before it): each request it
    sends joins the sending thread's running deadline."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        deadline = current()
        if deadline is not None:
            deadline.attach(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]
