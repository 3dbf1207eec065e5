"""What every store is: the :class:`Store` protocol, and the content type of an object."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol

__all__ = ["Store", "content_type"]

_CONTENT_TYPES = {
    ".bin": "application/octet-stream",
    ".elf": "application/x-elf",
    ".json": "application/json",
    ".csv": "text/csv",
    ".map": "text/plain",
}


def content_type(name: str) -> str:
    if name == "sdkconfig":
        return "text/plain"
    return _CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")


class Store(Protocol):
    """Keys are ``/``-separated and relative to the store's base (directory or S3 prefix)."""

    def describe(self, key: str = "") -> str:
        """Where ``key`` lives, for messages and receipts (never with credentials)."""
        ...

    def put_file(self, key: str, path: Path, sha256: str, *, check: bool = True) -> bool:
        """Store the file unless ``key`` already holds ``sha256``; True when it was sent.

        ``check=False``: the caller knows ``key`` holds other bytes (its last upload
        receipt says so), so the file is sent without asking first.
        """
        ...

    def put_files(self, files: Sequence[tuple[str, Path, str]], *,
                  overwrite: Collection[str] = ()) -> list[bool]:
        """:meth:`put_file` for each ``(key, path, sha256)``, perhaps several at a time;
        keys in ``overwrite`` with ``check=False``."""
        ...

    def directories(self, prefix: str) -> list[str]:
        """The names directly under ``prefix`` (``a/`` of ``a/b``), sorted; none when
        nothing is there."""
        ...

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        ...

    def put_bytes(self, key: str, data: bytes, *, check: bool = True) -> bool:
        """Store ``data`` unless ``key`` already holds the same bytes; True when sent.

        ``check=False``: send without asking (the caller has just read other bytes there).
        """
        ...
