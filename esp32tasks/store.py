"""Where artifacts go: one interface, a local directory by default, S3 by URL scheme."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol

from esp32tasks.config import StoreConfig
from esp32tasks.receipts import write_atomic

__all__ = ["DirStore", "Store", "content_type", "open_store", "sha256_file"]

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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""
        ...

    def put_bytes(self, key: str, data: bytes, *, check: bool = True) -> bool:
        """Store ``data`` unless ``key`` already holds the same bytes; True when sent.

        ``check=False``: send without asking (the caller has just read other bytes there).
        """
        ...


class DirStore:
    """The embedded default: the S3 key layout under a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def _holds(self, key: str, sha256: str) -> bool:
        path = self.root / key
        return path.is_file() and sha256_file(path) == sha256

    def put_file(self, key: str, path: Path, sha256: str, *, check: bool = True) -> bool:
        if check and self._holds(key, sha256):
            return False
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(target)
        return True

    def put_files(self, files: Sequence[tuple[str, Path, str]], *,
                  overwrite: Collection[str] = ()) -> list[bool]:
        return [self.put_file(key, path, sha256, check=key not in overwrite)
                for key, path, sha256 in files]

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def put_bytes(self, key: str, data: bytes, *, check: bool = True) -> bool:
        if check and self._holds(key, hashlib.sha256(data).hexdigest()):
            return False
        write_atomic(self.root / key, data)
        return True


def open_store(config: StoreConfig, root: Path) -> Store:
    """The store ``config`` names; relative directories are relative to ``root``."""
    if config.is_s3:
        from esp32tasks.s3store import S3Store  # boto3 costs more than doit's whole no-op

        return S3Store.from_config(config)
    return DirStore(root / config.url)
