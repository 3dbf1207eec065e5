"""The first-flash bundle over real builds of the example, and the manifest against the types
esp-web-tools publishes (its npm package, installed by ci/web-tools.sh)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

from esp32tasks.bundle import CHIP_FAMILIES, MergedImage, WebBuild, merge, web_manifest
from esp32tasks.errors import CommandFailed
from tests.support.repo import TARGETS, Repo

pytestmark = pytest.mark.integration

BOOTLOADER = "bootloader/bootloader.bin"
WEB_TOOLS = Path(os.environ.get("ESP_WEB_TOOLS_DIR",
                                "/opt/esp-web-tools/node_modules/esp-web-tools"))


def factory(target: str) -> str:
    """Where the release puts a target's factory image, relative to manifest.json."""
    return f"{target}/artifacts/hello-{target}-factory.bin"


def placed(image: MergedImage, build: Path) -> dict[str, bytes]:
    """Each part's bytes in the merged image, after proving the gaps are erased flash (0xFF)
    and that nothing follows the last part."""
    data = image.path.read_bytes()
    assert (image.size, image.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    found, end = {}, 0
    for offset, name in image.parts:
        assert offset >= end, f"{name} at {offset:#x} overlaps the part before"
        assert data[end:offset] == b"\xff" * (offset - end), f"gap before {name}"
        size = (build / name).stat().st_size
        found[name] = data[offset:offset + size]
        end = offset + size
    assert len(data) == end
    return found


def test_every_part_sits_at_its_offset_and_the_manifest_finds_each_image(
        repo: Repo, tmp_path: Path) -> None:
    repo.doit("build")
    release = tmp_path / "release"  # as uploaded: <prefix>/manifest.json beside <target>/...
    images: dict[str, MergedImage] = {}
    for target in TARGETS:
        build = repo.path / "build" / target
        args = json.loads((build / "flasher_args.json").read_text())
        image = merge(build, build / "flasher_args.json", release / factory(target))
        assert image.chip == args["extra_esptool_args"]["chip"] == target
        assert image.parts == tuple(sorted((int(k, 16), v)
                                           for k, v in args["flash_files"].items()))
        assert image.parts[0] == (0, BOOTLOADER)  # these chips boot from 0x0
        # esptool rewrites the bootloader header's flash mode (byte 2) and size/frequency
        # (byte 3), and then its appended SHA-256, to the settings it is given. The example's
        # bootloader was made with the settings flasher_args.json lists, so here no byte
        # changes: every part, the bootloader too, is its file's bytes exactly (the next test
        # gives other settings).
        for name, content in placed(image, build).items():
            assert content == (build / name).read_bytes(), f"{target}: {name}"
        images[target] = image

    manifest = web_manifest("hello", "1.0.0", [
        WebBuild(target=t, chip=image.chip, path=factory(t)) for t, image in images.items()])
    prefix = "https://store.example/hello/hello-1.0.0/"
    for target, entry in zip(TARGETS, manifest["builds"], strict=True):
        [part] = entry["parts"]
        assert part["offset"] == 0
        # esp-web-tools fetches new URL(part.path, manifestURL): under the manifest's prefix
        url = urljoin(prefix + "manifest.json", part["path"])
        assert url.startswith(prefix)
        served = release / url.removeprefix(prefix)
        assert hashlib.sha256(served.read_bytes()).hexdigest() == images[target].sha256


def test_other_flash_settings_rewrite_only_the_bootloader_header_and_its_digest(
        repo: Repo, tmp_path: Path) -> None:
    repo.doit("build:esp32c3", "build:esp32c6")
    for target in ("esp32c3", "esp32c6"):
        build = repo.path / "build" / target
        args = json.loads((build / "flasher_args.json").read_text())
        freq = args["flash_settings"]["flash_freq"]
        args["flash_settings"] = {"flash_mode": "qio", "flash_size": "4MB", "flash_freq": freq}
        other = tmp_path / f"{target}-flasher_args.json"
        other.write_text(json.dumps(args))
        parts = placed(merge(build, other, tmp_path / f"{target}.bin"), build)

        original, patched = (build / BOOTLOADER).read_bytes(), parts.pop(BOOTLOADER)
        # The ESP image header: byte 2 the flash mode (0 QIO, 2 DIO), byte 3 the flash size
        # (high nibble: 1 is 2MB, 2 is 4MB) and frequency (low nibble, kept here); byte 23
        # (the extended header's hash_appended) says the image ends in its SHA-256.
        assert (original[2], original[3] >> 4, original[23]) == (2, 1, 1)
        assert (patched[2], patched[3]) == (0, 0x20 | original[3] & 0x0F)
        assert patched[:2] + patched[4:-32] == original[:2] + original[4:-32]
        assert patched[-32:] == hashlib.sha256(patched[:-32]).digest() != original[-32:]
        for name, content in parts.items():
            assert content == (build / name).read_bytes(), f"{target}: {name}"


def test_a_failing_esptool_is_one_line_naming_flasher_args(repo: Repo, tmp_path: Path) -> None:
    repo.doit("build:esp32c3")
    build = repo.path / "build" / "esp32c3"
    args = json.loads((build / "flasher_args.json").read_text())
    args["flash_settings"]["flash_freq"] = "90m"
    bad = tmp_path / "flasher_args.json"
    bad.write_text(json.dumps(args))
    out = tmp_path / "out" / "factory.bin"
    with pytest.raises(CommandFailed) as caught:
        merge(build, bad, out)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"esptool merge-bin of {bad} failed (exit 2): Invalid value for "
                              "'--flash-freq' / '-ff': '90m' is not one of 'keep', '80m',")
    assert message.endswith("; fix the build's flash settings or files and build again")
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


# --- the manifest against esp-web-tools' published types --------------------------------
# A small reader of the generated dist/const.d.ts (flat `export interface` blocks of
# `name?: type;` members) rather than a TypeScript-to-JSON-schema tool: no compiler to
# install, and a changed file format fails the asserts below instead of passing silently.

TS_TYPES = {"string": str, "number": int, "boolean": bool}


def members(text: str, start: int) -> dict[str, tuple[bool, str]]:
    """The members of the ``{ ... }`` body opening just before ``start``: name ->
    (optional, type)."""
    found: dict[str, tuple[bool, str]] = {}
    depth, begin = 0, start
    for i in range(start, len(text)):
        char = text[i]
        if char in "{([":
            depth += 1
        elif char in "})]":
            if depth == 0:
                assert not text[begin:i].strip(), f"unparsed member {text[begin:i]!r}"
                return found
            depth -= 1
        elif char == ";" and depth == 0:
            member = re.fullmatch(r"\s*(\w+)(\?)?\s*:\s*(.*?)\s*", text[begin:i], re.DOTALL)
            assert member, f"not a property: {text[begin:i]!r}"
            found[member[1]] = (member[2] == "?", member[3])
            begin = i + 1
    raise AssertionError("unclosed interface body")


def interface(text: str, name: str) -> dict[str, tuple[bool, str]]:
    opening = re.search(rf"^export interface {name}\s*\{{", text, re.MULTILINE)
    assert opening, f"no `export interface {name}` in const.d.ts"
    return members(text, opening.end())


def conforms(value: dict[str, Any], declared: dict[str, tuple[bool, str]], where: str) -> None:
    assert set(value) <= set(declared), f"{where}: not declared: {set(value) - set(declared)}"
    required = {key for key, (optional, _) in declared.items() if not optional}
    assert required <= set(value), f"{where}: missing {required - set(value)}"
    for key, item in value.items():
        kind = declared[key][1]
        if kind in TS_TYPES:
            assert type(item) is TS_TYPES[kind], f"{where}.{key} is not a {kind}: {item!r}"


def test_the_manifest_has_the_shape_esp_web_tools_declares() -> None:
    types = WEB_TOOLS / "dist" / "const.d.ts"
    if not types.is_file():
        pytest.skip(f"esp-web-tools is not installed at {WEB_TOOLS} (ESP_WEB_TOOLS_DIR): run "
                    "ci/web-tools.sh, as ci/setup does")
    text = re.sub(r"/\*.*?\*/", "", types.read_text(), flags=re.DOTALL)
    manifest_type, build_type = interface(text, "Manifest"), interface(text, "Build")
    assert manifest_type["builds"] == (False, "Build[]")
    parts_optional, parts_type = build_type["parts"]
    assert not parts_optional
    assert parts_type.startswith("{"), parts_type
    assert parts_type.endswith("}[]"), parts_type
    part_type = members(parts_type, 1)
    families = set(re.findall(r'"([^"]+)"', build_type["chipFamily"][1]))
    assert "ESP32-C3" in families, build_type["chipFamily"]

    # every chip we know, so every chipFamily we can emit
    builds = [WebBuild(target=chip, chip=chip, path=f"{chip}/factory.bin")
              for chip in CHIP_FAMILIES]
    manifest = web_manifest("hello", "1.0.0", builds)
    conforms(manifest, manifest_type, "manifest")
    for i, build in enumerate(manifest["builds"]):
        conforms(build, build_type, f"builds[{i}]")
        assert build["chipFamily"] in families, f"builds[{i}]: {build['chipFamily']}"
        for j, part in enumerate(build["parts"]):
            conforms(part, part_type, f"builds[{i}].parts[{j}]")
    assert {b["chipFamily"] for b in manifest["builds"]} == set(CHIP_FAMILIES.values())
