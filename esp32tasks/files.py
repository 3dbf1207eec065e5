"""File I/O every package shares: atomic writes and SHA-256 of a file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["remove", "sha256_file", "write_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    Temp file in the same directory, fsync, rename: a killed process never leaves a torn
    file under the final name.
    """
    import tempfile  # not on a no-op release's path: it writes nothing

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).chmod(0o644)  # mkstemp makes 0600; receipts and blobs are not secret
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove(*paths: Path) -> None:
    """Remove files that may not be there (a task's receipts before it works)."""
    for path in paths:
        path.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
