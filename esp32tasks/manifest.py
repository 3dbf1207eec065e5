"""The release manifest: ``<prefix>/<project>/<app_type>-<version>/release.json``.

It lists every target, every artifact (path beside the manifest, size, SHA-256), every
OCI tag and digest (the local layout's, and the registry's when one is configured), and
the git revision and commit time. It is written last, after every upload and push, so
its presence means the release is complete.

A released version is immutable, as a tag in the registry is: a ``release.json`` in an S3
store that came from another git revision is neither overwritten nor are the objects it
lists, unless ``ESP32TASKS_FORCE=1``. A release from a dirty tree may be replaced, as its
``-dirty`` tags may. A local directory store is a working copy and takes any revision.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Final

from esp32tasks.errors import PublishError, StoreReleaseConflict
from esp32tasks.plan import RECEIPTS, Plan
from esp32tasks.receipts import read_json, remove, write_atomic
from esp32tasks.reporting import reported
from esp32tasks.store import Store, open_store

__all__ = [
    "ENV_FORCE",
    "FORMAT",
    "MANIFEST_NAME",
    "RECEIPT",
    "check_release",
    "check_release_once",
    "document",
    "encode",
    "forced",
    "guards",
    "inputs",
    "manifest_key",
    "publish",
]

MANIFEST_NAME: Final = "release.json"
FORMAT: Final = "esp32tasks.release/v1"
#: The local copy of what was published: the manifest task's target.
RECEIPT: Final = RECEIPTS / MANIFEST_NAME
#: Shared with the registry: overwrite what an earlier revision released.
ENV_FORCE: Final = "ESP32TASKS_FORCE"

def manifest_key(plan: Plan) -> str:
    return plan.release_prefix + MANIFEST_NAME


def forced(environ: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get(ENV_FORCE, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def inputs(plan: Plan, *, pushed: bool) -> list[PurePosixPath]:
    """The receipts the manifest is made of (the task's ``file_dep``)."""
    files = [r for s in plan.steps for r in (s.build_receipt, s.upload_receipt,
                                             s.image_receipt)]
    files.append(plan.index_receipt)
    if pushed:
        files += [s.push_receipt for s in plan.steps] + [plan.push_index_receipt]
    return files


def document(plan: Plan, receipts: Mapping[PurePosixPath, Any], *, pushed: bool) -> \
        dict[str, Any]:
    """The manifest, from the receipts: a pure function, so equal facts give equal bytes."""
    project = plan.release.project
    index = receipts[plan.index_receipt]
    targets: dict[str, Any] = {}
    for step in plan.steps:
        built = receipts[step.build_receipt]
        uploaded = {o["key"]: o["sha256"] for o in receipts[step.upload_receipt]["objects"]}
        image = receipts[step.image_receipt]
        artifacts = []
        for artifact in sorted(built["artifacts"], key=lambda a: a["name"]):
            key = step.store_prefix + artifact["name"]
            if uploaded.get(key) != artifact["sha256"]:
                raise PublishError(f"{step.upload_receipt} does not list {artifact['name']} "
                                   f"as built in {step.build_receipt}; run `doit release`")
            artifacts.append({
                "name": artifact["name"],
                "kind": artifact["kind"],
                "path": key.removeprefix(plan.release_prefix),
                "size": artifact["size"],
                "sha256": artifact["sha256"],
            })
        if image["manifest"]["digest"] != index["targets"][step.name]["digest"]:
            raise PublishError(f"{step.image_receipt} does not match {plan.index_receipt}; "
                               "run `doit release`")
        entry: dict[str, Any] = {
            "chip": step.target.chip,
            "artifacts": artifacts,
            "image": {"tag": image["tag"], "digest": image["manifest"]["digest"],
                      "size": image["manifest"]["size"]},
        }
        if pushed:
            sent = receipts[step.push_receipt]
            entry["registry"] = {"repository": sent["repository"], "tag": sent["tag"],
                                 "digest": sent["digest"]}
        targets[step.name] = entry
    result: dict[str, Any] = {
        "format": FORMAT,
        "project": {"name": project.name, "app_type": project.app_type,
                    "version": project.version},
        "git": {"revision": plan.git.revision, "commit_time": plan.git.commit_time,
                "dirty": plan.git.dirty},
        "targets": targets,
        "index": {"tag": index["tag"], "digest": index["index"]["digest"]},
    }
    if project.source:
        result["project"]["source"] = project.source
    if pushed:
        pushed_index = receipts[plan.push_index_receipt]
        result["registry"] = {"repository": pushed_index["repository"],
                              "index": {"tag": pushed_index["tag"],
                                        "digest": pushed_index["digest"]}}
    return result


def encode(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def check_release(store: Store, plan: Plan, *, force: bool) -> bytes | None:
    """The manifest already in the store (or None), after making sure we may replace it.

    Raises :class:`StoreReleaseConflict` when it came from another, clean revision.
    """
    key = manifest_key(plan)
    existing = store.get_bytes(key)
    if existing is None or force:
        return existing
    try:
        git = json.loads(existing)["git"]
        revision, dirty = str(git["revision"]), bool(git["dirty"])
    except (ValueError, KeyError, TypeError):
        raise StoreReleaseConflict(
            f"{store.describe(key)} exists but is not an esp32tasks release manifest; "
            f"remove it, or overwrite it with {ENV_FORCE}=1") from None
    if revision != plan.git.revision and not dirty:
        raise StoreReleaseConflict(
            f"{store.describe(key)} was released from commit {revision[:7]}, not "
            f"{plan.git.short}; released versions are immutable: bump [project] version, "
            f"or overwrite with {ENV_FORCE}=1")
    return existing


#: (manifest URL, endpoint, revision) already checked by this process.
_checked: set[tuple[str, str, str]] = set()


def check_release_once(store: Store, plan: Plan, *, force: bool) -> None:
    """:func:`check_release` for the upload tasks: one GET per process, not per target.

    Forced, there is nothing to check (every upload may overwrite). The answer is kept in
    this process only, never in a receipt: a check from an earlier run cannot see a release
    made since, and :func:`publish` checks again before it writes release.json.
    """
    if force:
        return
    token = (store.describe(manifest_key(plan)), plan.release.store.endpoint_url or "",
             plan.git.revision)
    if token in _checked:
        return
    check_release(store, plan, force=False)
    _checked.add(token)


def guards(plan: Plan) -> bool:
    """Released versions are immutable in S3; a local directory is a working copy."""
    return plan.release.store.is_s3


@reported
def publish(plan: Plan, pushed: bool) -> None:
    """The ``manifest`` action: release.json into the store, last; a local copy as receipt."""
    root = plan.release.root
    remove(root / RECEIPT)
    receipts = {path: read_json(root / path) for path in inputs(plan, pushed=pushed)}
    data = encode(document(plan, receipts, pushed=pushed))
    store = open_store(plan.release.store, root)
    key = manifest_key(plan)
    if not guards(plan):
        store.put_bytes(key, data)  # a local directory compares its own copy
    elif forced() or check_release(store, plan, force=False) != data:
        # we may overwrite whatever is there, or have just read other bytes there: no HEAD
        store.put_bytes(key, data, check=False)
    write_atomic(root / RECEIPT, data)


def read_local(root: Path) -> Any:
    """The last published manifest, from its receipt."""
    return read_json(root / RECEIPT)
