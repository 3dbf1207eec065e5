"""The local scenarios: cold build, no-op vs doit's floor, one source file changed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import synth
from bench.compiles import CompileLog
from bench.doitrun import Runner, executed
from bench.proc import BenchError, timed
from bench.stats import summary

__all__ = ["Prepared", "cold", "noop", "one_change"]


class Prepared:
    """A synthetic repo, built once, with the floor ready."""

    def __init__(self, workdir: Path, files: int, targets: int, *, extra_toml: str = "",
                 extra_env: dict[str, str] | None = None, blob_bytes: int = 0) -> None:
        self.synth = synth.create(workdir / "repo", files, targets, extra_toml=extra_toml,
                                  blob_bytes=blob_bytes)
        self.cc = CompileLog(workdir / "cc")
        self.runner = Runner(root=self.synth.root, cc=self.cc,
                             extra_env=tuple(sorted((extra_env or {}).items())))
        self.salt = 0


def cold(p: Prepared) -> dict[str, Any]:
    """The first release: every file compiled for every target (once per size)."""
    start = time.perf_counter()
    p.runner.release()
    seconds = time.perf_counter() - start
    compiles = len(p.cc.compiles())
    again = p.runner.release()
    if executed(again):
        raise BenchError(f"the second release was not a no-op: ran {executed(again)}")
    tasks = p.runner.prepare_floor()
    return {"seconds": seconds, "compiles": compiles, "tasks": tasks,
            "file_dep": sum(1 for _ in _file_deps(p))}


def _file_deps(p: Prepared) -> list[str]:
    import json

    data = json.loads((p.synth.root / ".floor-tasks.json").read_text())
    return [f for t in data for f in t["file_dep"]]


def noop(p: Prepared, runs: int) -> dict[str, Any]:
    """No-op release vs doit's floor, interleaved so that noise hits both alike."""
    ours: list[float] = []
    floor: list[float] = []
    for _ in range(runs):
        result = p.runner.release()
        if executed(result):
            raise BenchError(f"a no-op release ran {executed(result)}")
        ours.append(result.seconds)
        floor.append(p.runner.floor().seconds)
    ratios = [o / f for o, f in zip(ours, floor, strict=True)]
    return {"ours": summary(ours), "floor": summary(floor), "ratio": summary(ratios)}


def one_change(p: Prepared, runs: int, *, shared: bool) -> dict[str, Any]:
    """Change (and commit) one C file's code, release; count compiles of that file.

    ``shared``: a generated file every target compiles; otherwise one target's own file.
    """
    seconds: list[float] = []
    alone: list[float] = []
    compiles_of_file: list[int] = []
    compiles_total: list[int] = []
    name, _ = p.synth.targets[0]
    expected = len(p.synth.targets) if shared else 1
    for _ in range(runs):
        p.salt += 1
        if shared:
            path = p.synth.gen_file(0)
            path.write_text(synth.gen_source(0, salt=p.salt))
        else:
            path = p.synth.own_file(name)
            path.write_text(synth.own_source(name, salt=p.salt))
        synth.commit(p.synth.root, f"change {path.name}")
        p.cc.clear()
        seconds.append(p.runner.release().seconds)
        calls = [c for c in p.cc.compiles() if CompileLog.source(c).endswith(path.name)]
        compiles_of_file.append(len(calls))
        compiles_total.append(len(p.cc.compiles()))
        if calls:
            argv = [p.cc.real, *calls[0]]
            out = argv.index("-o") + 1
            argv[out] = str(p.cc.log.parent / "alone.o")
            argv = [a for a in argv if a not in ("-MMD",)]
            if "-MF" in argv:
                i = argv.index("-MF")
                del argv[i:i + 2]
            alone.append(timed(argv, cwd=p.synth.app).seconds)
    return {
        "file": path.relative_to(p.synth.root).as_posix(),
        "targets_using_it": expected,
        "compiles_of_file": compiles_of_file,
        "compiles_total": compiles_total,
        "compiles_match": all(c == expected for c in compiles_of_file),
        "wall": summary(seconds),
        "compile_alone": summary(alone) if alone else None,
    }
