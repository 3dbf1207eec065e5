"""Deterministic OCI blobs, manifests and indexes, and an OCI image layout writer.

The same firmware bytes always give the same layer, config and manifest digests: tar
entries have mtime 0, uid/gid 0 and fixed modes, gzip has mtime 0 and no file name,
JSON is canonical (sorted keys, no spaces). That is what lets a device whose firmware
did not change see the same digest after a release, and lets a re-tag send no blob.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from esp32tasks.errors import PublishError
from esp32tasks.files import write_atomic

if TYPE_CHECKING:
    import tarfile

# tarfile and gzip are imported by the functions that use them: a no-op release imports
# this module (its task dicts name the actions) and would pay for them on every run.

__all__ = [
    "CONFIG_MEDIA_TYPE",
    "DELTA_ARTIFACT_TYPE",
    "DELTA_LAYER_MEDIA_TYPE",
    "EMPTY",
    "INDEX_MEDIA_TYPE",
    "LAYER_MEDIA_TYPE",
    "MANIFEST_MEDIA_TYPE",
    "Blob",
    "Image",
    "Layout",
    "canonical_json",
    "delta_artifact",
    "firmware_image",
    "image_index",
    "referrers_tag",
    "with_referrer",
]

MANIFEST_MEDIA_TYPE: Final = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE: Final = "application/vnd.oci.image.index.v1+json"
CONFIG_MEDIA_TYPE: Final = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME: Final = "org.opencontainers.image.ref.name"
#: Our own annotation in the layout's index.json: which slot (target, or the index) a ref fills.
SLOT: Final = "dev.esp32tasks.slot"
FIRMWARE_DIR: Final = "firmware"
#: A delta OTA patch as an OCI artifact (image-spec v1.1 "artifactType"): its one layer is
#: the patch itself, ESP-IDF esp_delta_ota's format (a 64-byte header, then a detools
#: sequential heatshrink patch).
DELTA_ARTIFACT_TYPE: Final = "application/vnd.esp32tasks.delta-ota.v1"
DELTA_LAYER_MEDIA_TYPE: Final = "application/vnd.esp32tasks.delta-ota.patch.v1"
#: image-spec v1.1's empty descriptor's blob (``{}``), the config of an artifact.


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data),
                **extra}


@dataclass(frozen=True, slots=True)
class Image:
    """One target's image: the manifest and the blobs it references."""

    manifest: Blob
    config: Blob
    layer: Blob

    @property
    def blobs(self) -> tuple[Blob, Blob]:
        return (self.layer, self.config)


def firmware_tar(app_name: str, firmware: bytes) -> bytes:
    """A PAX tar holding ``firmware/`` and ``firmware/<app_name>``, and nothing else."""
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo(FIRMWARE_DIR)
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        tar.addfile(_fixed(directory))
        member = tarfile.TarInfo(f"{FIRMWARE_DIR}/{app_name}")
        member.size = len(firmware)
        member.mode = 0o644
        tar.addfile(_fixed(member), io.BytesIO(firmware))
    return out.getvalue()


def _fixed(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def deterministic_gzip(data: bytes) -> bytes:
    import gzip
    import io

    out = io.BytesIO()
    # filename="" and mtime=0 keep the header free of names and times
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return out.getvalue()


def firmware_image(*, target: str, app_name: str, firmware: bytes,
                   annotations: Mapping[str, str] | None = None) -> Image:
    """The image esp32-flashjob pulls: config for ``custom``/``<target>``, one firmware layer."""
    tar = firmware_tar(app_name, firmware)
    layer = Blob(LAYER_MEDIA_TYPE, deterministic_gzip(tar))
    config = Blob(CONFIG_MEDIA_TYPE, canonical_json({
        "architecture": target,
        "os": "custom",
        "config": {},
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]},
    }))
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor(
            annotations={"org.opencontainers.image.title": f"{FIRMWARE_DIR}/{app_name}"})],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    return Image(manifest=Blob(MANIFEST_MEDIA_TYPE, canonical_json(manifest)),
                 config=config, layer=layer)


EMPTY: Final = Blob("application/vnd.oci.empty.v1+json", b"{}")
"""image-spec v1.1's empty descriptor's blob (``{}``): an artifact's config."""


def delta_artifact(*, patch: Blob, name: str, subject: Mapping[str, Any],
                   annotations: Mapping[str, str]) -> Blob:
    """The manifest of a delta OTA patch for the image ``subject`` (a descriptor): never a
    child of any index a device pulls, and its file name holds no "firmware" (which
    esp32-flashjob would take)."""
    if FIRMWARE_DIR in name:
        raise ValueError(f"a patch named {name!r} would be taken for firmware")
    return Blob(MANIFEST_MEDIA_TYPE, canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": DELTA_ARTIFACT_TYPE,
        "config": EMPTY.descriptor(),
        "layers": [patch.descriptor(annotations={"org.opencontainers.image.title": name})],
        "subject": dict(subject),
        "annotations": dict(annotations),
    }))


def referrers_tag(subject_digest: str) -> str:
    """The distribution spec's referrers tag schema: ``<alg>-<hex>`` of the subject, where a
    registry has no referrers API."""
    algorithm, _, hexdigest = subject_digest.partition(":")
    return f"{algorithm}-{hexdigest}"


def with_referrer(current: bytes | None, artifact: Blob, artifact_type: str,
                  annotations: Mapping[str, str]) -> Blob | None:
    """The referrers index at the fallback tag with ``artifact`` in it, keeping every entry
    others wrote (cosign writes there too); None when it is there already. ``current``:
    the index now at the tag, or None."""
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
    if current is not None:
        found = json.loads(current)
        if not isinstance(found, dict) or not isinstance(found.get("manifests"), list):
            raise PublishError("the referrers tag holds no image index; remove it by hand "
                               "(it is the distribution spec's sha256-<digest> tag)")
        doc = found
    if any(isinstance(m, dict) and m.get("digest") == artifact.digest
           for m in doc["manifests"]):
        return None
    doc["manifests"].append(artifact.descriptor(artifactType=artifact_type,
                                                annotations=dict(annotations)))
    return Blob(INDEX_MEDIA_TYPE, canonical_json(doc))


def image_index(children: list[tuple[str, str, int]],
                annotations: Mapping[str, str]) -> Blob:
    """An image index over ``(target, manifest digest, manifest size)``, sorted by target."""
    return Blob(INDEX_MEDIA_TYPE, canonical_json({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [
            {"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": size,
             "platform": {"architecture": target, "os": "custom"}}
            for target, digest, size in sorted(children)
        ],
        "annotations": dict(annotations),
    }))


class Layout:
    """An OCI image layout directory: content-addressed blobs plus tags in ``index.json``.

    Blobs are written once (temp file + rename), so a killed run never leaves a torn blob
    under its digest. ``index.json`` is rewritten under an exclusive lock, so parallel tag
    tasks (``doit -n N``) cannot lose each other's refs.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return self.root / "blobs" / algorithm / hexdigest

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise PublishError(f"{self.root}: blob {digest} is missing; run `doit clean "
                               "&& doit release` to rebuild the layout") from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise PublishError(f"{self.root}: blob {digest} is corrupt; run `doit clean "
                               "&& doit release` to rebuild the layout")
        return data

    def write_blob(self, blob: Blob) -> bool:
        """Store ``blob``; return False when it was already there (nothing written)."""
        path = self.blob_path(blob.digest)
        if path.is_file() and path.stat().st_size == len(blob.data):
            return False
        write_atomic(path, blob.data)
        return True

    def tag(self, ref: str, blob: Blob, slot: str) -> None:
        """Point ``ref`` at ``blob`` (already written), replacing the ref that filled ``slot``.

        A slot is "target X" or "the index": the layout mirrors the current release, so a
        re-tag under a new commit replaces the old tag instead of piling tags up.
        """
        with self._locked_index() as index:
            index["manifests"] = [
                d for d in index["manifests"]
                if d.get("annotations", {}).get(SLOT) != slot
                and d.get("annotations", {}).get(REF_NAME) != ref
            ]
            index["manifests"].append(blob.descriptor(annotations={REF_NAME: ref, SLOT: slot}))
            index["manifests"].sort(key=lambda d: d["annotations"][REF_NAME])

    def resolve(self, ref: str) -> dict[str, Any] | None:
        """The descriptor tagged ``ref``, or None."""
        for descriptor in self._read_index()["manifests"]:
            if descriptor.get("annotations", {}).get(REF_NAME) == ref:
                return dict(descriptor)
        return None

    def _read_index(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
        except json.JSONDecodeError as exc:
            raise PublishError(f"{self.root / 'index.json'} is not valid JSON ({exc}); "
                               "run `doit clean && doit release` to rebuild the layout") from None
        return data

    @contextlib.contextmanager
    def _locked_index(self) -> Iterator[dict[str, Any]]:
        self.root.mkdir(parents=True, exist_ok=True)
        layout_file = self.root / "oci-layout"
        if not layout_file.is_file():
            write_atomic(layout_file, canonical_json({"imageLayoutVersion": "1.0.0"}))
        fd = os.open(self.root / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            index = self._read_index()
            yield index
            write_atomic(self.root / "index.json",
                         json.dumps(index, indent=2, sort_keys=True).encode() + b"\n")
        finally:
            os.close(fd)  # closing releases the lock
