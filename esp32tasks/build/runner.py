"""Every external command goes through :func:`run`: argv lists, no shell, one error type."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from esp32tasks.errors import CommandFailed

__all__ = ["run", "tail"]

TAIL_LINES = 20


def run(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path,
        log_label: str, task: str | None = None) -> None:
    """Run ``argv`` with stdout and stderr going to ``log``; raise :class:`CommandFailed`.

    ``log_label`` is how messages name the log (e.g. ``build/esp32c3/build.log``). With
    ``task`` (``build:esp32c3``), the run shows its output or that it is alive on the
    streams doit lets through (:mod:`esp32tasks.build.progress`; streamed lines are
    prefixed with the name after the colon, ``esp32c3 | ``). The log is the command's own
    either way: the command writes it.
    """
    if not cwd.is_dir():
        raise CommandFailed(f"cannot run '{argv[0]}': its working directory {cwd} does not "
                            "exist; check [project] app_dir in targets.toml")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        out.write(("$ " + " ".join(argv) + "\n").encode())
        out.flush()
        with _view(task, log, out.tell()):
            try:
                code = subprocess.run(list(argv), cwd=cwd, env=dict(env), stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      check=False).returncode
            except FileNotFoundError:
                raise CommandFailed(
                    f"command not found: '{argv[0]}'; install it or fix the command "
                    "in targets.toml ([builder] command)") from None
            except PermissionError:
                raise CommandFailed(f"'{argv[0]}' is not executable; chmod +x it or fix "
                                    "the command in targets.toml ([builder] command)") from None
    if code != 0:
        raise CommandFailed(f"'{argv[0]}' exited with code {code}; last lines of "
                            f"{log_label}:\n{tail(log)}")


def _view(task: str | None, log: Path, offset: int) -> AbstractContextManager[None]:
    if task is None:
        return nullcontext()
    from esp32tasks.build import progress  # only when a command runs: never on a no-op

    # doit swaps these for the action's run: what they reach is what it lets through
    return progress.show(task, log, offset, sys.stdout, sys.stderr)


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    text = path.read_bytes().decode(errors="replace").rstrip("\n").splitlines()
    return "\n".join("    " + line for line in text[-lines:])
