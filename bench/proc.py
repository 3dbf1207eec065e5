"""Running commands (argv lists only) and timing them."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BenchError", "Timed", "run", "timed"]


class BenchError(Exception):
    """A command the benchmark needs failed."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Timed:
    seconds: float
    stdout: str
    stderr: str


def run(argv: Sequence[str], *, cwd: Path | None = None,
        env: Mapping[str, str] | None = None, timeout: float = 1800) -> str:
    """Run ``argv``; its stdout, or :class:`BenchError` with its output on failure."""
    return timed(argv, cwd=cwd, env=env, timeout=timeout).stdout


def timed(argv: Sequence[str], *, cwd: Path | None = None,
          env: Mapping[str, str] | None = None, timeout: float = 1800) -> Timed:
    """Run ``argv`` and measure its wall time (process start to exit)."""
    full_env = dict(os.environ if env is None else env)
    start = time.perf_counter()
    result = subprocess.run(list(argv), cwd=cwd, env=full_env, capture_output=True, text=True,
                            timeout=timeout, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {result.returncode} in {cwd}:\n"
                         f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return Timed(seconds=seconds, stdout=result.stdout, stderr=result.stderr)
