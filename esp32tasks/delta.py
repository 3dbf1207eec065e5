"""Delta OTA patches for ESP-IDF's ``esp_delta_ota`` component (pure: bytes in, bytes out).

What a device applies, from espressif/idf-extra-components (``esp_delta_ota`` 1.1.4):

* A detools *sequential* patch, *heatshrink*-compressed, nothing else:
  ``esp_delta_ota/CMakeLists.txt`` compiles ``detools/c/detools.c`` with
  ``DETOOLS_CONFIG_COMPRESSION_NONE=0``, ``..._LZMA=0``, ``..._CRLE=0`` (heatshrink stays on),
  and ``src/esp_delta_ota.c`` calls only ``detools_apply_patch_init``/``_process``, whose
  ``process_init_fixed_header`` (``c/detools.c`` in eerimoq/detools) refuses any patch type
  but ``PATCH_TYPE_SEQUENTIAL``. The component has no Kconfig: heatshrink is built static
  (``c/heatshrink/heatshrink_config.h``: ``HEATSHRINK_STATIC_WINDOW_BITS 8``,
  ``HEATSHRINK_STATIC_LOOKAHEAD_BITS 7``), and ``patch_reader_heatshrink_decompress``
  returns ``DETOOLS_HEATSHRINK_HEADER`` for a patch made with any other window or lookahead.
  ``process_dfpatch_size`` refuses a data-format patch (``DETOOLS_NOT_IMPLEMENTED``), so
  we never pass ``data_format``.
* A 64-byte header before it, made by the example's
  ``esp_delta_ota/examples/https_delta_ota/tools/esp_delta_ota_patch_gen.py`` and checked by
  its ``main/main.c`` (``verify_patch_header``): bytes 0-3 the magic ``0xfccdde10``
  little-endian, bytes 4-35 the base image's SHA-256 as ``esptool image_info`` prints it
  ("Validation Hash: <hex> (valid)", the script's regex), bytes 36-63 zero. The device
  compares bytes 4-35 with ``esp_partition_get_sha256`` of its running partition, which for
  an app with ``hash_appended`` returns the appended digest (ESP-IDF
  ``components/bootloader_support/src/bootloader_common.c``,
  ``bootloader_common_get_sha256_of_partition``). :func:`validation_hash` is that rule.

detools' patch layout (``detools/create.py`` ``pack_header``/``create_patch_sequential``,
``detools/common.py``): byte 0 is ``bitstruct 'p1u3u4'``, patch type in bits 4-6 and
compression in bits 0-3 (sequential 0, heatshrink 4: ``0x04``); then the new image's size
as a detools size (bit 7 "more", bit 6 sign, 6 then 7 bits a byte); then the heatshrink
stream, whose first byte is ``(window_sz2 - 4) << 4 | (lookahead_sz2 - 3)``
(``detools/compression/heatshrink.py``): ``0x44`` for 8/7. The generator's own call,
``detools.create_patch(base, new, patch, compression='heatshrink')``, leaves the rest at
detools' defaults (sequential, bsdiff, window 8, lookahead 7): :func:`make` spells them out
and makes the same bytes.

``detools`` and ``esptool`` are imported inside the functions that use them: a no-op release
imports this module without paying for either.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Final

from esp32tasks.errors import Esp32TasksError

__all__ = ["HEADER_SIZE", "LOOKAHEAD_SZ2", "MAGIC", "WINDOW_SZ2", "DeltaError", "Patch",
           "apply", "check", "make", "validation_hash"]

MAGIC: Final = 0xFCCDDE10
HEADER_SIZE: Final = 64
_MAGIC_END: Final = 4
_HASH_END: Final = 36  # bytes 4-35: the base's validation hash; 36-63 reserved, zero

#: detools/common.py: PATCH_TYPES and COMPRESSIONS, by number.
_PATCH_TYPES: Final = {0: "sequential", 1: "in-place", 2: "hdiffpatch"}
_COMPRESSIONS: Final = {0: "none", 1: "lzma", 2: "crle", 3: "bz2", 4: "heatshrink", 5: "zstd",
                        6: "lz4"}
_SEQUENTIAL: Final = 0
_HEATSHRINK: Final = 4
#: What esp_delta_ota's static heatshrink decoder is built for (heatshrink_config.h).
WINDOW_SZ2: Final = 8
LOOKAHEAD_SZ2: Final = 7

_IMAGE_MAGIC: Final = 0xE9
_CHIP_ID_OFFSET: Final = 12  # esp_image_header_t.chip_id (uint16)
_HASH_APPENDED_OFFSET: Final = 23  # esp_image_header_t.hash_appended
_IMAGE_HEADER_SIZE: Final = 24
_AGAIN: Final = "make the patch again from {} and the new app"


class DeltaError(Esp32TasksError):
    """A delta patch cannot be made, or one would not update a device running its base."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Patch:
    """A checked delta patch: ``data`` is what is published."""

    data: bytes
    base_sha256: str  #: hex, the header's base validation hash
    ratio: float  #: len(data) / len(new)


def validation_hash(app: bytes, *, label: str) -> bytes:
    """The SHA-256 a device running ``app`` reports: the digest appended to the image.

    The rule (esptool ``bin_image.ESP32FirmwareImage.__init__``, ESP-IDF's
    ``esp_image_format``): the image is its 24-byte header, its segments, then padding to
    15 mod 16 and the checksum byte, so that it ends 16-aligned at ``end``. When the header's
    ``hash_appended`` byte (offset 23) is 1, ``app[end:end + 32]`` is SHA-256 of
    ``app[:end]``; esptool's image-info prints it as "Validation hash". Bytes after it (a
    Secure Boot signature sector, padding) are not part of it. ``label`` names ``app``.
    """
    from esptool.bin_image import LoadFirmwareImage  # costly import: only when hashing
    from esptool.targets import CHIP_DEFS

    rebuild = "rebuild it with ESP-IDF (idf.py build appends the hash)"
    if len(app) < _IMAGE_HEADER_SIZE or app[0] != _IMAGE_MAGIC:
        raise DeltaError(f"{label} is not an ESP app image (no 0xE9 magic in a 24-byte "
                         f"header); {rebuild}")
    (chip_id,) = struct.unpack_from("<H", app, _CHIP_ID_OFFSET)
    chip = next((name for name, rom in CHIP_DEFS.items()
                 if getattr(rom, "IMAGE_CHIP_ID", None) == chip_id), None)
    if chip is None:
        raise DeltaError(f"{label} has chip id {chip_id}, which no ESP32 chip esptool knows "
                         f"has; {rebuild}")
    if app[_HASH_APPENDED_OFFSET] == 0:
        raise DeltaError(f"{label} has no appended SHA-256 (hash_appended is 0), so a device "
                         f"running it cannot be matched to a delta patch; {rebuild} (not "
                         "with esptool elf2image --dont-append-digest)")
    try:
        image = LoadFirmwareImage(chip, app)
    except Exception as exc:  # esptool raises FatalError, struct.error, IndexError...
        raise DeltaError(f"{label} is a corrupt app image ({exc}); {rebuild}") from None
    stored, computed = bytes(image.stored_digest), bytes(image.calc_digest)
    if len(stored) < len(computed):
        raise DeltaError(f"{label} ends {len(stored)} bytes into its appended SHA-256 (of 32):"
                         f" the file is truncated; {rebuild}")
    if stored != computed:
        raise DeltaError(f"{label}'s appended SHA-256 {stored.hex()} is not the SHA-256 of "
                         f"its content ({computed.hex()}); {rebuild}")
    return stored


def make(base: bytes, new: bytes, *, base_label: str, new_label: str) -> Patch:
    """The esp_delta_ota patch from ``base`` to ``new``, checked by :func:`check`.

    ``new`` must have an appended hash too: it is the base of the next patch.
    """
    import detools  # costly import: only when a patch is made

    base_hash = validation_hash(base, label=base_label)
    validation_hash(new, label=new_label)
    body = io.BytesIO()
    # the keywords esp_delta_ota's decoder needs, spelled out (detools' defaults but for
    # compression); use_mmap=False: a BytesIO has no file descriptor to map
    detools.create_patch(io.BytesIO(base), io.BytesIO(new), body, compression="heatshrink",
                         patch_type="sequential", algorithm="bsdiff", data_format=None,
                         heatshrink_window_sz2=WINDOW_SZ2,
                         heatshrink_lookahead_sz2=LOOKAHEAD_SZ2, use_mmap=False)
    data = _header(base_hash) + body.getvalue()
    check(base, new, data, base_label=base_label)
    return Patch(data=data, base_sha256=base_hash.hex(), ratio=len(data) / len(new))


def apply(base: bytes, patch: bytes, *, base_label: str = "the base image") -> bytes:
    """What a device running ``base`` writes from ``patch``: the header checked and
    stripped, detools applies the rest. Refuses what esp_delta_ota and the example refuse,
    and non-zero reserved bytes."""
    _check_header(base, patch, label=base_label)
    return _apply_body(base, patch[HEADER_SIZE:], label=base_label)


def check(base: bytes, new: bytes, patch: bytes, *, base_label: str) -> None:
    """Raise :class:`DeltaError` unless ``patch`` turns ``base`` into ``new`` on a device."""
    got = apply(base, patch, base_label=base_label)
    if got != new:
        at = next((i for i, (a, b) in enumerate(zip(got, new, strict=False)) if a != b),
                  min(len(got), len(new)))
        raise DeltaError(f"applying the delta patch to {base_label} gives {len(got)} bytes "
                         f"that differ from the new app's {len(new)} from offset {at:#x}; "
                         f"{_AGAIN.format(base_label)}")


def _header(base_hash: bytes) -> bytes:
    """The 64-byte esp_delta_ota header for a base whose validation hash is ``base_hash``."""
    return struct.pack("<I32s28x", MAGIC, base_hash)


def _check_header(base: bytes, patch: bytes, *, label: str) -> None:
    again = _AGAIN.format(label)
    if len(patch) <= HEADER_SIZE:
        raise DeltaError(f"the delta patch for {label} is {len(patch)} bytes, too short for "
                         f"the {HEADER_SIZE}-byte esp_delta_ota header and a detools patch; "
                         f"{again}")
    (magic,) = struct.unpack_from("<I", patch)
    if magic != MAGIC:
        raise DeltaError(f"the delta patch for {label} starts with magic {magic:#010x}, not "
                         f"esp_delta_ota's {MAGIC:#010x} (little-endian); {again}")
    expected = validation_hash(base, label=label)
    if patch[_MAGIC_END:_HASH_END] != expected:
        raise DeltaError(f"the delta patch's base hash {patch[_MAGIC_END:_HASH_END].hex()} is "
                         f"not {label}'s validation hash {expected.hex()}, so a device "
                         f"running {label} refuses it; {again}")
    reserved = patch[_HASH_END:HEADER_SIZE]
    if any(reserved):
        first = _HASH_END + next(i for i, b in enumerate(reserved) if b)
        raise DeltaError(f"the delta patch for {label} has a non-zero reserved header byte at "
                         f"offset {first} (bytes 36-63 must be zero); {again}")
    kind, compression = (patch[HEADER_SIZE] >> 4) & 0x7, patch[HEADER_SIZE] & 0xF
    if (kind, compression) != (_SEQUENTIAL, _HEATSHRINK):
        raise DeltaError(
            f"the delta patch for {label} is a detools "
            f"{_PATCH_TYPES.get(kind, f'type {kind}')} patch with "
            f"{_COMPRESSIONS.get(compression, f'compression {compression}')} compression "
            f"(first byte {patch[HEADER_SIZE]:#04x}), but esp_delta_ota applies only "
            f"sequential patches with heatshrink (0x04); {again}")
    window = _heatshrink_byte(patch, HEADER_SIZE + 1)
    if window is not None and window != ((WINDOW_SZ2 - 4) << 4 | (LOOKAHEAD_SZ2 - 3)):
        raise DeltaError(f"the delta patch for {label} uses heatshrink window_sz2 "
                         f"{(window >> 4) + 4}, lookahead_sz2 {(window & 0xF) + 3}, but "
                         f"esp_delta_ota's decoder is built for {WINDOW_SZ2} and "
                         f"{LOOKAHEAD_SZ2}; {again}")


def _heatshrink_byte(patch: bytes, at: int) -> int | None:
    """The heatshrink parameter byte after the detools size at ``at``; None if there is
    none (a truncated patch, or a new image of size 0), which applying then reports."""
    while at < len(patch) and patch[at] & 0x80:
        at += 1
    return patch[at + 1] if at + 1 < len(patch) else None


def _apply_body(base: bytes, body: bytes, *, label: str) -> bytes:
    import detools  # costly import: only when a patch is applied

    out = io.BytesIO()
    try:
        detools.apply_patch(io.BytesIO(base), io.BytesIO(body), out)
    except Exception as exc:  # detools.Error, and whatever a corrupt stream trips in it
        raise DeltaError(f"the delta patch does not apply to {label} "
                         f"({exc or type(exc).__name__}); {_AGAIN.format(label)}") from None
    return out.getvalue()
