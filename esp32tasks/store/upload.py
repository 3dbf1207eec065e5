"""The ``upload:<target>`` action: every artifact of a target to the store, only what changed.

It removes its receipt first and writes it last, so a failed or killed upload is re-run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from esp32tasks.errors import PublishError
from esp32tasks.files import remove, sha256_file
from esp32tasks.plan import Plan, Step
from esp32tasks.store import manifest, open_store

if TYPE_CHECKING:
    from esp32tasks.receipts import UploadReceipt

__all__ = ["upload"]


def upload(plan: Plan, step: Step) -> None:
    """Copy every artifact of the target to the store, sending only what changed.

    The previous receipt records each key's SHA-256 as we uploaded it to this store. When
    this task runs because the build changed, it is trusted: an object whose SHA-256 did
    not change gets no request at all, one whose SHA-256 changed is sent without a HEAD
    first (the release check below covers overwriting another revision's release). When
    nothing is known (no receipt, another store, endpoint or prefix) or the build did
    not change (``doit forget upload:<t>``, ``-a``, a lost doit state: someone wants it
    checked), every object is HEAD-checked and only what is missing or different is sent.
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
    known = _known_objects(previous, where, endpoint, built_sha)
    objects, files = [], []
    for artifact in built.artifacts:
        key = step.store_prefix + artifact.name
        path = root / artifact.path
        if sha256_file(path) != artifact.sha256:
            raise PublishError(f"{artifact.path} changed after its build; run "
                               "`doit release` again")
        if known.get(key) != artifact.sha256:
            files.append((key, path, artifact.sha256))
        objects.append(StoredObject(key=key, sha256=artifact.sha256, size=artifact.size))
    if files and manifest.guards(plan):  # never overwrite what another revision released
        manifest.check_release_once(store, plan)
    store.put_files(files, overwrite={key for key, _, _ in files if key in known})
    write(receipt, UploadReceipt(target=step.name, store=where, endpoint=endpoint,
                                 build=built_sha, objects=tuple(objects)))


def _known_objects(previous: UploadReceipt | None, where: str, endpoint: str,
                   built: str) -> dict[str, str]:
    """key -> SHA-256 the store held after our last upload, when that can be trusted."""
    if previous is None or previous.store != where or previous.endpoint != endpoint:
        return {}  # never uploaded there, as far as we know
    if previous.build == built:
        return {}  # the same build uploaded again: asked to re-check, so check
    return {o.key: o.sha256 for o in previous.objects}
