"""Deterministic OCI blobs, manifests and indexes, and the image layout."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esp32tasks import oci
from esp32tasks.errors import PublishError


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


def test_a_delta_artifact_refers_to_its_image_and_is_never_firmware() -> None:
    patch = oci.Blob(oci.DELTA_LAYER_MEDIA_TYPE, b"\x10\xde\xcd\xfc" + bytes(60) + b"\x04")
    subject = {"mediaType": oci.MANIFEST_MEDIA_TYPE, "digest": "sha256:" + "a" * 64,
               "size": 500}
    artifact = oci.delta_artifact(patch=patch, name="from-1.0.0.patch", subject=subject,
                                  annotations={"dev.esp32tasks.delta.base-version": "1.0.0"})
    doc = json.loads(artifact.data)
    assert doc["artifactType"] == oci.DELTA_ARTIFACT_TYPE
    assert doc["subject"] == subject
    assert doc["config"] == {"mediaType": "application/vnd.oci.empty.v1+json",
                             "digest": oci.EMPTY.digest, "size": 2}
    assert [layer["digest"] for layer in doc["layers"]] == [patch.digest]
    assert oci.referrers_tag("sha256:" + "a" * 64) == "sha256-" + "a" * 64
    with pytest.raises(ValueError, match="firmware"):
        oci.delta_artifact(patch=patch, name="firmware/x.patch", subject=subject,
                           annotations={})


def test_the_fallback_index_keeps_what_others_wrote() -> None:
    subject = {"mediaType": oci.MANIFEST_MEDIA_TYPE, "digest": "sha256:" + "a" * 64,
               "size": 500}
    ours = oci.delta_artifact(patch=oci.Blob(oci.DELTA_LAYER_MEDIA_TYPE, b"p"),
                              name="from-1.0.0.patch", subject=subject, annotations={})
    cosign = {"mediaType": oci.MANIFEST_MEDIA_TYPE, "digest": "sha256:" + "c" * 64, "size": 9,
              "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"}
    theirs = json.dumps({"schemaVersion": 2, "mediaType": oci.INDEX_MEDIA_TYPE,
                         "manifests": [cosign]}).encode()
    merged = oci.with_referrer(theirs, ours, oci.DELTA_ARTIFACT_TYPE, {"k": "v"})
    assert merged is not None
    entries = json.loads(merged.data)["manifests"]
    assert entries[0] == cosign
    assert entries[1]["digest"] == ours.digest
    assert entries[1]["artifactType"] == oci.DELTA_ARTIFACT_TYPE
    assert oci.with_referrer(merged.data, ours, oci.DELTA_ARTIFACT_TYPE, {"k": "v"}) is None
    fresh = oci.with_referrer(None, ours, oci.DELTA_ARTIFACT_TYPE, {})
    assert fresh is not None
    assert [m["digest"] for m in json.loads(fresh.data)["manifests"]] == [ours.digest]
    with pytest.raises(PublishError, match="no image index"):
        oci.with_referrer(b'{"layers": []}', ours, oci.DELTA_ARTIFACT_TYPE, {})
