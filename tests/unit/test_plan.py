"""Pure parts: deterministic OCI blobs, the layout, tag names and the plan."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esp32tasks import oci
from esp32tasks.config import MAX_TAG_LENGTH, TAG_SUFFIX_MAX, parse
from esp32tasks.errors import ConfigError
from esp32tasks.gitinfo import GitState
from esp32tasks.plan import expand, image_tag, index_tag

GIT = GitState(revision="0123456789abcdef0123456789abcdef01234567", dirty=False,
               commit_time="2026-01-01T00:00:00Z",
               files=("app/main.c", "app/sdk.c6", "app/sdk.r8", "app/CMakeLists.txt"))

TAG_PART = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True)


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


@given(TAG_PART, TAG_PART, TAG_PART, st.booleans())
def test_tags_are_valid_oci_tags(target: str, app_type: str, version: str, dirty: bool) -> None:
    git = GitState(revision=GIT.revision, dirty=dirty, commit_time=GIT.commit_time, files=())
    tag = image_tag(target.lower(), app_type, version, git)
    assert tag.startswith(f"{target.lower()}-{app_type}-{version}-0123456")
    assert tag.endswith("-dirty") == dirty
    assert "--" not in tag.replace(f"{target.lower()}-{app_type}-{version}", "")
    assert len(tag) <= len(f"{target}-{app_type}-{version}") + TAG_SUFFIX_MAX <= MAX_TAG_LENGTH
    assert index_tag(app_type, version) == f"{app_type}-{version}"


PLAN_TOML = """\
[project]
name = "hello"
app_type = "ota"
version = "1.2.0"
app_dir = "app"

[builder]
kind = "command"
command = ["make"]

[[targets]]
name = "esp32c6"
files = ["sdk.c6"]

[[targets]]
name = "esp32s3r8"
sdkconfig_defaults = ["sdk.r8"]
"""


def test_plan_names_and_source_sets(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    for name in ("sdk.c6", "sdk.r8"):
        (tmp_path / "app" / name).write_text("x")
    plan = expand(parse(PLAN_TOML, tmp_path / "targets.toml"), GIT)
    c6, r8 = plan.steps
    assert c6.sources == ("app/CMakeLists.txt", "app/main.c", "app/sdk.c6")
    assert r8.sources == ("app/CMakeLists.txt", "app/main.c", "app/sdk.r8")
    assert c6.tag == "esp32c6-ota-1.2.0-0123456"
    assert r8.target.chip == "esp32s3"
    assert r8.build_dir == PurePosixPath("build/esp32s3r8")
    assert r8.store_prefix == "hello/ota-1.2.0/esp32s3r8/artifacts/"
    assert plan.index_tag == "ota-1.2.0"
    assert plan.release_prefix == "hello/ota-1.2.0/"


def test_plan_missing_per_target_file(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "sdk.r8").write_text("x")
    with pytest.raises(ConfigError) as info:
        expand(parse(PLAN_TOML, tmp_path / "targets.toml"), GIT)
    assert str(info.value) == ("targets.toml: targets[0]: file 'sdk.c6' does not exist in app; "
                               "create it or remove it from the list")
