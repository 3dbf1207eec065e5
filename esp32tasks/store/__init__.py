"""Where artifacts go: the :class:`~.base.Store` protocol, a local directory by default,
S3 by URL scheme (:func:`open_store`)."""

from __future__ import annotations

from pathlib import Path

from esp32tasks.config import StoreConfig
from esp32tasks.store.base import Store
from esp32tasks.store.local import DirStore

__all__ = ["Store", "open_store"]


def open_store(config: StoreConfig, root: Path) -> Store:
    """The store ``config`` names; relative directories are relative to ``root``."""
    if config.is_s3:
        from esp32tasks.store.s3 import S3Store  # boto3 costs more than doit's whole no-op

        return S3Store.from_config(config)
    return DirStore(root / config.url)
