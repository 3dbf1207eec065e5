"""The remote build cache: a task's outputs by the digest of its inputs, in a store.

An entry is a small manifest, ``entries/<hex>.json``, naming content-addressed blobs,
``blobs/sha256/<hex>`` (shared by entries: a bootloader that did not change is stored
once), and the task's receipts. Blobs go up first and the manifest last, so a killed
writer leaves no entry, only blobs nobody names.

Trust: reads are always allowed; writes only with ``ESP32TASKS_CACHE_WRITE`` (trusted
branches). With ``ESP32TASKS_CACHE_KEY`` every manifest carries an HMAC-SHA256 over its
canonical bytes, and a keyed reader ignores every entry without a valid one, so a job that
may read but not write (a pull request) cannot plant outputs a release then trusts. Each
blob is checked by its SHA-256 before anything is written, and everything lands in the
task's own directory only: a corrupt, partial or foreign entry is one warning and a
compile, never a half-restored build.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from esp32tasks.config import CacheConfig
from esp32tasks.errors import Esp32TasksError
from esp32tasks.files import sha256_file, write_atomic
from esp32tasks.runcache import per_run
from esp32tasks.store import open_store
from esp32tasks.store.base import Store

__all__ = ["FORMAT", "Cache", "CachedFile", "Entry", "canonical", "for_run", "input_digest"]

FORMAT: Final = "esp32tasks.cache-entry/v1"
_HMAC: Final = "hmac-sha256:"


def canonical(doc: Any) -> bytes:
    """The bytes a digest or an HMAC is taken over: sorted keys, no blanks."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def input_digest(doc: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of a task's inputs, described as JSON."""
    return "sha256:" + hashlib.sha256(canonical(doc)).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedFile:
    path: str
    """Root-relative, ``/``-separated."""
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Entry:
    """What a cache entry says a task made."""

    input: str
    task: str
    files: tuple[CachedFile, ...]
    receipts: Mapping[str, bytes]
    """The task's receipt files, by role (``build``, ``app``), byte for byte."""


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: cache: {message}\n")


@per_run
def _told() -> set[str]:
    """Once-per-run notices already printed."""
    return set()


def _once(token: str, message: str) -> None:
    if token not in _told():
        _told().add(token)
        _warn(message)


class Cache:
    """One run's view of the build cache: where it is, whether it may write, its key."""

    def __init__(self, config: CacheConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.where = store.describe()

    # -- reading --------------------------------------------------------------------

    def lookup(self, digest: str, task: str) -> Entry | None:
        """The entry for ``digest``, if there is one this run may trust; a bad one is one
        warning and None."""
        key = _entry_key(digest)
        if not self.config.key:
            _once("unkeyed", f"ESP32TASKS_CACHE_KEY is not set: entries of {self.where} are "
                  "used without proof of who wrote them (only each file's SHA-256 is "
                  "checked); set it where trusted jobs read and write the cache")
        try:
            raw = self.store.get_bytes(key)
        except (Esp32TasksError, OSError) as exc:
            _once("unreadable", f"{self.where} cannot be read ({_first_line(exc)}); "
                  "building without it")
            return None
        if raw is None:
            return None
        try:
            return self._parse(raw, digest, task)
        except _Bad as exc:
            _warn(f"{task}: entry {self.store.describe(key)} ignored: {exc}; compiling")
            return None

    def _parse(self, raw: bytes, digest: str, task: str) -> Entry:
        try:
            doc = json.loads(raw)
        except ValueError:
            raise _Bad("not JSON (a torn or foreign write)") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise _Bad(f"not an {FORMAT} manifest")
        if self.config.key:
            mac = doc.pop("hmac", None)
            if not isinstance(mac, str) or not hmac.compare_digest(
                    mac, _HMAC + self._mac(doc)):
                raise _Bad("no valid HMAC under ESP32TASKS_CACHE_KEY (written without the "
                           "key, or with another)")
        if doc.get("input") != digest:
            raise _Bad(f"it is the entry of {str(doc.get('input'))[:19]}…, not of this input")
        files, receipts = doc.get("files"), doc.get("receipts")
        if not isinstance(files, list) or not isinstance(receipts, dict):
            raise _Bad("it lists no files or receipts")
        found = []
        for item in files:
            if not isinstance(item, dict) or not _safe(item.get("path")) \
                    or type(item.get("size")) is not int \
                    or not _is_hex(item.get("sha256")):
                raise _Bad("a file entry is malformed or points outside the checkout")
            found.append(CachedFile(item["path"], item["size"], item["sha256"]))
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in receipts.items()):
            raise _Bad("its receipts are malformed")
        return Entry(input=digest, task=task, files=tuple(found),
                     receipts={k: v.encode() for k, v in receipts.items()})

    def restore(self, entry: Entry, root: Path, own: PurePosixPath) -> bool:
        """Every file of ``entry`` in place: those under ``own`` (the task's directory)
        downloaded, each checked by SHA-256 before any is written; those elsewhere (a
        source, another task's output) must already be there with the same bytes. False,
        with one warning, when any is not (nothing is written then)."""
        fetched: list[tuple[Path, bytes]] = []
        for item in entry.files:
            path = root / item.path
            if not PurePosixPath(item.path).is_relative_to(own):
                if not _holds(path, item):
                    _warn(f"{entry.task}: entry of {entry.input[:19]}… names {item.path} with "
                          "other bytes than this checkout's; compiling")
                    return False
                continue
            blob = _blob_key(item.sha256)
            try:
                data = self.store.get_bytes(blob)
            except (Esp32TasksError, OSError) as exc:
                _warn(f"{entry.task}: {self.store.describe(blob)} cannot be read "
                      f"({_first_line(exc)}); compiling")
                return False
            if data is None or len(data) != item.size \
                    or hashlib.sha256(data).hexdigest() != item.sha256:
                what = "is missing (a partial entry)" if data is None else \
                    "does not hash to its name (corrupt)"
                _warn(f"{entry.task}: {self.store.describe(blob)} {what}; compiling")
                return False
            fetched.append((path, data))
        for path, data in fetched:
            write_atomic(path, data)
        return True

    # -- writing --------------------------------------------------------------------

    def save(self, digest: str, task: str, root: Path, files: Iterable[str],
             receipts: Mapping[str, Path]) -> None:
        """After a compile (with ``ESP32TASKS_CACHE_WRITE`` only): the files' blobs, then
        the manifest. A refused write is one warning; the build stands."""
        if not self.config.write:
            return
        items = [CachedFile(f, (root / f).stat().st_size, sha256_file(root / f))
                 for f in dict.fromkeys(files)]
        doc: dict[str, Any] = {
            "format": FORMAT, "input": digest, "task": task,
            "files": [{"path": i.path, "size": i.size, "sha256": i.sha256} for i in items],
            "receipts": {role: path.read_text() for role, path in receipts.items()},
        }
        if self.config.key:
            doc["hmac"] = _HMAC + self._mac(doc)
        try:
            self.store.put_files([(_blob_key(i.sha256), root / i.path, i.sha256)
                                  for i in items])
            self.store.put_bytes(_entry_key(digest), json.dumps(doc, indent=1,
                                                               sort_keys=True).encode())
        except (Esp32TasksError, OSError) as exc:
            _warn(f"{task}: not saved to {self.where} ({_first_line(exc)}); the build "
                  "stands")

    def _mac(self, doc: Mapping[str, Any]) -> str:
        body = {k: v for k, v in doc.items() if k != "hmac"}
        return hmac.new(self.config.key, canonical(body), hashlib.sha256).hexdigest()


class _Bad(Exception):  # control flow: an entry not to use, and why
    pass


def _entry_key(digest: str) -> str:
    return f"entries/{digest.removeprefix('sha256:')}.json"


def _blob_key(sha256: str) -> str:
    return f"blobs/sha256/{sha256}"


def _is_hex(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and \
        all(c in "0123456789abcdef" for c in value)


def _safe(path: object) -> bool:
    """A relative path with no ``..``, no empty or dot part: never outside the checkout."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _holds(path: Path, item: CachedFile) -> bool:
    try:
        return os.stat(path).st_size == item.size and sha256_file(path) == item.sha256  # noqa: PTH116
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@per_run
def _caches() -> dict[tuple[str, str], Cache]:
    return {}


def for_run(config: CacheConfig, root: Path) -> Cache:
    """This run's :class:`Cache` for ``config`` (one store client per run)."""
    token = (config.store.url, config.store.endpoint_url or "")
    found = _caches().get(token)
    if found is None:
        found = _caches()[token] = Cache(config, open_store(config.store, root))
    return found

