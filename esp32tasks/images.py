"""The ``tag:<target>`` and ``index`` actions: each app as an OCI image in the local layout.

Every action removes its receipt first and writes it last, so a failed or killed action
leaves no receipt, doit re-runs it, and nothing downstream trusts half-done work. Names
come from the :class:`~esp32tasks.plan.Plan`, never re-derived here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from esp32tasks import oci
from esp32tasks.errors import PublishError
from esp32tasks.files import remove
from esp32tasks.plan import Plan, Step, index_annotations

if TYPE_CHECKING:
    from esp32tasks.receipts import Descriptor

__all__ = ["index", "tag"]


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
            and layout.has_blob(previous.manifest.digest):
        # Same firmware, new tag (a new commit): point the tag at the image we have.
        manifest = oci.Blob(oci.MANIFEST_MEDIA_TYPE, layout.read_blob(previous.manifest.digest))
        layout.tag(step.tag, manifest, slot=f"image:{step.name}")
        write(receipt_path, ImageReceipt(target=step.name, tag=step.tag,
                                         manifest=previous.manifest, config=previous.config,
                                         layer=previous.layer, firmware=firmware))
        return
    data = (root / app.path).read_bytes()
    if oci.Blob("", data).digest != "sha256:" + app.sha256:
        raise PublishError(f"{app.path} changed after its build; run `doit release` again")
    image = oci.firmware_image(target=step.name, app_name=app.name, firmware=data,
                               annotations={"dev.esp32tasks.chip": step.target.chip})
    for blob in (*image.blobs, image.manifest):
        layout.write_blob(blob)
    layout.tag(step.tag, image.manifest, slot=f"image:{step.name}")
    write(receipt_path, ImageReceipt(
        target=step.name, tag=step.tag, manifest=_descriptor(image.manifest),
        config=_descriptor(image.config), layer=_descriptor(image.layer), firmware=firmware))


def index(plan: Plan) -> None:
    """The image index of every target, tagged ``<app_type>-<version>`` in the layout."""
    from esp32tasks.receipts import Child, ImageReceipt, IndexReceipt, load, write

    root = plan.release.root
    remove(root / plan.index_receipt)
    images = [load(root / s.image_receipt, ImageReceipt, s.image_receipt.as_posix())
              for s in plan.steps]
    blob = oci.image_index([(i.target, i.manifest.digest, i.manifest.size) for i in images],
                           index_annotations(plan))
    layout = oci.Layout(root / plan.oci_dir)
    layout.write_blob(blob)
    layout.tag(plan.index_tag, blob, slot="index")
    write(root / plan.index_receipt, IndexReceipt(
        tag=plan.index_tag, index=_descriptor(blob),
        targets=tuple(sorted((Child(target=i.target, tag=i.tag, digest=i.manifest.digest)
                              for i in images), key=lambda c: c.target))))
