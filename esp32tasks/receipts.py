"""Typed receipts: the facts each task hands the next, one frozen dataclass per kind.

A receipt is a task's target, a small JSON file in ``build/receipts/``. It appears whole
(temp file + rename) only after the work it describes is done, so a task that failed or
was killed leaves nothing a rerun would trust. :func:`write` and :func:`read` are the one
pair that touches the files; nothing else subscripts receipt data.

Each file carries its ``kind`` and ``schema`` (:mod:`esp32tasks.receiptfile`). A receipt
that is missing, unreadable, of another kind, of another schema version or of the wrong
shape is *stale*: :func:`read` answers None; the producing task's ``uptodate`` check
(:func:`esp32tasks.receiptfile.all_current`) makes it run again; a consumer that needs it
gets :class:`~esp32tasks.errors.StaleReceipt` from :func:`load`, which says the command
that fixes it and removes the file so that the command does. Never a traceback.

Importing this module creates its dataclasses (about 15 ms): action modules import it
when an action runs, so a no-op release never does.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from esp32tasks.errors import StaleReceipt
from esp32tasks.files import write_atomic
from esp32tasks.receiptfile import SCHEMAS, has_schema

__all__ = [
    "AppDesc",
    "AppReceipt",
    "Artifact",
    "BuildReceipt",
    "Child",
    "DeltaReceipt",
    "Descriptor",
    "Firmware",
    "ImageReceipt",
    "IndexReceipt",
    "PatchRecord",
    "PushDeltaReceipt",
    "PushIndexReceipt",
    "PushReceipt",
    "Receipt",
    "StoredObject",
    "UploadReceipt",
    "decode",
    "encode",
    "load",
    "read",
    "write",
]


class Receipt:
    """Base of every receipt kind; ``KIND`` goes into the file with its schema version."""

    __slots__ = ()
    KIND: ClassVar[str]


R = TypeVar("R", bound=Receipt)


# -- parts --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, slots=True)
class Descriptor:
    """An OCI content descriptor (what the layout and the registry hold)."""

    media_type: str
    digest: str
    size: int

    def oci(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True, kw_only=True, slots=True)
class Artifact:
    """One build output: what it is, where it is (root-relative), its size and SHA-256."""

    kind: str
    name: str
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True, slots=True)
class AppDesc:
    """What the app image's ``esp_app_desc_t`` says."""

    version: str
    project_name: str
    elf_sha256: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Firmware:
    """The file an image carries under ``firmware/``."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Child:
    """One target's image as an index lists it."""

    target: str
    tag: str
    digest: str


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredObject:
    key: str
    sha256: str
    size: int


@dataclass(frozen=True, kw_only=True, slots=True)
class PatchRecord:
    """One delta OTA patch: from the base version's app (as published) to this one."""

    base: str
    """The base version."""
    base_app_sha256: str
    """SHA-256 of the base app's bytes, as its release.json lists them."""
    base_hash: str
    """The patch header's base hash (esptool's validation hash of the base app)."""
    base_manifest: str
    """The digest of the base's per-target image manifest, as its release.json lists it."""
    name: str
    path: str
    """Root-relative: ``build/delta/<step>/from-<base>.patch``."""
    size: int
    sha256: str
    ratio: float
    """The patch's size over the new app's."""


# -- kinds --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True, slots=True)
class BuildReceipt(Receipt):
    """``build:<t>``: every artifact of the build (the upload's input)."""

    KIND: ClassVar[str] = "build"
    target: str
    chip: str
    artifacts: tuple[Artifact, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class AppReceipt(Receipt):
    """``build:<t>``: the app binary alone (the image's input), so that a changed ELF or map
    file cannot re-pack the image."""

    KIND: ClassVar[str] = "app"
    target: str
    chip: str
    app: Artifact
    app_desc: AppDesc


@dataclass(frozen=True, kw_only=True, slots=True)
class ImageReceipt(Receipt):
    """``tag:<t>``: the target's image in the local layout, under its per-commit tag."""

    KIND: ClassVar[str] = "image"
    target: str
    tag: str
    manifest: Descriptor
    config: Descriptor
    layer: Descriptor
    firmware: Firmware

    @property
    def blobs(self) -> tuple[Descriptor, Descriptor]:
        return (self.layer, self.config)


@dataclass(frozen=True, kw_only=True, slots=True)
class IndexReceipt(Receipt):
    """``index``: the image index of every target in the local layout."""

    KIND: ClassVar[str] = "index"
    tag: str
    index: Descriptor
    targets: tuple[Child, ...]

    def child(self, target: str) -> Child | None:
        return next((c for c in self.targets if c.target == target), None)


@dataclass(frozen=True, kw_only=True, slots=True)
class DeltaReceipt(Receipt):
    """``delta:<t>``: the patches made for this app, and the bases left out and why."""

    KIND: ClassVar[str] = "delta"
    target: str
    app_sha256: str
    """The new app's SHA-256 (what every patch makes)."""
    patches: tuple[PatchRecord, ...]
    skipped: tuple[tuple[str, str], ...]
    """(base, why): a patch not smaller than ``max_ratio`` of the app."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PushDeltaReceipt(Receipt):
    """``push-delta:<t>``: the patches pushed as referrers of the target's image."""

    KIND: ClassVar[str] = "push-delta"
    target: str
    repository: str
    subject: str
    """The image manifest's digest."""
    artifacts: tuple[str, ...]
    """Each patch artifact's manifest digest."""
    fallback: bool
    """Listed in the ``sha256-<hex>`` tag's index (no referrers API)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class UploadReceipt(Receipt):
    """``upload:<t>``: what the store held for this target after our upload."""

    KIND: ClassVar[str] = "upload"
    target: str
    store: str
    """Where (``s3://bucket/prefix`` or a directory), never with credentials."""
    endpoint: str
    build: str
    """SHA-256 of the build receipt this upload sent."""
    objects: tuple[StoredObject, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class PushReceipt(Receipt):
    """``push:<t>``: the tag we pushed, and the digests our pushes put in the repository."""

    KIND: ClassVar[str] = "push"
    target: str
    repository: str
    tag: str
    digest: str
    pushed: tuple[str, ...]
    """Manifest and blob digests this target's pushes put there, newest first."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PushIndexReceipt(Receipt):
    """``push-index``: the index tag in the registry and the children it names."""

    KIND: ClassVar[str] = "push-index"
    repository: str
    tag: str
    digest: str
    targets: tuple[Child, ...]


# -- the one reader and writer ------------------------------------------------------------

def write(path: Path, receipt: Receipt) -> None:
    """Stable JSON (sorted keys), so equal facts give byte-equal files and doit sees no
    change."""
    write_atomic(path, encode(receipt))


def encode(receipt: Receipt) -> bytes:
    """A receipt file's bytes."""
    data = {"kind": receipt.KIND, "schema": SCHEMAS[receipt.KIND], **_encode(receipt)}
    return json.dumps(data, indent=2, sort_keys=True).encode() + b"\n"


def read(path: Path, kind: type[R]) -> R | None:
    """The receipt at ``path``, or None when it is stale (missing, unreadable, another kind
    or schema, the wrong shape)."""
    try:
        return decode(path.read_bytes(), kind)
    except OSError:
        return None


def decode(raw: bytes, kind: type[R]) -> R | None:
    """:func:`read` of a receipt file's bytes (one from the build cache, or a shard's)."""
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("kind") != kind.KIND \
            or not has_schema(data, kind.KIND):
        return None
    del data["kind"], data["schema"]
    try:
        return _decode(kind, data)  # type: ignore[no-any-return]
    except _Invalid:
        return None


def load(path: Path, kind: type[R], label: str) -> R:
    """:func:`read` for a task's input: a stale receipt is an error that says the fix.

    The stale file is removed, so that its producer runs again (its target is missing)
    and the advice holds. ``label`` names the file for the user
    (``build/receipts/app-esp32c3.json``).
    """
    receipt = read(path, kind)
    if receipt is None:
        path.unlink(missing_ok=True)
        raise StaleReceipt(f"{label} is missing or was written by another esp32tasks "
                           "version; run `doit release` again (the task that makes it runs "
                           "first)")
    return receipt


class _Invalid(Exception):  # control flow: never leaves this module
    pass


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


@functools.cache
def _fields(kind: type) -> dict[str, Any]:
    hints = typing.get_type_hints(kind)
    return {f.name: hints[f.name] for f in dataclasses.fields(kind)}


def _decode(kind: Any, value: Any) -> Any:
    if kind in (str, int, bool):
        # bool is an int in Python: keep the two apart
        if type(value) is not kind:
            raise _Invalid
        return value
    if kind is float:
        if type(value) not in (int, float):
            raise _Invalid
        return float(value)
    if typing.get_origin(kind) is tuple:
        item, *_ = typing.get_args(kind)
        if not isinstance(value, list):
            raise _Invalid
        return tuple(_decode(item, v) for v in value)
    if dataclasses.is_dataclass(kind):
        fields = _fields(kind)  # type: ignore[arg-type]
        if not isinstance(value, dict) or value.keys() != fields.keys():
            raise _Invalid
        return kind(**{name: _decode(fields[name], value[name]) for name in fields})  # type: ignore[operator]
    raise _Invalid  # a field type this module does not know: a bug, read as stale
