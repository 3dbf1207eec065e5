"""The ``upload:<target>`` action: every artifact of a target to the store, only what changed.

It removes its receipt first and writes it last, so a failed or killed upload is re-run.
With a local store, :func:`objects_present` is the task's ``uptodate`` check of the copies
themselves (an S3 store is not asked on a no-op).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from esp32tasks.errors import PublishError
from esp32tasks.files import remove, sha256_file
from esp32tasks.images import artifact_changed
from esp32tasks.plan import Plan, Step
from esp32tasks.store import manifest, open_store
from esp32tasks.store.verify import read_back

if TYPE_CHECKING:
    from esp32tasks.receipts import Artifact, PatchRecord, UploadReceipt

__all__ = ["objects_present", "upload"]


def objects_present(plan: Plan, step: Step) -> bool:
    """``uptodate`` of ``upload:<t>`` with a local store: every object the upload receipt
    lists is there at its size (a stat each; other bytes of the same size are what
    ``doit verify`` finds). Reads the receipt's JSON without the dataclasses."""
    base = str(plan.release.root / plan.release.store.url)  # os.stat of a str: cheaper
    try:
        objects = json.loads((plan.release.root / step.upload_receipt).read_bytes())["objects"]
        return all(os.stat(os.path.join(base, o["key"])).st_size  # noqa: PTH116, PTH118
                   == o["size"] for o in objects)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def upload(plan: Plan, step: Step) -> dict[str, int]:
    """Copy every artifact of the target to the store, sending only what changed.

    The previous receipt records each key's SHA-256 as we uploaded it to this store. When
    this task runs because the build changed, it is trusted: an object whose SHA-256 did
    not change gets no request at all, one whose SHA-256 changed is sent without a HEAD
    first (the release check below covers overwriting another revision's release). When
    the build did not change (``doit forget upload:<t>``, ``-a``, a lost doit state, a
    local copy gone): someone wants it checked, and metadata is not proof, so every object
    is downloaded and hashed (a GET of the target's every byte instead of a HEAD each) and
    what differs or is missing is sent. When nothing is known (no receipt: a first upload,
    a failed one; another store, endpoint or prefix), every object is HEAD-checked against
    the SHA-256 our uploads record in its metadata and only what is missing or different
    is sent.
    """
    from esp32tasks.receipts import BuildReceipt, StoredObject, UploadReceipt, load, read, write

    release = plan.release
    root = release.root
    receipt = root / step.upload_receipt
    previous = read(receipt, UploadReceipt)
    remove(receipt)
    built = load(root / step.build_receipt, BuildReceipt, step.build_receipt.as_posix())
    built_sha = sha256_file(root / step.build_receipt)
    store = open_store(release.store, root)
    where, endpoint = store.describe(), release.store.endpoint_url or ""
    known, recheck = _trusted(previous, where, endpoint, built_sha)
    objects, files = [], []
    entries: list[tuple[str, Artifact | PatchRecord]] = [
        *((step.store_prefix + a.name, a) for a in built.artifacts), *_patches(plan, step)]
    for key, artifact in entries:
        path = root / artifact.path
        if sha256_file(path) != artifact.sha256:
            raise _changed(plan, step, artifact)
        if known.get(key) != artifact.sha256:
            files.append((key, path, artifact.sha256))
        objects.append(StoredObject(key=key, sha256=artifact.sha256, size=artifact.size))
    if files and manifest.guards(plan):  # never overwrite what another revision released
        manifest.check_release_once(store, plan)  # (first: then no download is in vain)
    if recheck:
        held = read_back(store, [key for key, _, _ in files])
        files = [f for f in files if held[f[0]] != f[2]]
        overwrite = {key for key, _, _ in files}  # just read: other bytes, or none
    else:
        overwrite = {key for key, _, _ in files if key in known}
    went = store.put_files(files, overwrite=overwrite)
    write(receipt, UploadReceipt(target=step.name, store=where, endpoint=endpoint,
                                 build=built_sha, objects=tuple(objects)))
    return {"sent": sum(path.stat().st_size
                        for (_, path, _), sent in zip(files, went, strict=True) if sent)}


def _changed(plan: Plan, step: Step, artifact: Artifact | PatchRecord) -> PublishError:
    """A build output (or a patch) whose bytes are no longer its receipt's: the task that
    made it runs again first."""
    from esp32tasks.receipts import PatchRecord

    root = plan.release.root
    if not isinstance(artifact, PatchRecord):
        return artifact_changed(root, step, artifact.path)
    delta = plan.delta_of(step)
    if delta is None:  # a patch comes from a delta receipt: a bug
        raise ValueError(f"{step.name} has no delta step")
    remove(root / delta.receipt)
    return PublishError(f"{artifact.path} changed after it was made; run `doit release` "
                        f"again: delta:{delta.name} runs first")


def _patches(plan: Plan, step: Step) -> list[tuple[str, PatchRecord]]:
    """(key, patch) of the step's delta OTA patches, with ``[delta]``."""
    from esp32tasks.receipts import DeltaReceipt, load

    delta = plan.delta_of(step)
    if delta is None:
        return []
    made = load(plan.release.root / delta.receipt, DeltaReceipt, delta.receipt.as_posix())
    return [(delta.store_prefix + patch.name, patch) for patch in made.patches]


def _trusted(previous: UploadReceipt | None, where: str, endpoint: str,
             built: str) -> tuple[dict[str, str], bool]:
    """key -> SHA-256 the store held after our last upload, when that can be trusted; and
    whether to read every object back instead."""
    if previous is None or previous.store != where or previous.endpoint != endpoint:
        return {}, False  # never uploaded there, as far as we know: HEAD each
    if previous.build == built:
        return {}, True  # the same build uploaded again: asked to re-check, so read back
    return {o.key: o.sha256 for o in previous.objects}, False
