"""The app image check, against images made here with esptool's own image writer."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from esptool.bin_image import ESP32C3FirmwareImage, ImageSegment

from esp32tasks.build.firmware import APP_DESC_MAGIC, AppInfo, read_app
from esp32tasks.errors import FirmwareError

LABEL = "build/esp32c3/hello.bin"
ELF_SHA = bytes(range(32))
#: Where ESP-IDF links .flash.appdesc on the ESP32-C3: the start of the DROM mapping, after
#: the image header (so that the segment's data is 64 KiB-aligned with its address).
DROM = 0x3C000020


def app_desc(*, version: bytes = b"1.0.0", project: bytes = b"hello",
             magic: int = APP_DESC_MAGIC) -> bytes:
    """An ``esp_app_desc_t`` (256 bytes)."""
    desc = struct.pack("<II8x32s32s16s16s32s32s", magic, 0, version, project, b"12:00:00",
                       b"Jan  1 2026", b"v5.3", ELF_SHA)
    return desc.ljust(256, b"\0")


def image(first_segment: bytes, *, digest: bool = True) -> bytes:
    """An ESP32-C3 app image whose first segment is ``first_segment``, from esptool."""
    app = ESP32C3FirmwareImage(append_digest=digest)
    app.entrypoint = 0x42000000
    app.segments = [ImageSegment(DROM, first_segment)]
    data: bytes | None = app.save(None)
    assert data is not None
    return data


VALID = image(app_desc() + b"\x13" * 64)


def check(tmp_path: Path, data: bytes, *, chip: str = "esp32c3",
          version: str = "1.0.0") -> AppInfo:
    path = tmp_path / "hello.bin"
    path.write_bytes(data)
    return read_app(path, chip=chip, version=version, label=LABEL)


def error(tmp_path: Path, data: bytes, *, chip: str = "esp32c3", version: str = "1.0.0") -> str:
    with pytest.raises(FirmwareError) as info:
        check(tmp_path, data, chip=chip, version=version)
    return str(info.value)


def test_a_valid_image_passes_with_what_its_descriptor_says(tmp_path: Path) -> None:
    assert check(tmp_path, VALID) == AppInfo(chip="esp32c3", version="1.0.0",
                                             project_name="hello", elf_sha256=ELF_SHA.hex())


def test_a_version_and_name_that_fill_their_fields(tmp_path: Path) -> None:
    version, project = "1" * 31, "p" * 32
    info = check(tmp_path, image(app_desc(version=version.encode(), project=project.encode())),
                 version=version)
    assert (info.version, info.project_name) == (version, project)


def test_an_image_without_a_digest_passes(tmp_path: Path) -> None:
    assert check(tmp_path, image(app_desc(), digest=False)).version == "1.0.0"


NOT_AN_IMAGE = (f"{LABEL} is not an ESP app image (no 0xE9 magic); check that the build's "
                "flasher_args.json names the app binary")


@pytest.mark.parametrize("data", [b"", b"\xe9" * 23, b"\x7fELF" + VALID[4:], b"\0" + VALID[1:]])
def test_no_magic(tmp_path: Path, data: bytes) -> None:
    assert error(tmp_path, data) == NOT_AN_IMAGE


def test_an_image_for_another_chip(tmp_path: Path) -> None:
    assert error(tmp_path, VALID, chip="esp32c6") == (
        f"{LABEL} is an image for esp32c3, but the target's chip is esp32c6; build it for "
        "esp32c6 (IDF_TARGET)")


def test_an_unknown_chip_id(tmp_path: Path) -> None:
    data = bytearray(VALID)
    struct.pack_into("<H", data, 12, 0x7777)
    assert error(tmp_path, bytes(data)) == (
        f"{LABEL} is an image for chip id 30583, but the target's chip is esp32c3; build it "
        "for esp32c3 (IDF_TARGET)")


def test_a_bad_checksum(tmp_path: Path) -> None:
    data = bytearray(VALID)
    checksum = len(data) - 33  # the byte before the appended SHA-256
    stored = data[checksum]
    data[checksum] ^= 0xFF
    assert error(tmp_path, bytes(data)) == (
        f"{LABEL} has a bad checksum ({stored ^ 0xFF:#04x}, computed {stored:#04x}); rebuild it")


def test_a_changed_byte_fails_the_checksum(tmp_path: Path) -> None:
    data = bytearray(VALID)
    data[8 + 16 + 8 + 256 + 10] ^= 0x01  # headers, the descriptor, then the segment's code
    stored = VALID[-33]  # the checksum is the XOR of every segment byte (and 0xEF)
    assert error(tmp_path, bytes(data)) == (
        f"{LABEL} has a bad checksum ({stored:#04x}, computed {stored ^ 0x01:#04x}); rebuild it")


def test_a_bad_sha256(tmp_path: Path) -> None:
    data = bytearray(VALID)
    data[-1] ^= 0xFF
    computed = hashlib.sha256(VALID[:-32]).hexdigest()
    assert error(tmp_path, bytes(data)) == (
        f"{LABEL} has a bad SHA-256 digest ({bytes(data[-32:]).hex()}, computed {computed}); "
        "rebuild it")


def test_a_truncated_image_is_corrupt(tmp_path: Path) -> None:
    assert error(tmp_path, VALID[:100]) == (
        f"{LABEL} is a corrupt app image (End of file reading segment 0x3c000020, length 320 "
        "(actual length 68)); rebuild it")


@pytest.mark.parametrize("first", [
    app_desc(magic=0x12345678),
    b"\x13" * 256,
    app_desc()[:128],  # a first segment too short to hold one
])
def test_no_app_descriptor(tmp_path: Path, first: bytes) -> None:
    assert error(tmp_path, image(first)) == (
        f"{LABEL} has no esp_app_desc_t at the start of its first segment; link "
        ".flash.appdesc first (ESP-IDF does)")


def test_a_version_that_is_not_the_projects(tmp_path: Path) -> None:
    assert error(tmp_path, VALID, version="1.0.1") == (
        f"{LABEL}: the app descriptor's version is '1.0.0', but targets.toml project.version "
        "is '1.0.1'; build with FIRMWARE_VERSION (or set PROJECT_VER) so they agree")
