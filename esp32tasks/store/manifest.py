"""The release manifest: ``<prefix>/<project>/<app_type>-<version>/release.json``.

It lists every target, every artifact (path beside the manifest, size, SHA-256), every
OCI tag and digest (the local layout's, and the registry's when one is configured), and
the git revision and commit time. It is written last, after every upload and push, so
its presence means the release is complete.

A released version is immutable, as a tag in the registry is: a ``release.json`` in an S3
store that came from another git revision is neither overwritten nor are the objects it
lists, unless ``ESP32TASKS_FORCE=1`` (``StoreConfig.force``). A release from a dirty tree
may be replaced, as its ``-dirty`` tags may. A local directory store is a working copy
and takes any revision.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from esp32tasks import bundle
from esp32tasks.errors import PublishError, StoreReleaseConflict
from esp32tasks.files import remove, write_atomic
from esp32tasks.plan import RECEIPTS, Plan, Step, Variant
from esp32tasks.runcache import per_run
from esp32tasks.store import Store, open_store

if TYPE_CHECKING:
    from esp32tasks.receipts import (
        BuildReceipt,
        DeltaReceipt,
        ImageReceipt,
        IndexReceipt,
        PushIndexReceipt,
        PushReceipt,
        UploadReceipt,
    )

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "RECEIPT",
    "Inputs",
    "check_release",
    "check_release_once",
    "document",
    "encode",
    "guards",
    "inputs",
    "manifest_key",
    "preflight",
    "publish",
    "published_present",
    "publisher",
]

MANIFEST_NAME: Final = "release.json"
FORMAT: Final = "esp32tasks.release/v1"
#: The local copy of what was published: the manifest task's target.
RECEIPT: Final = RECEIPTS / MANIFEST_NAME


def manifest_key(plan: Plan) -> str:
    return plan.release_prefix + MANIFEST_NAME


def inputs(plan: Plan, *, pushed: bool) -> list[PurePosixPath]:
    """The receipts the manifest is made of (the task's ``file_dep``)."""
    files = [r for s in plan.published for r in (s.build_receipt, s.upload_receipt,
                                                 s.image_receipt)]
    files += [v.index_receipt for v in plan.variants]
    files += [d.receipt for d in plan.deltas]
    if pushed:
        files += [s.push_receipt for s in plan.published]
        files += [v.push_index_receipt for v in plan.variants]
    return files


class TargetInputs(NamedTuple):
    built: BuildReceipt
    uploaded: UploadReceipt
    image: ImageReceipt
    pushed: PushReceipt | None
    delta: DeltaReceipt | None = None


class Inputs(NamedTuple):
    """Every receipt the manifest is made of, by step name (``<target>[@<key>]``) and by
    variant (its index task's name)."""

    targets: Mapping[str, TargetInputs]
    local_indexes: Mapping[str, IndexReceipt]
    pushed_indexes: Mapping[str, PushIndexReceipt] | None


def read_inputs(plan: Plan, *, pushed: bool) -> Inputs:
    from esp32tasks import receipts

    root = plan.release.root

    def get(path: PurePosixPath, kind: type[receipts.R]) -> receipts.R:
        return receipts.load(root / path, kind, path.as_posix())

    return Inputs(
        targets={s.name: TargetInputs(
            built=get(s.build_receipt, receipts.BuildReceipt),
            uploaded=get(s.upload_receipt, receipts.UploadReceipt),
            image=get(s.image_receipt, receipts.ImageReceipt),
            pushed=get(s.push_receipt, receipts.PushReceipt) if pushed else None,
            delta=next((get(d.receipt, receipts.DeltaReceipt) for d in plan.deltas
                        if d.step == s), None),
        ) for s in plan.published},
        local_indexes={v.index_task: get(v.index_receipt, receipts.IndexReceipt)
                       for v in plan.variants},
        pushed_indexes={v.index_task: get(v.push_index_receipt, receipts.PushIndexReceipt)
                        for v in plan.variants} if pushed else None,
    )


class _Mismatch(PublishError):
    """Two receipts disagree; ``stale`` is the one made from the other, to be made again."""

    def __init__(self, stale: PurePosixPath, message: str) -> None:
        self.stale = stale
        super().__init__(message)


def document(plan: Plan, inputs: Inputs, publisher_name: str = "",
             fingerprints: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The manifest, from the receipts: a pure function, so equal facts give equal bytes.

    ``targets`` lists every published step by name (``esp32c3``, ``esp32c3@prod``); an
    artifact's ``path`` is relative to release.json's directory (``../<app_type>-<version>-
    <key>/...`` for a signed variant's). The unsigned variant's index, registry and web
    manifest are top-level (as without keys); each key's are under ``keys.<name>``, with
    its scheme and public key's fingerprint.

    Receipts that contradict each other raise :class:`_Mismatch`, naming the one whose
    producer must run again (:func:`publish` removes it, so that ``doit release`` does)."""
    project = plan.release.project
    targets: dict[str, Any] = {}
    for variant in plan.variants:
        targets.update(_targets(plan, variant, inputs))
    result: dict[str, Any] = {
        "format": FORMAT,
        "project": {"name": project.name, "app_type": project.app_type,
                    "version": project.version},
        "git": {"revision": plan.git.revision, "commit_time": plan.git.commit_time,
                "dirty": plan.git.dirty},
        "targets": targets,
    }
    if project.source:
        result["project"]["source"] = project.source
    if publisher_name:
        result["published_by"] = publisher_name
    signed: dict[str, Any] = {}
    for variant in plan.variants:
        facts = _variant_facts(plan, variant, inputs)
        if variant.key is None:
            result.update(facts)
        else:
            signed[variant.key.name] = {
                "scheme": variant.key.scheme,
                "fingerprint": (fingerprints or {}).get(variant.key.name, ""),
                "targets": [step.name for step in variant.steps], **facts}
    if signed:
        result["keys"] = signed
    return result


def _relative(plan: Plan, key: str) -> str:
    """A store key as a path relative to release.json's directory."""
    return posixpath.relpath(key, plan.release_prefix.rstrip("/"))


def _targets(plan: Plan, variant: Variant, inputs: Inputs) -> dict[str, Any]:
    index = inputs.local_indexes[variant.index_task]
    targets: dict[str, Any] = {}
    for step in variant.steps:
        facts = inputs.targets[step.name]
        uploaded = {o.key: o.sha256 for o in facts.uploaded.objects}
        image = facts.image
        artifacts = []
        for artifact in sorted(facts.built.artifacts, key=lambda a: a.name):
            key = step.store_prefix + artifact.name
            if uploaded.get(key) != artifact.sha256:
                raise _Mismatch(step.upload_receipt,
                                f"{step.upload_receipt} does not list {artifact.name} as "
                                f"built in {step.build_receipt}; run `doit release`")
            artifacts.append({
                "name": artifact.name,
                "kind": artifact.kind,
                "path": _relative(plan, key),
                "size": artifact.size,
                "sha256": artifact.sha256,
            })
        child = index.child(step.target.name)
        if child is None or image.manifest.digest != child.digest:
            raise _Mismatch(variant.index_receipt,
                            f"{step.image_receipt} does not match {variant.index_receipt}; "
                            "run `doit release`")
        entry: dict[str, Any] = {
            "chip": step.target.chip,
            "artifacts": artifacts,
            "image": {"tag": image.tag, "digest": image.manifest.digest,
                      "size": image.manifest.size},
        }
        if step.key is not None:
            entry["target"] = step.target.name
            entry["key"] = step.key.name
        if facts.pushed is not None:
            sent = facts.pushed
            entry["registry"] = {"repository": sent.repository, "tag": sent.tag,
                                 "digest": sent.digest}
        if facts.delta is not None:
            entry["delta"] = _patches(plan, step, facts, uploaded)
        targets[step.name] = entry
    return targets


def _patches(plan: Plan, step: Step, facts: TargetInputs,
             uploaded: Mapping[str, str]) -> list[dict[str, Any]]:
    """The step's delta OTA patches, each as uploaded (base, size, SHA-256, ratio)."""
    delta = plan.delta_of(step)
    if delta is None:  # called only for a step with a delta receipt: a bug
        raise ValueError(f"{step.name} has no delta step")
    made = facts.delta
    if made is None or made.app_sha256 != facts.image.firmware.sha256:
        raise _Mismatch(delta.receipt, f"{delta.receipt} is not of the app in "
                        f"{step.image_receipt}; run `doit release`")
    found = []
    for patch in made.patches:
        key = delta.store_prefix + patch.name
        if uploaded.get(key) != patch.sha256:
            raise _Mismatch(step.upload_receipt, f"{step.upload_receipt} does not list "
                            f"{patch.name} as made in {delta.receipt}; run `doit release`")
        found.append({"base": patch.base, "base_app_sha256": patch.base_app_sha256,
                      "base_hash": patch.base_hash, "path": _relative(plan, key),
                      "size": patch.size, "sha256": patch.sha256, "ratio": patch.ratio})
    return found


def _variant_facts(plan: Plan, variant: Variant, inputs: Inputs) -> dict[str, Any]:
    """A variant's index, its web manifest and what the registry holds of it."""
    index = inputs.local_indexes[variant.index_task]
    facts: dict[str, Any] = {"index": {"tag": index.tag, "digest": index.index.digest}}
    web = web_document(plan, variant, inputs)
    if web is not None:
        data = encode(web)
        facts["web_manifest"] = {"path": _relative(plan, variant.prefix + bundle.WEB_MANIFEST),
                                 "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if inputs.pushed_indexes is not None:
        pushed_index = inputs.pushed_indexes[variant.index_task]
        facts["registry"] = {"repository": pushed_index.repository,
                             "index": {"tag": pushed_index.tag,
                                       "digest": pushed_index.digest}}
    return facts


def web_document(plan: Plan, variant: Variant, inputs: Inputs) -> dict[str, Any] | None:
    """ESP Web Tools' manifest.json for every target of ``variant`` with a factory image
    (the first of each chip family), in the variant's directory; None when there is none."""
    builds = []
    for step in variant.steps:
        factory = next((a for a in inputs.targets[step.name].built.artifacts
                        if a.kind == "factory"), None)
        if factory is not None:
            key = step.store_prefix + factory.name
            builds.append(bundle.WebBuild(target=step.target.name, chip=step.target.chip,
                                          path=key.removeprefix(variant.prefix)))
    kept, _ = bundle.web_builds(builds)
    if not kept:
        return None
    project = plan.release.project
    return bundle.web_manifest(project.name, project.version, kept)


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
            "remove it, or overwrite it with ESP32TASKS_FORCE=1") from None
    if revision != plan.git.revision and not dirty:
        raise StoreReleaseConflict(
            f"{store.describe(key)} was {_released(existing)}, not from {plan.git.short}; "
            "released versions are immutable: bump [project] version (or tag a new v<version> "
            "with version = \"git\"), or overwrite with ESP32TASKS_FORCE=1")
    return existing


def _released(existing: bytes) -> str:
    """Who released a manifest, from which commit and when, and whether it was dirty."""
    doc = json.loads(existing)
    git = doc["git"]
    by = doc.get("published_by")
    who = f" by {by}" if isinstance(by, str) and by else ""
    return (f"released{who} from commit {str(git['revision'])[:7]} (committed "
            f"{git.get('commit_time', '?')}, {'dirty' if git.get('dirty') else 'clean'})")


def preflight(plan: Plan) -> None:
    """Before the run's first write: an S3 release.json another clean commit wrote is
    refused now, not after every artifact went up (one GET: it proves the credentials
    read the bucket, too)."""
    if guards(plan):
        check_release_once(open_store(plan.release.store, plan.release.root), plan)


def publisher(plan: Plan) -> str:
    """Who publishes: the CI's actor where it says (config reads it), else user@host.
    Never a secret; the same on every run of one machine and user."""
    import getpass
    import socket

    if plan.release.actor:
        return plan.release.actor
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def check_release_once(store: Store, plan: Plan) -> None:
    """:func:`check_release` for the upload tasks: one GET per run, not per target.

    Forced, there is nothing to check (every upload may overwrite). The answer is kept for
    this run only, never in a receipt: a check from an earlier run cannot see a release
    made since, and :func:`publish` checks again before it writes release.json.
    """
    if plan.release.store.force:
        return
    token = (store.describe(manifest_key(plan)), plan.release.store.endpoint_url or "",
             plan.git.revision)
    if token in _checked():
        return
    check_release(store, plan, force=False)
    _checked().add(token)


@per_run
def _checked() -> set[tuple[str, str, str]]:
    """(manifest URL, endpoint, revision) already checked in this run."""
    return set()


def guards(plan: Plan) -> bool:
    """Released versions are immutable in S3; a local directory is a working copy."""
    return plan.release.store.is_s3


def published_present(plan: Plan) -> bool:
    """``uptodate`` of ``manifest`` with a local store: its release.json is there, at the
    size of the local copy (two stats)."""
    root = plan.release.root
    try:
        return (root / plan.release.store.url / manifest_key(plan)).stat().st_size == \
            (root / RECEIPT).stat().st_size
    except OSError:
        return False


def publish(plan: Plan, pushed: bool, fingerprints: Mapping[str, str] | None = None) -> None:
    """The ``manifest`` action: release.json into the store, last; a local copy as receipt."""
    root = plan.release.root
    remove(root / RECEIPT)
    try:
        inputs = read_inputs(plan, pushed=pushed)
        data = encode(document(plan, inputs, publisher(plan), fingerprints))
    except _Mismatch as exc:
        remove(root / exc.stale)  # so that the advice holds: its task runs again first
        raise
    store = open_store(plan.release.store, root)
    key = manifest_key(plan)
    webs = [(v.prefix + bundle.WEB_MANIFEST, web) for v in plan.variants
            if (web := web_document(plan, v, inputs)) is not None]
    if guards(plan) and not plan.release.store.force:
        current = check_release(store, plan, force=False)  # before anything is written
        if current == data:
            write_atomic(root / RECEIPT, data)
            return
    for web_key, web in webs:  # before release.json, which names them
        store.put_bytes(web_key, encode(web))
    # a local directory compares its own copy; in S3, we have just read other bytes there
    # (or may overwrite whatever is there): no HEAD
    store.put_bytes(key, data, check=not guards(plan))
    write_atomic(root / RECEIPT, data)
