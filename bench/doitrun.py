"""Running ``doit`` (ours and the floor) in a synthetic repo, as a user would."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import floor
from bench.compiles import CompileLog
from bench.proc import Timed, run, timed

__all__ = ["Runner"]

BENCH_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, kw_only=True, slots=True)
class Runner:
    root: Path
    cc: CompileLog
    extra_env: tuple[tuple[str, str], ...] = ()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["CC"] = str(self.cc.wrapper)
        env.pop("PYTHONPATH", None)
        # As a user has it: modules load from cached bytecode (pip writes it at install;
        # an editable install writes it on first import), for ours and the floor alike.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def release(self, *args: str) -> Timed:
        """``doit release``: the whole process, Python start included."""
        return timed([sys.executable, "-m", "doit", "release", *args], cwd=self.root,
                     env=self.env())

    def floor(self) -> Timed:
        return timed([sys.executable, "-m", "doit", "-f", floor.DODO], cwd=self.root,
                     env=self.env())

    def prepare_floor(self) -> int:
        """Export our tasks, write the floor dodo and bring its state up to date."""
        env = self.env()
        env["PYTHONPATH"] = str(BENCH_ROOT)
        count = int(run([sys.executable, "-m", "bench.floor", floor.TASKS], cwd=self.root,
                        env=env).strip())
        floor.write_dodo(self.root)
        self.floor()
        return count


def executed(result: Timed) -> list[str]:
    """Tasks whose actions ran (doit prints ``.  name``; up-to-date ones ``-- name``)."""
    return [line[3:] for line in (result.stdout + result.stderr).splitlines()
            if line.startswith(".  ")]
