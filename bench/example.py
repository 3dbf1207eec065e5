"""The bundled example's release times, in one run: cold with ``-n 1`` and ``-n 2``, a
restored state (``build/`` copied to another path), and a remote build cache hit (a fresh
clone at another path reading a SeaweedFS cache another clone wrote: no compiler runs).

``python -m bench.example [--runs N]`` prints a markdown table; ``measure`` is the bench's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.proc import BenchError, Timed, timed

__all__ = ["measure", "table"]

_KEY = "bench-cache-key"


def _git(root: Path, *args: str) -> None:
    from tests.support.repo import GIT_ENV

    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                   env={**os.environ, **GIT_ENV})


def _release(root: Path, env: Mapping[str, str], *args: str) -> Timed:
    result = timed([sys.executable, "-m", "doit", *args, "release"], cwd=root,
                   env={**os.environ, **env})
    if "Traceback" in result.stderr:
        raise BenchError(f"doit release in {root}:\n{result.stderr}")
    return result


def measure(workdir: Path, runs: int = 3) -> dict[str, Any]:
    from tests.servers.s3 import ADMIN, Seaweed
    from tests.support.repo import copy_example

    origin = workdir / "origin"
    origin.mkdir(parents=True)
    copy_example(origin)
    _git(origin, "init", "-q", "-b", "main")
    _git(origin, "add", "-A")
    _git(origin, "commit", "-q", "-m", "example")
    s3 = Seaweed(workdir / "s3")
    s3.root.mkdir(exist_ok=True)
    s3.start()
    try:
        clones = iter(range(10_000))

        def fresh() -> Path:
            path = workdir / f"runner-{next(clones)}" / "firmware"
            path.parent.mkdir(parents=True)
            _git(workdir, "clone", "-q", str(origin), str(path))
            return path

        result: dict[str, Any] = {}
        for jobs in (1, 2):  # cold, without a cache
            times = [_release(fresh(), {}, "-n", str(jobs)).seconds for _ in range(runs)]
            result[f"cold_n{jobs}"] = statistics.median(times)
        bucket = s3.bucket("bench-cache")
        cache = {**ADMIN.env, "ESP32TASKS_CACHE_KEY": _KEY}
        text = (origin / "targets.toml").read_text()
        (origin / "targets.toml").write_text(
            text + f'\n[cache]\nurl = "s3://{bucket}/cache"\nendpoint_url = "{s3.endpoint}"\n')
        _git(origin, "commit", "-q", "-am", "a build cache")
        writer = fresh()  # fills the cache
        wrote = _release(writer, {**cache, "ESP32TASKS_CACHE_WRITE": "1"})
        result["cold_writing_cache"] = wrote.seconds
        restored = []
        for i in range(runs):
            moved = workdir / f"restored-{i}" / "elsewhere" / "firmware"
            shutil.copytree(writer, moved, symlinks=True)
            restored.append(_release(moved, cache).seconds)
        result["restored_state"] = statistics.median(restored)
        hits = []
        for _ in range(runs):
            run = _release(fresh(), cache)
            if run.stderr.count("from the build cache") != 3:
                raise BenchError(f"expected three cache hits:\n{run.stderr}")
            hits.append(run.seconds)
        result["cache_hit"] = statistics.median(hits)
        result["runs"] = runs
        return result
    finally:
        s3.kill()


def table(result: Mapping[str, Any]) -> str:
    rows = [("cold, `-n 1`", "cold_n1"), ("cold, `-n 2`", "cold_n2"),
            ("cold, `-n 1`, writing the cache", "cold_writing_cache"),
            ("restored `build/` at another path", "restored_state"),
            ("fresh clone, remote cache hit (no compiler)", "cache_hit")]
    lines = ["| the example's `doit release` | seconds |", "| --- | ---: |"]
    lines += [f"| {label} | {result[key]:.2f} |" for label, key in rows]
    return "\n".join(lines) + f"\n\n(median of {result['runs']} runs each)\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.example")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="esp32tasks-example-") as tmp:
        print(table(measure(Path(tmp), args.runs)))


if __name__ == "__main__":
    main()
