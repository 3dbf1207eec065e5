"""``doit verify`` offline: the layer reader, and one target's check against a fake registry."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Any, cast

from esp32tasks import oci
from esp32tasks.receipts import Descriptor, Firmware, ImageReceipt
from esp32tasks.registry.client import Client
from esp32tasks.registry.verify import check_target, firmware_in_layer

TAG = "esp32c3-hello-1.0.0-0123456"
FIRMWARE = b"\xe9app bytes"


def test_firmware_in_our_layer() -> None:
    image = oci.firmware_image(target="esp32c3", app_name="hello.bin", firmware=b"\xe9app")
    assert firmware_in_layer(image.layer.data) == ("firmware/hello.bin", b"\xe9app")


def tar_gz(*members: tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return oci.deterministic_gzip(out.getvalue())


def test_no_firmware_in_layer() -> None:
    assert firmware_in_layer(tar_gz(("other/app.bin", b"x"))) is None


def test_the_first_firmware_file_is_what_the_consumer_flashes() -> None:
    layer = tar_gz(("docs/readme", b"r"), ("firmware/a.bin", b"a"), ("firmware/b.bin", b"b"))
    assert firmware_in_layer(layer) == ("firmware/a.bin", b"a")


def descriptor(blob: oci.Blob) -> Descriptor:
    return Descriptor(media_type=blob.media_type, digest=blob.digest, size=len(blob.data))


def receipt_of(image: oci.Image, firmware: bytes = FIRMWARE) -> ImageReceipt:
    return ImageReceipt(target="esp32c3", tag=TAG, manifest=descriptor(image.manifest),
                        config=descriptor(image.config), layer=descriptor(image.layer),
                        firmware=Firmware(name="hello.bin",
                                          sha256=hashlib.sha256(firmware).hexdigest(),
                                          size=len(firmware)))


class FakeRegistry:
    """Serves ``blobs`` by digest and ``tags``; what verify reads, nothing more."""

    def __init__(self, image: oci.Image, tags: dict[str, str]) -> None:
        self.blobs = {b.digest: b.data for b in (image.manifest, image.config, image.layer)}
        self.tags = tags

    def manifest_digest(self, reference: str) -> str | None:
        return self.tags.get(reference)

    def get_manifest(self, reference: str) -> tuple[str, bytes]:
        return reference, self.blobs[reference]

    def get_blob(self, digest: str) -> bytes:
        return self.blobs[digest]


def index_of(*children: tuple[str, str]) -> dict[str, Any]:
    """An index as verify reads it: ``(target, digest)`` per child."""
    return {"manifests": [{"digest": digest, "platform": {"architecture": target,
                                                          "os": "custom"}}
                          for target, digest in children]}


def check(registry: FakeRegistry, index: dict[str, Any], image: ImageReceipt) -> list[str]:
    return check_target(cast("Client", registry), index, "esp32c3", image)


def test_the_registry_serves_exactly_our_image() -> None:
    image = oci.firmware_image(target="esp32c3", app_name="hello.bin", firmware=FIRMWARE)
    registry = FakeRegistry(image, {TAG: image.manifest.digest})
    ours = receipt_of(image)
    assert check(registry, index_of(("esp32c3", image.manifest.digest)), ours) == []


def test_no_child_for_the_platform() -> None:
    image = oci.firmware_image(target="esp32c3", app_name="hello.bin", firmware=FIRMWARE)
    registry = FakeRegistry(image, {TAG: image.manifest.digest})
    assert check(registry, index_of(("esp32c6", image.manifest.digest)),
                 receipt_of(image)) == ["the index has no child for platform custom/esp32c3"]


def test_a_missing_tag_and_another_firmware_are_both_reported() -> None:
    served = oci.firmware_image(target="esp32c3", app_name="hello.bin", firmware=b"\xe9other")
    ours = oci.firmware_image(target="esp32c3", app_name="hello.bin", firmware=FIRMWARE)
    registry = FakeRegistry(served, {})
    problems = check(registry, index_of(("esp32c3", served.manifest.digest)), receipt_of(ours))
    other_sha = hashlib.sha256(b"\xe9other").hexdigest()
    assert problems == [
        f"the index points at {served.manifest.digest}, the local image is "
        f"{ours.manifest.digest}",
        f"tag {TAG} is missing",
        f"config is {served.config.digest}, the local one is {ours.config.digest}",
        f"firmware/hello.bin differs from the local hello.bin (sha256 {other_sha[:12]}…, "
        f"local {hashlib.sha256(FIRMWARE).hexdigest()[:12]}…)",
    ]


def test_a_tag_pointing_elsewhere_and_another_file_name() -> None:
    image = oci.firmware_image(target="esp32c3", app_name="other.bin", firmware=FIRMWARE)
    registry = FakeRegistry(image, {TAG: "sha256:" + "9" * 64})
    ours = receipt_of(image)
    problems = check(registry, index_of(("esp32c3", image.manifest.digest)), ours)
    assert problems == [
        f"tag {TAG} points at sha256:{'9' * 64}, the local image is {image.manifest.digest}",
        "the consumer would flash firmware/other.bin, not firmware/hello.bin",
    ]


def test_a_layer_that_does_not_match_its_digest() -> None:
    image = oci.firmware_image(target="esp32c3", app_name="hello.bin", firmware=FIRMWARE)
    registry = FakeRegistry(image, {TAG: image.manifest.digest})
    registry.blobs[image.layer.digest] = b"tampered"
    assert check(registry, index_of(("esp32c3", image.manifest.digest)), receipt_of(image)) == [
        f"layer {image.layer.digest} does not match its digest"]


def test_an_image_with_two_layers() -> None:
    image = oci.firmware_image(target="esp32c3", app_name="hello.bin", firmware=FIRMWARE)
    manifest = json.loads(image.manifest.data)
    manifest["layers"] *= 2
    two = oci.Image(manifest=oci.Blob(oci.MANIFEST_MEDIA_TYPE, oci.canonical_json(manifest)),
                    config=image.config, layer=image.layer)
    registry = FakeRegistry(two, {TAG: two.manifest.digest})
    assert check(registry, index_of(("esp32c3", two.manifest.digest)), receipt_of(two)) == [
        "the image has 2 layers, expected 1"]
