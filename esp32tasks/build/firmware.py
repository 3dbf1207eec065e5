"""Read an ESP app image back with esptool's loader and check it against its target."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Final, NamedTuple

from esp32tasks.errors import FirmwareError

__all__ = ["APP_DESC_MAGIC", "AppInfo", "read_app"]

APP_DESC_MAGIC: Final = 0xABCD5432
IMAGE_MAGIC: Final = 0xE9
#: common header (8 bytes) + extended header up to chip_id: wp_pin, 3 drive bytes.
CHIP_ID_OFFSET: Final = 12


class AppInfo(NamedTuple):  # a NamedTuple: a no-op release imports this module
    chip: str
    version: str
    project_name: str
    elf_sha256: str


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def read_app(path: Path, *, chip: str, version: str, label: str) -> AppInfo:
    """Validate ``path`` as an app image for ``chip`` whose descriptor says ``version``.

    ``label`` (e.g. ``build/esp32c3/hello.bin``) names the file in messages.
    """
    from esptool.bin_image import LoadFirmwareImage  # costly import: only when validating
    from esptool.targets import CHIP_DEFS

    data = path.read_bytes()
    if len(data) < 24 or data[0] != IMAGE_MAGIC:
        raise FirmwareError(f"{label} is not an ESP app image (no 0xE9 magic); check that the "
                            "build's flasher_args.json names the app binary")
    (chip_id,) = struct.unpack_from("<H", data, CHIP_ID_OFFSET)
    actual = next((name for name, rom in CHIP_DEFS.items()
                   if getattr(rom, "IMAGE_CHIP_ID", None) == chip_id), f"chip id {chip_id}")
    if actual != chip:
        raise FirmwareError(f"{label} is an image for {actual}, but the target's chip is "
                            f"{chip}; build it for {chip} (IDF_TARGET)")
    try:
        image = LoadFirmwareImage(chip, data)
    except Exception as exc:  # esptool raises FatalError, struct.error, RuntimeError...
        raise FirmwareError(f"{label} is a corrupt app image ({exc}); rebuild it") from None
    if image.checksum != image.calculate_checksum():
        raise FirmwareError(f"{label} has a bad checksum "
                            f"({image.checksum:#04x}, computed {image.calculate_checksum():#04x});"
                            " rebuild it")
    if image.append_digest and image.stored_digest != image.calc_digest:
        raise FirmwareError(f"{label} has a bad SHA-256 digest "
                            f"({image.stored_digest.hex()}, computed {image.calc_digest.hex()});"
                            " rebuild it")
    first = image.segments[0].data if image.segments else b""
    if len(first) < 256 or struct.unpack_from("<I", first)[0] != APP_DESC_MAGIC:
        raise FirmwareError(f"{label} has no esp_app_desc_t at the start of its first "
                            "segment; link .flash.appdesc first (ESP-IDF does)")
    info = AppInfo(
        chip=actual,
        version=_cstr(first[16:48]),
        project_name=_cstr(first[48:80]),
        elf_sha256=first[144:176].hex(),
    )
    if info.version != version:
        raise FirmwareError(f"{label}: the app descriptor's version is '{info.version}', but "
                            f"targets.toml project.version is '{version}'; build with "
                            "FIRMWARE_VERSION (or set PROJECT_VER) so they agree")
    return info
