"""Caches that live for one doit run, and one place that forgets them all.

A doit run is one process: its actions share a registry client (one credential lookup,
one keep-alive connection), one S3 client, and checks done once. They are kept by
:func:`per_run` functions, which :func:`reset` clears; the tasks session resets them when
it starts a run, and the tests between cases, so nothing outlives the run that made it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

__all__ = ["per_run", "reset"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_caches: list[Any] = []
_lock = threading.RLock()  # a per-run function may call another


def per_run(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """``functools.cache`` that :func:`reset` clears; thread-safe for ``doit -n N -P thread``."""
    cached = functools.cache(function)

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _lock:
            return cached(*args, **kwargs)  # type: ignore[arg-type]  # hashable arguments

    wrapper.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    _caches.append(cached)
    return wrapper


def reset() -> None:
    """Forget every per-run value (clients are closed by their own finalizers)."""
    for cached in _caches:
        cached.cache_clear()
