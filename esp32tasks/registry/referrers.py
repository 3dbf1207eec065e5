"""The ``push-delta:<target>[@<key>]`` action: each delta OTA patch as an OCI artifact
whose ``subject`` is the target's image, where devices look for it.

An artifact (image-spec 1.1: ``artifactType`` :data:`esp32tasks.oci.DELTA_ARTIFACT_TYPE`,
the empty config, one layer holding the patch, annotations naming the base) is pushed by
digest, never tagged, and never a child of the release index: esp32-flashjob keeps
pulling the full app. A registry with the referrers API lists it by itself; otherwise it
goes into the distribution spec's fallback, the image index at the tag ``sha256-<hex>``
of the subject: read, merged (every entry others wrote is kept: cosign writes there too)
and written back. :func:`referrers` reads them back, either way (``doit verify``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from esp32tasks import oci
from esp32tasks.config import RegistryConfig
from esp32tasks.errors import PublishError
from esp32tasks.files import remove, sha256_file
from esp32tasks.plan import Delta, Plan
from esp32tasks.registry.client import Client, shared

if TYPE_CHECKING:
    from esp32tasks.receipts import Descriptor, PatchRecord

__all__ = ["BASE_MANIFEST", "BASE_SHA256", "BASE_VERSION", "firmware_in_layer", "pull_app",
           "push_patches", "referrers"]

BASE_VERSION: Final = "dev.esp32tasks.delta.base-version"
BASE_SHA256: Final = "dev.esp32tasks.delta.base-sha256"
"""The patch header's base hash: what the device's running partition hashes to."""
BASE_MANIFEST: Final = "dev.esp32tasks.delta.base-manifest"


def patch_annotations(patch: PatchRecord) -> dict[str, str]:
    found = {BASE_VERSION: patch.base, BASE_SHA256: patch.base_hash,
             "org.opencontainers.image.title": patch.name}
    if patch.base_manifest:
        found[BASE_MANIFEST] = patch.base_manifest
    return found


def push_patches(plan: Plan, delta: Delta, config: RegistryConfig) -> dict[str, int]:
    """Push every patch of ``delta`` as a referrer of its step's image; a receipt last."""
    from esp32tasks.receipts import (
        DeltaReceipt,
        ImageReceipt,
        PushDeltaReceipt,
        load,
        write,
    )

    root = plan.release.root
    step = delta.step
    receipt = root / delta.push_receipt
    remove(receipt)
    image = load(root / step.image_receipt, ImageReceipt, step.image_receipt.as_posix())
    made = load(root / delta.receipt, DeltaReceipt, delta.receipt.as_posix())
    subject = image.manifest.oci()
    client = shared(config, root)
    before = client.sent
    layout = oci.Layout(root / plan.oci_dir)
    artifacts = [(_artifact(client, layout, root, subject, patch), patch_annotations(patch))
                 for patch in made.patches]
    fallback = False
    if artifacts and client.referrers(image.manifest.digest) is None:
        fallback = True
        _merge_fallback(client, image.manifest.digest, artifacts)
    write(receipt, PushDeltaReceipt(target=step.name, repository=config.repository,
                                    subject=image.manifest.digest,
                                    artifacts=tuple(a.digest for a, _ in artifacts),
                                    fallback=fallback))
    return {"sent": client.sent - before}


def _artifact(client: Client, layout: oci.Layout, root: Path, subject: dict[str, Any],
              patch: PatchRecord) -> oci.Blob:
    data = (root / patch.path).read_bytes()
    if sha256_file(root / patch.path) != patch.sha256:
        raise PublishError(f"{patch.path} changed after it was made; run `doit release` "
                           "again")
    layer = oci.Blob(oci.DELTA_LAYER_MEDIA_TYPE, data)
    manifest = oci.delta_artifact(patch=layer, name=patch.name, subject=subject,
                                  annotations=patch_annotations(patch))
    for blob in (oci.EMPTY, layer):
        layout.write_blob(blob)  # the local layout holds what the registry does
        descriptor = _descriptor(blob)
        if not client.has_blob(descriptor):
            client.upload_blob(layout.blob_path(blob.digest), descriptor)
    layout.write_blob(manifest)
    if client.manifest_digest(manifest.digest) != manifest.digest:
        client.put_manifest(manifest.digest, manifest)
    return manifest


def _descriptor(blob: oci.Blob) -> Descriptor:
    from esp32tasks.receipts import Descriptor

    return Descriptor(media_type=blob.media_type, digest=blob.digest, size=len(blob.data))


def _merge_fallback(client: Client, subject: str,
                    artifacts: list[tuple[oci.Blob, dict[str, str]]]) -> None:
    tag = oci.referrers_tag(subject)
    current = client.get_manifest(tag)[1] if client.manifest_digest(tag) is not None \
        else None
    merged = current
    for artifact, notes in artifacts:
        found = oci.with_referrer(merged, artifact, oci.DELTA_ARTIFACT_TYPE, notes)
        if found is not None:
            merged = found.data
    if merged is not None and merged != current:
        client.put_manifest(tag, oci.Blob(oci.INDEX_MEDIA_TYPE, merged))


def firmware_in_layer(layer: bytes) -> tuple[str, bytes] | None:
    """The first regular file whose path contains "firmware" (what the consumer flashes)."""
    import gzip
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer)), mode="r:") as tar:
        for member in tar:
            if member.isfile() and "firmware" in member.name:
                extracted = tar.extractfile(member)
                if extracted is None:
                    return None
                return member.name, extracted.read()
    return None


def pull_app(root: Path, config: RegistryConfig, digest: str) -> bytes | None:
    """The file under ``firmware/`` in the image ``digest`` (None: no such image), as
    esp32-flashjob takes it: a base app the store no longer holds."""
    client = shared(config, root)
    if client.manifest_digest(digest) is None:
        return None
    layers = json.loads(client.get_manifest(digest)[1]).get("layers") or []
    if len(layers) != 1:
        return None
    found = firmware_in_layer(client.get_blob(str(layers[0].get("digest"))))
    return None if found is None else found[1]


def referrers(client: Client, subject: str) -> list[dict[str, Any]]:
    """The descriptors of ``subject``'s delta OTA patches: from the referrers API, else
    the fallback tag (none: an empty list)."""
    data = client.referrers(subject)
    if data is None:
        tag = oci.referrers_tag(subject)
        if client.manifest_digest(tag) is None:
            return []
        data = client.get_manifest(tag)[1]
    manifests = json.loads(data).get("manifests") or []
    return [m for m in manifests if isinstance(m, dict)
            and m.get("artifactType") == oci.DELTA_ARTIFACT_TYPE]
