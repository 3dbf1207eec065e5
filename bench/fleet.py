"""A fleet of CI runners: the synthetic app's 48 targets on 6 runners sharing one registry,
one S3 server and the remote build cache, against one runner with ``-n 2``.

Each runner is its own clone (its own ``build/``, doit state and lock) at its own path, run
as a CI job runs it: ``doit -n 1 release targets=<its 8>``, then one more clone runs
``doit publish-index``. Phase one is the trusted branch's first release (the cache is empty,
every runner writes it); phase two is the same commit on six fresh runners (every build is a
cache hit). Every compile goes through a counting ``$CC``, so the report counts each
distinct compiler input once and every compile beyond that as a duplicate. The cache sits
behind a :class:`~bench.wireproxy.WireProxy`, which counts its bytes.

All runners share this machine's CPUs, so the fleet's wall time is not six machines'; each
runner's own wall and CPU time are reported too. ``python -m bench.fleet`` prints the table;
``measure`` is the bench's (full mode only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import synth
from bench.compiles import CompileLog
from bench.doitrun import Runner
from bench.proc import BenchError, run
from bench.wireproxy import WireProxy

__all__ = ["measure", "table"]

FILES = 100
TARGETS = 48
RUNNERS = 6
BUCKET = "bench-fleet"
_KEY = "bench-fleet-cache-key"


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """One runner's doit run: wall and CPU seconds (its process tree), compiles, output."""

    seconds: float
    cpu: float
    compiles: tuple[tuple[str, ...], ...]
    stderr: str


def _compiles(cc: CompileLog, root: Path) -> tuple[tuple[str, ...], ...]:
    """Each compile's argv with the clone's path taken out: one input, one key."""
    here = str(root)
    return tuple(tuple(a.replace(here, "<root>") for a in argv) for argv in cc.compiles())


def _doit(root: Path, env: Mapping[str, str], *args: str) -> Job:
    """``doit *args`` in ``root``, timed, with its process tree's CPU time from wait4."""
    cc = CompileLog(root.parent / "cc")  # an empty log
    full = {**Runner(root=root, cc=cc).env(), **env}
    out, err = root.parent / "doit.out", root.parent / "doit.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=root, env=full,
                                stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    errors = err.read_text()
    if proc.returncode != 0 or "Traceback" in errors:
        raise BenchError(f"doit {' '.join(args)} exited {proc.returncode} in {root}:\n"
                         f"{out.read_text()[-2000:]}\n{errors[-3000:]}")
    return Job(seconds=seconds, cpu=usage.ru_utime + usage.ru_stime,
               compiles=_compiles(cc, root), stderr=errors)


def _clone(origin: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True)
    run(["git", "clone", "-q", str(origin), str(dest)])
    return dest


def _index_digest(root: Path) -> str:
    data = json.loads((root / "build" / "receipts" / "index.json").read_bytes())
    return str(data["index"]["digest"])


def _shards(names: Sequence[str], runners: int) -> list[list[str]]:
    """Consecutive slices, as a CI matrix lists them: each chip in every slice."""
    size = -(-len(names) // runners)
    return [list(names[i:i + size]) for i in range(0, len(names), size)]


def _listed(client: Any, prefix: str) -> Iterator[dict[str, Any]]:
    """Every object under ``prefix`` in the bench's bucket (as S3 lists them, in pages)."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                  Prefix=prefix):
        yield from page.get("Contents", [])


def _objects(client: Any, prefix: str) -> tuple[int, int]:
    sizes = [obj["Size"] for obj in _listed(client, prefix)]
    return len(sizes), sum(sizes)


def _named_files(client: Any) -> tuple[int, int]:
    """Files the cache's entries name, and their bytes (before sharing blobs)."""
    count = size = 0
    for obj in _listed(client, "cache/entries/"):
        doc = json.loads(client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read())
        count += len(doc["files"])
        size += sum(int(f["size"]) for f in doc["files"])
    return count, size


def _delete(client: Any, prefix: str) -> None:
    keys = [{"Key": obj["Key"]} for obj in _listed(client, prefix)]
    for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
        client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys[i:i + 1000]})


def _phase(origin: Path, workdir: Path, shards: list[list[str]], env: Mapping[str, str],
           proxy: WireProxy) -> dict[str, Any]:
    """Every shard on its own fresh clone at once, then ``publish-index`` on one more."""
    roots = [_clone(origin, workdir / f"runner-{i}" / "firmware") for i in range(len(shards))]
    proxy.reset()
    start = time.perf_counter()
    with ThreadPoolExecutor(len(shards)) as pool:
        jobs = list(pool.map(lambda r, s: _doit(r, env, "-n", "1", "release",
                                                f"targets={','.join(s)}"), roots, shards))
    shards_done = time.perf_counter() - start
    final_root = _clone(origin, workdir / "final" / "firmware")
    final = _doit(final_root, env, "publish-index")
    wall = time.perf_counter() - start
    counts = proxy.reset()
    compiles = [c for j in jobs for c in j.compiles] + list(final.compiles)
    return {"wall": wall, "shards_wall": shards_done, "publish_index": final.seconds,
            "runners": [{"targets": len(s), "seconds": j.seconds, "cpu": j.cpu,
                         "compiles": len(j.compiles)} for s, j in zip(shards, jobs, strict=True)],
            "compiles": len(compiles), "distinct": len(set(compiles)),
            "compile_set": set(compiles), "cache_sent": counts.sent,
            "cache_received": counts.received, "cache_requests": counts.requests,
            "cache_hits": sum(j.stderr.count("from the build cache") for j in jobs),
            "index": _index_digest(final_root)}


def measure(workdir: Path, files: int = FILES, targets: int = TARGETS,
            runners: int = RUNNERS) -> dict[str, Any]:
    from bench.wire import start_servers
    from tests.servers.s3 import ADMIN

    registry, s3 = start_servers(workdir)
    proxy = WireProxy(("127.0.0.1", int(s3.endpoint.rsplit(":", 1)[1])))
    try:
        s3.bucket(BUCKET)
        client = s3.client()
        toml = (f'\n[registry]\nrepository = "{registry.host}/bench/fleet"\ninsecure = true\n'
                f'\n[store]\nurl = "s3://{BUCKET}/store"\nendpoint_url = "{s3.endpoint}"\n'
                f'\n[cache]\nurl = "s3://{BUCKET}/cache"\n'
                f'endpoint_url = "http://{proxy.host}"\n')
        origin = synth.create(workdir / "origin", files, targets, extra_toml=toml)
        names = [name for name, _ in origin.targets]
        env = {**ADMIN.env, "ESP32TASKS_CACHE_KEY": _KEY}

        print(f"bench: fleet: one runner, doit -n 2 release ({targets} targets)",
              file=sys.stderr, flush=True)
        single_root = _clone(origin.root, workdir / "single" / "firmware")
        single = _doit(single_root, {**env, "ESP32TASKS_REGISTRY":
                                     f"{registry.host}/bench/single"}, "-n", "2", "release")
        single_index = _index_digest(single_root)
        single_set = set(single.compiles)
        if len(single_set) != len(single.compiles):
            raise BenchError("one runner compiled an input twice")
        _delete(client, "store/")  # the fleet uploads its release itself
        if _objects(client, "cache/")[0]:
            raise BenchError("the runner without ESP32TASKS_CACHE_WRITE wrote the cache")

        shards = _shards(names, runners)
        print(f"bench: fleet: {len(shards)} runners, first release (writing the cache)",
              file=sys.stderr, flush=True)
        first = _phase(origin.root, workdir / "first", shards,
                       {**env, "ESP32TASKS_CACHE_WRITE": "1"}, proxy)
        entries = _objects(client, "cache/entries/")
        blobs = _objects(client, "cache/blobs/")
        named = _named_files(client)
        _delete(client, "store/")
        print(f"bench: fleet: {len(shards)} fresh runners, the same commit (cache hits)",
              file=sys.stderr, flush=True)
        second = _phase(origin.root, workdir / "second", shards, env, proxy)

        problems = []
        for label, phase in (("first", first), ("second", second)):
            if phase["index"] != single_index:
                problems.append(f"the {label} fleet's index {phase['index']} is not the "
                                f"single runner's {single_index}")
        if first["compile_set"] != single_set or first["compiles"] != len(single_set):
            problems.append(f"the fleet compiled {first['compiles']} ({first['distinct']} "
                            f"distinct), one runner {len(single_set)}")
        if second["compiles"]:
            problems.append(f"{second['compiles']} compiles on runners with a full cache")
        if second["cache_hits"] != targets:
            problems.append(f"{second['cache_hits']} cache hits of {targets} builds")
        if problems:
            raise BenchError("; ".join(problems))
        for phase in (first, second):
            del phase["compile_set"]
        return {"files": files, "targets": targets, "runners": len(shards),
                "single": {"seconds": single.seconds, "cpu": single.cpu,
                           "compiles": len(single.compiles)},
                "first": first, "second": second,
                "cache_entries": entries[0], "cache_entry_bytes": entries[1],
                "cache_files": named[0], "cache_file_bytes": named[1],
                "cache_blobs": blobs[0], "cache_blob_bytes": blobs[1],
                "index": single_index, "cpus": os.cpu_count()}
    finally:
        proxy.close()
        s3.stop()
        registry.stop()


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def table(r: Mapping[str, Any]) -> str:
    one, first, second = r["single"], r["first"], r["second"]
    n = r["runners"]

    def spread(phase: Mapping[str, Any], key: str) -> str:
        values = [x[key] for x in phase["runners"]]
        return f"{min(values):.1f} to {max(values):.1f}"

    lines = [
        f"{r['targets']} targets ({r['files']} generated C files each) on {n} runners, "
        f"one registry, one SeaweedFS, one build cache; this machine has {r['cpus']} CPUs, "
        "shared by all runners.",
        "",
        f"| | one runner, `-n 2` | {n} runners, cache empty (writing) "
        f"| {n} fresh runners, same commit |",
        "| --- | ---: | ---: | ---: |",
        f"| wall, s (shards, then `publish-index`) | {one['seconds']:.1f} "
        f"| {first['wall']:.1f} ({first['shards_wall']:.1f} + {first['publish_index']:.1f}) "
        f"| {second['wall']:.1f} ({second['shards_wall']:.1f} + "
        f"{second['publish_index']:.1f}) |",
        f"| one runner's wall, s | {one['seconds']:.1f} | {spread(first, 'seconds')} "
        f"| {spread(second, 'seconds')} |",
        f"| one runner's CPU, s | {one['cpu']:.1f} | {spread(first, 'cpu')} "
        f"| {spread(second, 'cpu')} |",
        f"| compiles (distinct inputs) | {one['compiles']} ({one['compiles']}) "
        f"| {first['compiles']} ({first['distinct']}) | {second['compiles']} |",
        f"| build cache hits | 0 | {first['cache_hits']} | {second['cache_hits']} |",
        f"| bytes to the cache | 0 | {_mib(first['cache_sent'])} "
        f"| {_mib(second['cache_sent'])} |",
        f"| bytes from the cache | - | {_mib(first['cache_received'])} "
        f"| {_mib(second['cache_received'])} |",
        f"| requests to the cache | - | {first['cache_requests']} "
        f"| {second['cache_requests']} |",
        "",
        f"The cache holds {r['cache_entries']} entries ({_mib(r['cache_entry_bytes'])}) naming "
        f"{r['cache_files']} files ({_mib(r['cache_file_bytes'])}), stored as "
        f"{r['cache_blobs']} blobs ({_mib(r['cache_blob_bytes'])}). Every index digest equals "
        f"the single runner's ({r['index'][:19]}…). Bytes are on the wire (HTTP included), "
        "counted by a TCP proxy in front of the cache only. The runners share this "
        "machine's CPUs, so the fleet's wall is the same work on the same CPUs; on machines "
        "of their own each runner's share of the work is its CPU time.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet")
    parser.add_argument("--targets", type=int, default=TARGETS)
    parser.add_argument("--runners", type=int, default=RUNNERS)
    parser.add_argument("--files", type=int, default=FILES)
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args()
    if args.keep:
        shutil.rmtree(args.keep, ignore_errors=True)
        args.keep.mkdir(parents=True)
    with (contextlib.nullcontext(str(args.keep)) if args.keep
          else tempfile.TemporaryDirectory(prefix="esp32tasks-fleet-")) as tmp:
        print(table(measure(Path(tmp), args.files, args.targets, args.runners)))


if __name__ == "__main__":
    main()
