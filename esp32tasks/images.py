"""The ``tag:<target>`` and ``index`` actions: each app as an OCI image in the local layout.

Every action removes its receipt first and writes it last, so a failed or killed action
leaves no receipt, doit re-runs it, and nothing downstream trusts half-done work. Names
come from the :class:`~esp32tasks.plan.Plan`, never re-derived here.

:func:`image_present` and :func:`index_present` are the tasks' ``uptodate`` checks of the
layout itself: a lost layout, a lost or torn blob, or a ref gone from ``index.json`` runs
the task that made it again. They stat, never hash (the no-op budget): a blob of the right
size with other bytes is found when it is read (pushed, re-tagged) and replaced by
the next action that writes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esp32tasks import oci
from esp32tasks.errors import PublishError
from esp32tasks.files import remove
from esp32tasks.plan import Plan, Step, Variant, index_annotations

if TYPE_CHECKING:
    from esp32tasks.receipts import Descriptor

__all__ = ["artifact_changed", "image_present", "index", "index_present", "tag"]


def artifact_changed(root: Path, step: Step, path: str) -> PublishError:
    """The error for a build output whose bytes are no longer those its build receipt
    records, found by the action about to use them (``tag:<t>``, ``upload:<t>``).

    So that its advice holds, ``build:<t>`` runs again on the next release: its app
    receipt (a target of it) is removed, its build receipt kept as the record of what it
    made, from which the build learns which outputs to make anew.
    """
    remove(root / step.app_receipt)
    first = f"build:{step.name}" if step.key is None else f"sign:{step.name}"
    return PublishError(f"{path} changed after its build; run `doit release` again: "
                        f"{first} runs first")


def _raw(path: Path) -> Any:
    # The receipt's JSON without the dataclasses, for a no-op's checks: any other shape
    # answers "not current" (the action's ``load`` then says what is wrong).
    return json.loads(path.read_bytes())


def _present(blobs: str, descriptor: Any) -> bool:
    """The blob is in the layout (whose ``blobs`` directory is given) at its size: a stat
    (of a str: a fifth of pathlib's cost, on every no-op)."""
    algorithm, _, hexdigest = descriptor["digest"].partition(":")
    path = os.path.join(blobs, algorithm, hexdigest)  # noqa: PTH118
    return bool(os.stat(path).st_size == descriptor["size"])  # noqa: PTH116


def image_present(plan: Plan, step: Step) -> bool:
    """``uptodate`` of ``tag:<t>``: the image's blobs are in the layout at their sizes and
    its tag points at its manifest."""
    root = plan.release.root
    layout = oci.Layout(root / plan.oci_dir)
    blobs = str(layout.root / "blobs")
    try:
        image = _raw(root / step.image_receipt)
        tagged = layout.resolve(image["tag"])
        return all(_present(blobs, image[part]) for part in ("manifest", "config", "layer")) \
            and tagged is not None and tagged.get("digest") == image["manifest"]["digest"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, PublishError):
        return False


def index_present(plan: Plan, variant: Variant) -> bool:
    """``uptodate`` of ``index``: the index blob is in the layout at its size and its tag
    points at it."""
    root = plan.release.root
    layout = oci.Layout(root / plan.oci_dir)
    try:
        receipt = _raw(root / variant.index_receipt)
        tagged = layout.resolve(receipt["tag"])
        return _present(str(layout.root / "blobs"), receipt["index"]) and tagged is not None \
            and tagged.get("digest") == receipt["index"]["digest"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, PublishError):
        return False


def _intact(layout: oci.Layout, descriptor: Descriptor) -> bool:
    """The blob is in the layout and its bytes hash to its digest (an action's check)."""
    try:
        data = layout.blob_path(descriptor.digest).read_bytes()
    except FileNotFoundError:
        return False
    return len(data) == descriptor.size \
        and "sha256:" + hashlib.sha256(data).hexdigest() == descriptor.digest


def _write(layout: oci.Layout, blob: oci.Blob) -> None:
    """Write ``blob``, replacing a file of other bytes under its digest (the layout's
    writer keeps a file of the right size)."""
    path = layout.blob_path(blob.digest)
    if path.is_file() and path.read_bytes() != blob.data:
        remove(path)
    layout.write_blob(blob)


def _descriptor(blob: oci.Blob) -> Descriptor:
    from esp32tasks.receipts import Descriptor

    return Descriptor(media_type=blob.media_type, digest=blob.digest, size=len(blob.data))


def tag(plan: Plan, step: Step) -> None:
    """Package the app binary as the target's image in the layout, under the step's tag."""
    from esp32tasks.receipts import AppReceipt, Firmware, ImageReceipt, load, read, write

    root = plan.release.root
    receipt_path = root / step.image_receipt
    previous = read(receipt_path, ImageReceipt)
    remove(receipt_path)
    app = load(root / step.app_receipt, AppReceipt, step.app_receipt.as_posix()).app
    firmware = Firmware(name=app.name, sha256=app.sha256, size=app.size)
    layout = oci.Layout(root / plan.oci_dir)
    if previous is not None and previous.firmware == firmware \
            and all(_intact(layout, d) for d in (previous.manifest, previous.config,
                                                 previous.layer)):
        # Same firmware, new tag (a new commit): point the tag at the image we have.
        manifest = oci.Blob(oci.MANIFEST_MEDIA_TYPE, layout.read_blob(previous.manifest.digest))
        layout.tag(step.tag, manifest, slot=f"image:{step.name}")
        write(receipt_path, ImageReceipt(target=step.target.name, tag=step.tag,
                                         manifest=previous.manifest, config=previous.config,
                                         layer=previous.layer, firmware=firmware))
        return
    data = (root / app.path).read_bytes()
    if oci.Blob("", data).digest != "sha256:" + app.sha256:
        raise artifact_changed(root, step, app.path)
    image = oci.firmware_image(target=step.target.name, app_name=app.name, firmware=data,
                               annotations={"dev.esp32tasks.chip": step.target.chip})
    for blob in (*image.blobs, image.manifest):
        _write(layout, blob)
    layout.tag(step.tag, image.manifest, slot=f"image:{step.name}")
    write(receipt_path, ImageReceipt(
        target=step.target.name, tag=step.tag, manifest=_descriptor(image.manifest),
        config=_descriptor(image.config), layer=_descriptor(image.layer), firmware=firmware))


def index(plan: Plan, variant: Variant) -> None:
    """The image index of every target of ``variant``, tagged
    ``<app_type>-<version>[-<key>]`` in the layout."""
    from esp32tasks.receipts import Child, ImageReceipt, IndexReceipt, load, write

    root = plan.release.root
    remove(root / variant.index_receipt)
    images = [load(root / s.image_receipt, ImageReceipt, s.image_receipt.as_posix())
              for s in variant.steps]
    blob = oci.image_index([(i.target, i.manifest.digest, i.manifest.size) for i in images],
                           index_annotations(plan, variant))
    layout = oci.Layout(root / plan.oci_dir)
    _write(layout, blob)
    layout.tag(variant.index_tag, blob, slot=variant.index_task)
    write(root / variant.index_receipt, IndexReceipt(
        tag=variant.index_tag, index=_descriptor(blob),
        targets=tuple(sorted((Child(target=i.target, tag=i.tag, digest=i.manifest.digest)
                              for i in images), key=lambda c: c.target))))
