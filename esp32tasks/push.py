"""doit actions that push the layout's images and index to the registry, idempotently.

Order: each target's blobs, then its manifest under its tag (``push:<target>``), then the
index (``push-index``), which distribution rejects until its children are there. Every
action removes its receipt first and writes it last, so a failed or killed push is re-run.

What is sent, per image (each check saves more than it costs):

1. HEAD the tag: already our digest, so nothing to send (a rerun after a lost doit state);
2. HEAD the manifest by digest: present, so its blobs are too (the registry checks them
   on PUT): a re-tag under a new commit sends no blob;
3. otherwise each blob: HEAD, and POST + PUT if missing (oras-py's ``upload_blob``);
4. PUT the manifest under the tag.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from esp32tasks import oci
from esp32tasks.actions import reported
from esp32tasks.config import RegistryConfig
from esp32tasks.errors import PublishError, ReleaseRefused
from esp32tasks.plan import Plan, Step
from esp32tasks.receipts import read_json, remove, write_json
from esp32tasks.registry import ENV_ALLOW_DIRTY, ENV_FORCE, Client

__all__ = ["INDEX_RECEIPT", "push_image", "push_index", "push_receipt"]

RECEIPTS = PurePosixPath("build/receipts")
INDEX_RECEIPT = RECEIPTS / "push-index.json"


def push_receipt(step: Step) -> PurePosixPath:
    return step.image_receipt.parent / f"push-{step.name}.json"


def check_clean(plan: Plan, config: RegistryConfig, what: str) -> None:
    if plan.git.dirty and not config.allow_dirty:
        raise ReleaseRefused(
            f"refusing to push {what} from a working tree with uncommitted changes; commit "
            f"them, or allow it with {ENV_ALLOW_DIRTY}=1 (or [registry] allow_dirty = true): "
            "the tags then end in -dirty")


def _immutable(config: RegistryConfig, tag: str, current: str, ours: str,
               released_by: str | None = None) -> ReleaseRefused:
    by = f" (released from commit {released_by[:7]})" if released_by else ""
    return ReleaseRefused(
        f"{config.repository}:{tag} already points at {current}{by}, not at this build's "
        f"{ours}; released versions are immutable: bump [project] version, or overwrite "
        f"with {ENV_FORCE}=1 (or [registry] force = true)")


def _may_overwrite(config: RegistryConfig, tag: str) -> bool:
    return config.force or tag.endswith("-dirty")


def send_image(client: Client, layout: oci.Layout, image: Mapping[str, Any]) -> None:
    """Make ``image['tag']`` point at ``image['manifest']``, sending only what is missing."""
    tag, digest = image["tag"], image["manifest"]["digest"]
    current = client.manifest_digest(tag)
    if current == digest:
        return
    if current is not None and not _may_overwrite(client.config, tag):
        raise _immutable(client.config, tag, current, digest)
    if client.manifest_digest(digest) is None:
        for descriptor in (image["layer"], image["config"]):
            path = layout.blob_path(descriptor["digest"])
            layout.read_blob(descriptor["digest"])  # checks it is whole before sending
            client.push_blob(path, descriptor)
    manifest = oci.Blob(oci.MANIFEST_MEDIA_TYPE, layout.read_blob(digest))
    client.put_manifest(tag, manifest)


@reported
def push_image(plan: Plan, step: Step, config: RegistryConfig) -> None:
    """``push:<target>``: the target's image under its per-commit tag."""
    root = plan.release.root
    receipt = root / push_receipt(step)
    remove(receipt)
    check_clean(plan, config, f"{step.name}'s image")
    image = read_json(root / step.image_receipt)
    if image["tag"] != step.tag:
        raise PublishError(f"{step.image_receipt} is for tag {image['tag']}, not {step.tag}; "
                           "run `doit release` to re-tag")
    client = Client(config, root, os.environ)
    send_image(client, oci.Layout(root / plan.oci_dir), image)
    write_json(receipt, {"target": step.name, "repository": config.repository,
                         "tag": image["tag"], "digest": image["manifest"]["digest"]})


@reported
def push_index(plan: Plan, config: RegistryConfig) -> None:
    """``push-index``: the index under ``<app_type>-<version>``, after every child."""
    root = plan.release.root
    receipt = root / INDEX_RECEIPT
    remove(receipt)
    check_clean(plan, config, "the index")
    index = read_json(root / plan.index_receipt)
    for step in plan.steps:  # file_dep guarantees them; a hand-deleted one is caught here
        pushed = read_json(root / push_receipt(step))
        if pushed["digest"] != index["targets"][step.name]["digest"]:
            raise PublishError(f"{push_receipt(step)} does not match {plan.index_receipt}; "
                               "run `doit release` again")
    tag, digest = index["tag"], index["index"]["digest"]
    client = Client(config, root, os.environ)
    current = client.manifest_digest(tag)
    if current != digest:
        if current is not None and not config.force:
            released_by = _revision(client, tag)
            raise _immutable(config, tag, current, digest, released_by)
        blob = oci.Blob(oci.INDEX_MEDIA_TYPE, oci.Layout(root / plan.oci_dir).read_blob(digest))
        client.put_manifest(tag, blob)
    write_json(receipt, {"repository": config.repository, "tag": tag, "digest": digest,
                         "targets": index["targets"]})


def _revision(client: Client, tag: str) -> str | None:
    """The commit the tag's current index was released from, for the refusal message."""
    import json

    try:
        _, data = client.get_manifest(tag)
        value = json.loads(data).get("annotations", {}).get("org.opencontainers.image.revision")
    except (PublishError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def receipt_paths(plan: Plan) -> list[Path]:
    root = plan.release.root
    return [root / push_receipt(s) for s in plan.steps] + [root / INDEX_RECEIPT]
