"""Counting real compiles: ``$CC`` points at a wrapper that logs each argv, then runs gcc."""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["CompileLog"]

_END = "--bench-end--"
_WRAPPER = """#!/bin/sh
# benchmark: log this compiler call (one printf, one write), then run the real compiler
printf '%s\\0' "$@" "{end}" >> "{log}"
exec "{cc}" "$@"
"""


class CompileLog:
    """A compiler wrapper and its log, in ``directory``."""

    def __init__(self, directory: Path, cc: str = "riscv64-unknown-elf-gcc") -> None:
        real = shutil.which(cc)
        if real is None:
            raise FileNotFoundError(f"{cc} is not installed (apt-get install "
                                    "gcc-riscv64-unknown-elf)")
        self.real = real
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "compiles.log"
        self.wrapper = directory / "cc"
        self.wrapper.write_text(_WRAPPER.format(end=_END, log=self.log, cc=real))
        self.wrapper.chmod(0o755)
        self.log.write_bytes(b"")

    def calls(self) -> list[list[str]]:
        """Every compiler argv so far."""
        items = self.log.read_bytes().decode(errors="replace").split("\0")
        calls: list[list[str]] = []
        current: list[str] = []
        for item in items:
            if item == _END:
                calls.append(current)
                current = []
            elif item or current:
                current.append(item)
        return calls

    def compiles(self) -> list[list[str]]:
        """Calls that compile (``-c``), not links."""
        return [c for c in self.calls() if "-c" in c]

    def clear(self) -> None:
        self.log.write_bytes(b"")

    @staticmethod
    def source(argv: list[str]) -> str:
        return argv[argv.index("-c") + 1]
