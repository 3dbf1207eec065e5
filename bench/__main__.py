"""``python -m bench [--quick] [--out DIR]``: run the suite, write latest.json and latest.md."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import delta, example, fleet, report, scenarios, wire
from bench.proc import BenchError
from bench.stats import slope

SIZES = ((100, 3), (1000, 8), (5000, 16))
RUNS = 5


def run_size(workdir: Path, files: int, targets: int, runs: int) -> dict[str, Any]:
    print(f"bench: {files} files x {targets} targets", file=sys.stderr, flush=True)
    p = scenarios.Prepared(workdir, files, targets)
    result: dict[str, Any] = {"files": files, "targets": targets}
    result["cold"] = scenarios.cold(p)
    result["noop"] = scenarios.noop(p, runs)
    result["shared_change"] = scenarios.one_change(p, runs, shared=True)
    result["own_change"] = scenarios.one_change(p, runs, shared=False)
    return result


def scaling(sizes: list[dict[str, Any]]) -> dict[str, float]:
    done = [s for s in sizes if "noop" in s]
    xs = [float(s["cold"]["file_dep"]) for s in done]
    ours = slope(xs, [s["noop"]["ours"]["median"] for s in done])
    floor = slope(xs, [s["noop"]["floor"]["median"] for s in done])
    return {"ours_slope_us": ours[0] * 1e6, "ours_intercept_ms": ours[1] * 1e3,
            "floor_slope_us": floor[0] * 1e6, "floor_intercept_ms": floor[1] * 1e3}


def _not_measured(exc: BaseException) -> str:
    """A scenario's entry in the report when it could not run: the error's first line."""
    return f"not measured: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


def measure_wire(workdir: Path, runs: int) -> dict[str, Any] | str:
    """The registry and S3 scenarios, or why they could not be measured."""
    print("bench: wire cost and push (registry and S3 on loopback)", file=sys.stderr,
          flush=True)
    try:
        return wire.measure(workdir, runs)
    except (BenchError, OSError, RuntimeError, ImportError) as exc:
        return _not_measured(exc)


def measure_delta(workdir: Path, files: int) -> list[dict[str, Any]] | str:
    """Full layer against patch for one update, or why it could not be measured."""
    print("bench: delta OTA patches", file=sys.stderr, flush=True)
    try:
        return delta.measure(workdir, files)
    except (BenchError, OSError, ImportError) as exc:
        return _not_measured(exc)


def measure_example(workdir: Path, runs: int) -> dict[str, Any] | str:
    """The bundled example's release times, or why they could not be measured."""
    print("bench: the example (cold, restored, remote cache hit)", file=sys.stderr, flush=True)
    try:
        return example.measure(workdir, runs)
    except (BenchError, OSError, ImportError) as exc:
        return _not_measured(exc)


def measure_fleet(workdir: Path) -> dict[str, Any] | str:
    """48 targets on 6 runners sharing a build cache, or why it could not be measured."""
    print("bench: a fleet of runners and one build cache", file=sys.stderr, flush=True)
    try:
        return fleet.measure(workdir)
    except (BenchError, OSError, RuntimeError, ImportError) as exc:
        return _not_measured(exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smallest size, one run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--max-size", type=int, default=len(SIZES),
                        help="run only the first K sizes (the rest are reported as skipped)")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else RUNS
    count = 1 if args.quick else args.max_size
    skipped = "not run (--quick)" if args.quick else f"not run (--max-size {count})"
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    data: dict[str, Any] = {
        "mode": "quick" if args.quick else "full", "started": started,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "sizes": [],
    }
    begin = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="esp32tasks-bench-") as tmp:
            for i, (files, targets) in enumerate(SIZES):
                if i >= count:
                    data["sizes"].append({"files": files, "targets": targets,
                                          "skipped": skipped})
                    continue
                data["sizes"].append(run_size(Path(tmp) / f"s{i}", files, targets, runs))
            data["scaling"] = scaling(data["sizes"])
            data["wire"] = measure_wire(Path(tmp) / "wire", runs)
            data["delta"] = measure_delta(Path(tmp) / "delta", 100 if args.quick else 1000)
            if not args.quick:  # minutes each: full mode only
                data["example"] = measure_example(Path(tmp) / "example", runs)
                data["fleet"] = measure_fleet(Path(tmp) / "fleet")
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    data["seconds"] = time.perf_counter() - begin
    js, md = report.write(args.out, data)
    print(md.read_text())
    print(f"bench: wrote {js} and {md} in {data['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
