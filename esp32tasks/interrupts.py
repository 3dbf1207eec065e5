"""Ctrl-C (SIGINT) held back while a thread pool starts a worker.

A ``KeyboardInterrupt`` that lands inside ``ThreadPoolExecutor.submit`` while it starts a
thread leaves that thread running but unknown to the pool (``_adjust_thread_count`` adds it
only after ``start()`` returns): nothing ever tells it to stop, and the interpreter waits
for it at exit, for ever. A kill trial caught a release that SIGINT could not end. Submits
to a pool that outlives the call (the S3 store's transfer manager and HEAD pool) go through
:func:`deferred`: the signal is noted and raised as soon as the submit returns.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["deferred"]


@contextmanager
def deferred() -> Iterator[None]:
    """SIGINT inside the block is delivered when it ends (main thread only; elsewhere
    Python delivers no signal anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, FrameType | None]] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            if callable(previous):
                previous(*caught[0])
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)
