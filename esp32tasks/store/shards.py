"""Sharded releases: each shard leaves its steps' receipts in the store, and
``doit publish-index`` takes them back.

A shard (``doit release targets=...``) builds, signs, tags, pushes and uploads its targets,
then ``share:<step>`` writes one object per step, ``<release prefix>shards/<step>.json``,
holding that step's receipts byte for byte. ``publish-index`` (in a clone of the same
commit) reads every step's object, checks that it is of this commit and names this step's
tag, and writes the receipts where the step's own tasks would have: the index,
push-index, manifest and channel tasks then run on them as in a one-machine release.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Final

from esp32tasks.errors import ReleaseRefused
from esp32tasks.files import remove, write_atomic
from esp32tasks.plan import Plan, Step
from esp32tasks.store import open_store

__all__ = ["FORMAT", "collect", "receipts_of", "share"]

FORMAT: Final = "esp32tasks.shard/v1"


def receipts_of(plan: Plan, step: Step, *, pushed: bool) -> dict[str, PurePosixPath]:
    """Role (receipt kind) -> path of the receipts a shard hands on for ``step``."""
    found = {"build": step.build_receipt, "app": step.app_receipt,
             "image": step.image_receipt, "upload": step.upload_receipt}
    if pushed:
        found["push"] = step.push_receipt
    delta = plan.delta_of(step)
    if delta is not None:
        found["delta"] = delta.receipt
        if pushed:
            found["push-delta"] = delta.push_receipt
    return found


def share(plan: Plan, step: Step, pushed: bool) -> None:
    """The ``share:<step>`` action: the step's receipts into the store, then a local copy
    (the task's target)."""
    root = plan.release.root
    local = root / plan.share_receipt(step)
    remove(local)
    doc = {
        "format": FORMAT, "step": step.name, "target": step.target.name,
        "key": None if step.key is None else step.key.name,
        "revision": plan.git.revision, "dirty": plan.git.dirty,
        "version": plan.release.project.version, "tag": step.tag,
        "receipts": {role: (root / path).read_text()
                     for role, path in receipts_of(plan, step, pushed=pushed).items()},
    }
    data = json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n"
    open_store(plan.release.store, root).put_bytes(plan.shard_key(step), data)
    write_atomic(local, data)


def collect(plan: Plan, pushed: bool) -> None:
    """The ``shards`` action of ``doit publish-index``: every published step's receipts
    from the store, all checked before any is written; one refusal naming every target
    whose shard did not finish (or finished for another commit)."""
    from esp32tasks import receipts

    root = plan.release.root
    store = open_store(plan.release.store, root)
    missing: dict[str, str] = {}
    found: dict[PurePosixPath, bytes] = {}
    kinds: Mapping[str, type[receipts.Receipt]] = {
        "build": receipts.BuildReceipt, "app": receipts.AppReceipt,
        "image": receipts.ImageReceipt, "upload": receipts.UploadReceipt,
        "push": receipts.PushReceipt, "delta": receipts.DeltaReceipt,
        "push-delta": receipts.PushDeltaReceipt}
    for step in plan.published:
        raw = store.get_bytes(plan.shard_key(step))
        problem = "no receipts" if raw is None else _problem(plan, step, raw)
        if problem is not None:
            missing[step.name] = problem
            continue
        doc = json.loads(raw or b"")
        for role, path in receipts_of(plan, step, pushed=pushed).items():
            text = doc["receipts"].get(role)
            data = text.encode() if isinstance(text, str) else b""
            if receipts.decode(data, kinds[role]) is None:
                missing[step.name] = f"its {role} receipt is missing or of another version"
                break
            found[path] = data
    if missing:
        targets = dict.fromkeys(name.split("@", 1)[0] for name in missing)
        why = "; ".join(f"{name}: {problem}" for name, problem in missing.items())
        raise ReleaseRefused(
            f"publish-index: the shards of {', '.join(targets)} did not finish for commit "
            f"{plan.git.short} ({why} in {store.describe(plan.release_prefix + 'shards/')}); "
            f"run `doit release targets={','.join(targets)}` on this commit, then "
            "`doit publish-index` again")
    for path, data in found.items():
        _write_if_changed(root / path, data)


def _problem(plan: Plan, step: Step, raw: bytes) -> str | None:
    try:
        doc: Any = json.loads(raw)
    except ValueError:
        return "its receipts object is not JSON"
    if not isinstance(doc, dict) or doc.get("format") != FORMAT \
            or not isinstance(doc.get("receipts"), dict):
        return f"its receipts object is not {FORMAT}"
    if doc.get("revision") != plan.git.revision or doc.get("dirty") != plan.git.dirty:
        return f"its receipts are of commit {str(doc.get('revision'))[:7]}"
    if doc.get("step") != step.name or doc.get("tag") != step.tag:
        return f"its receipts name {doc.get('tag')}, not {step.tag}"
    return None


def _write_if_changed(path: Path, data: bytes) -> None:
    try:
        if path.read_bytes() == data:
            return  # doit's checker sees the same file
    except OSError:
        pass
    write_atomic(path, data)
