"""A real git repository holding the bundled example, and doit runs in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from esp32tasks.receipts import Receipt, read

R = TypeVar("R", bound=Receipt)

__all__ = ["EXAMPLE_FILES", "GIT_ENV", "ROOT", "TARGETS", "Repo", "Run", "copy_example",
           "receipt"]

ROOT = Path(__file__).resolve().parents[2]  # tests/support/repo.py -> the checkout
EXAMPLE_FILES = ("dodo.py", "targets.toml", ".gitignore", "examples/hello")
#: The bundled example's targets, in targets.toml's order.
TARGETS = ("esp32c3", "esp32c6", "esp32h2")

# Fixed identities and dates: the same tree gives the same commit, in any clone.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "esp32tasks tests",
    "GIT_AUTHOR_EMAIL": "tests@esp32tasks.invalid",
    "GIT_COMMITTER_NAME": "esp32tasks tests",
    "GIT_COMMITTER_EMAIL": "tests@esp32tasks.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def ran(self) -> list[str]:
        """Tasks whose actions ran (doit prints `.  name` for those, `-- name` when skipped)."""
        return [line[3:] for line in self.stdout.splitlines() if line.startswith(".  ")]

    @property
    def executed(self) -> list[str]:
        """:attr:`ran`, but for ``preflight``: the check before publishing writes nothing,
        and runs whenever something is published (tests/integration/test_preflight.py)."""
        return [name for name in self.ran if name != "preflight"]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Repo:
    path: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *argv: str, check: bool = True, cwd: Path | None = None) -> Run:
        env = {**os.environ, **GIT_ENV, "HOME": str(self.path.parent / "home"), **self.env}
        proc = subprocess.run(argv, cwd=cwd or self.path, env=env, capture_output=True,
                              text=True, check=False, timeout=600)
        result = Run(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} exited {proc.returncode}:\n{result.output}")
        return result

    def doit(self, *args: str, check: bool = True) -> Run:
        return self.run(sys.executable, "-m", "doit", *args, check=check)

    def git(self, *args: str) -> str:
        return self.run("git", *args).stdout.strip()

    def commit(self, message: str = "change") -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def write(self, relative: str, text: str) -> Path:
        path = self.path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def read(self, relative: str) -> str:
        return (self.path / relative).read_text()

    def edit(self, relative: str, old: str, new: str) -> None:
        text = self.read(relative)
        assert old in text, f"{old!r} not in {relative}"
        self.write(relative, text.replace(old, new, 1))

    def clone(self, dest: Path) -> Repo:
        subprocess.run(["git", "clone", "-q", str(self.path), str(dest)], check=True,
                       env={**os.environ, **GIT_ENV})
        return Repo(dest, dict(self.env))


def copy_example(dest: Path) -> None:
    for name in EXAMPLE_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns(
                "build", "__pycache__", "*.pyc"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def receipt(repo: Repo, name: str, kind: type[R]) -> R:
    """The typed receipt ``build/receipts/<name>.json`` (``image-esp32c3``, ``index``...)."""
    path = repo.path / "build" / "receipts" / f"{name}.json"
    found = read(path, kind)
    assert found is not None, f"{path} is missing or stale"
    return found
