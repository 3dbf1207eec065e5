"""File I/O every package shares: atomic writes and copies, removal, SHA-256 of a file.

A write that fails (a full disk, a directory where the file belongs) leaves no temp file
behind and raises the :class:`OSError` naming the file it was writing, not its temp file:
the message the boundary makes of it names what the user knows.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["copy_atomic", "remove", "sha256_file", "write_atomic"]

_CHUNK = 1 << 20


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    Temp file in the same directory, fsync, rename: a killed process never leaves a torn
    file under the final name.
    """
    with _replacing(path) as out:
        out.write(data)


def copy_atomic(source: Path, path: Path) -> None:
    """Copy the file ``source`` to ``path`` as :func:`write_atomic` writes."""
    with source.open("rb") as src, _replacing(path) as out:
        while chunk := _read(src, source):
            out.write(chunk)


def _read(src: BinaryIO, source: Path) -> bytes:
    try:
        return src.read(_CHUNK)
    except OSError as exc:
        exc.filename = str(source)  # a read error is the source's, not the copy's
        raise


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[BinaryIO]:
    """A temp file beside ``path``; fsynced and renamed over it when the block succeeds."""
    import tempfile  # not on a no-op release's path: it writes nothing

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file where a directory belongs
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR),
                                 str(path)) from exc
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        exc.filename = str(path)  # not the random temp name
        raise
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).chmod(0o644)  # mkstemp makes 0600; receipts and blobs are not secret
        Path(tmp).replace(path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None or exc.filename == tmp:
            exc.filename, exc.filename2 = str(path), None  # what we were writing
        raise
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
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
