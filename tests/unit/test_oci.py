"""Deterministic OCI blobs, manifests and indexes, and the image layout."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from esp32tasks import oci


def test_image_is_what_esp32_flashjob_reads() -> None:
    image = oci.firmware_image(target="esp32s3r8", app_name="hello.bin", firmware=b"\xe9app")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.layer.data))) as tar:
        members = tar.getmembers()
        assert [(m.name, m.type, m.mtime, m.uid, m.gid, m.mode) for m in members] == [
            ("firmware", tarfile.DIRTYPE, 0, 0, 0, 0o755),
            ("firmware/hello.bin", tarfile.REGTYPE, 0, 0, 0, 0o644)]
        extracted = tar.extractfile(members[1])
        assert extracted is not None
        assert extracted.read() == b"\xe9app"
    config = json.loads(image.config.data)
    assert (config["architecture"], config["os"]) == ("esp32s3r8", "custom")
    manifest = json.loads(image.manifest.data)
    assert manifest["config"] == image.config.descriptor()
    assert manifest["layers"][0]["digest"] == image.layer.digest
    assert manifest["layers"][0]["mediaType"] == oci.LAYER_MEDIA_TYPE
    assert image.layer.data[4:8] == b"\0\0\0\0", "gzip mtime is zero"


@given(st.binary(max_size=4096), st.sampled_from(["esp32c3", "esp32s3r8", "board-a"]))
def test_same_firmware_same_digest(firmware: bytes, target: str) -> None:
    a = oci.firmware_image(target=target, app_name="app.bin", firmware=firmware)
    b = oci.firmware_image(target=target, app_name="app.bin", firmware=bytes(firmware))
    assert a.manifest.digest == b.manifest.digest
    c = oci.firmware_image(target=target, app_name="app.bin", firmware=firmware + b"\0")
    assert c.manifest.digest != a.manifest.digest


def test_index_children_carry_platform() -> None:
    blob = oci.image_index([("esp32h2", "sha256:" + "b" * 64, 10),
                            ("esp32c3", "sha256:" + "a" * 64, 11)],
                           {"org.opencontainers.image.version": "1.0.0"})
    index = json.loads(blob.data)
    assert index["mediaType"] == oci.INDEX_MEDIA_TYPE
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "esp32c3", "os": "custom"}, {"architecture": "esp32h2", "os": "custom"}]


def test_layout_retag_replaces_the_slot(tmp_path: Path) -> None:
    layout = oci.Layout(tmp_path / "oci")
    image = oci.firmware_image(target="esp32c3", app_name="a.bin", firmware=b"x")
    for blob in (*image.blobs, image.manifest):
        assert layout.write_blob(blob)
    assert not layout.write_blob(image.layer), "a blob is written once"
    layout.tag("esp32c3-app-1-aaaaaaa", image.manifest, slot="image:esp32c3")
    layout.tag("esp32c3-app-1-bbbbbbb", image.manifest, slot="image:esp32c3")
    assert layout.resolve("esp32c3-app-1-aaaaaaa") is None
    resolved = layout.resolve("esp32c3-app-1-bbbbbbb")
    assert resolved is not None
    assert resolved["digest"] == image.manifest.digest
    assert json.loads((tmp_path / "oci/oci-layout").read_text()) == {"imageLayoutVersion":
                                                                     "1.0.0"}
    assert layout.read_blob(image.layer.digest) == image.layer.data
