"""Small JSON files that pass facts between tasks, written atomically.

A receipt is a task's target: it appears whole (temp file + rename) only after the
work it describes is done, so a task that failed or was killed leaves nothing a rerun
would trust.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from esp32tasks.errors import PublishError

__all__ = ["read_json", "read_previous", "remove", "write_atomic", "write_json"]


def write_atomic(path: Path, data: bytes) -> None:
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


def write_json(path: Path, value: Any) -> None:
    """Stable JSON (sorted keys), so equal facts give byte-equal files and doit sees no change."""
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True).encode() + b"\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise PublishError(f"{path} is missing; run `doit release` to recreate it") from None
    except json.JSONDecodeError as exc:
        raise PublishError(f"{path} is corrupt ({exc}); delete it and run `doit release`") \
            from None


def read_previous(path: Path) -> dict[str, Any] | None:
    """A task's last receipt, read before it is replaced; None when missing or unreadable.

    It only ever saves work (what was pushed or uploaded before), so an unknown past is
    never an error: the task then does the full, checked job.
    """
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
