"""The frame of a receipt file: its ``kind`` and ``schema``, checked without the dataclasses.

A no-op release checks every receipt's frame (the producer's ``uptodate``) and nothing
more, so it need not import :mod:`esp32tasks.receipts` (creating its dataclasses costs
more than the check). The body's shape is checked by :func:`esp32tasks.receipts.load`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Final

__all__ = ["SCHEMAS", "all_current", "has_schema", "is_current"]

#: Receipt kind -> the schema version this esp32tasks writes (bump on any change of shape).
SCHEMAS: Final = {"build": 1, "app": 1, "image": 1, "index": 1, "upload": 1, "push": 1,
                  "push-index": 1, "delta": 1, "push-delta": 1}


def is_current(path: Path, kind: str) -> bool:
    """True when ``path`` is a receipt of ``kind`` in this version's schema."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == kind \
        and has_schema(data, kind)


def has_schema(data: dict[str, object], kind: str) -> bool:
    """The frame's schema is exactly this version's (an int: ``true`` or ``1.0`` is not 1)."""
    schema = data.get("schema")
    return type(schema) is int and schema == SCHEMAS[kind]


def all_current(receipts: Iterable[tuple[Path, str]]) -> bool:
    """:func:`is_current` for each ``(path, kind)``: the producer's ``uptodate`` check."""
    return all(is_current(path, kind) for path, kind in receipts)
