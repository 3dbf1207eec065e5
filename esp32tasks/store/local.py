"""The embedded default store: the S3 key layout under a local directory."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from pathlib import Path

from esp32tasks.files import copy_atomic, sha256_file, write_atomic

__all__ = ["DirStore"]


class DirStore:
    """A directory holding the store's keys as files (a working copy: any revision goes)."""

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
        # temp file, fsync, rename: a full disk or a kill leaves no torn object, and no temp
        copy_atomic(path, self.root / key)
        return True

    def put_files(self, files: Sequence[tuple[str, Path, str]], *,
                  overwrite: Collection[str] = ()) -> list[bool]:
        return [self.put_file(key, path, sha256, check=key not in overwrite)
                for key, path, sha256 in files]

    def directories(self, prefix: str) -> list[str]:
        try:
            return sorted(p.name for p in (self.root / prefix).iterdir() if p.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

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
