"""A real esp32 (Xtensa) app image, made without a compiler.

The bundled example builds RISC-V chips only (there is no Xtensa toolchain here), but
Secure Boot v1 exists on esp32 alone. So this writes a minimal ELF32 by hand with
``struct`` (little-endian, ``e_machine`` 94 = EM_XTENSA, entry in IRAM at 0x40080000)
holding three sections, each in its own PT_LOAD segment: ``.flash.appdesc`` (an
``esp_app_desc_t`` at the start of DROM, as ESP-IDF links it), ``.dram0.data`` (the
payload) and ``.iram0.text`` (a few ``ret.n``). The code never runs; what matters is that
the image is what ``esptool --chip esp32 elf2image`` makes of an app, so esptool's
``image-info`` and :func:`esp32tasks.build.firmware.read_app` accept it and it is signed
exactly as a real app would be.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import Final

__all__ = ["APP_DESC_MAGIC", "DROM", "IRAM", "esp32_app_image", "esp32_elf"]

EM_XTENSA: Final = 94
IRAM: Final = 0x40080000
DRAM: Final = 0x3FFB0000
#: The app descriptor's place: the first flash-mapped data, just after the image and
#: segment headers (so its file offset and its address agree modulo the 64 KB MMU page).
DROM: Final = 0x3F400020
APP_DESC_MAGIC: Final = 0xABCD5432
_ELF_HEADER: Final = struct.Struct("<16sHHIIIIIHHHHHH")
_PROGRAM_HEADER: Final = struct.Struct("<IIIIIIII")
_SECTION_HEADER: Final = struct.Struct("<IIIIIIIIII")
_PT_LOAD, _SHT_PROGBITS, _SHT_STRTAB = 1, 1, 3
_SHF_WRITE, _SHF_ALLOC, _SHF_EXECINSTR = 1, 2, 4
_PF_X, _PF_W, _PF_R = 1, 2, 4


def app_desc(*, version: str, project_name: str) -> bytes:
    """An ``esp_app_desc_t`` (256 bytes): magic, version, project name, IDF version; the
    ELF's SHA-256 is filled in by ``elf2image --elf-sha256-offset 0xb0``."""
    return struct.pack("<II8x32s32s16s16s32s32sHHB3x72x", APP_DESC_MAGIC, 0,
                       version.encode(), project_name.encode(), b"", b"", b"esp32tasks-test",
                       b"", 0, 199, 16)


def esp32_elf(*, payload: bytes, version: str = "1.0.0", project_name: str = "hello") -> bytes:
    """The ELF file's bytes: header, program headers, section data, names, section headers."""
    code = b"\x0d\xf0" * 8  # ret.n
    sections = [  # name, address, flags, segment flags, data
        (b".flash.appdesc", DROM, _SHF_ALLOC, _PF_R,
         app_desc(version=version, project_name=project_name)),
        (b".dram0.data", DRAM, _SHF_ALLOC | _SHF_WRITE, _PF_R | _PF_W, payload),
        (b".iram0.text", IRAM, _SHF_ALLOC | _SHF_EXECINSTR, _PF_R | _PF_X, code),
    ]
    names = b"\0" + b"".join(name + b"\0" for name, *_ in sections) + b".shstrtab\0"
    offset = _ELF_HEADER.size + _PROGRAM_HEADER.size * len(sections)
    body, program, headers = b"", b"", _SECTION_HEADER.pack(*[0] * 10)
    name_at = 1
    for name, address, flags, segment_flags, data in sections:
        at = offset + len(body)
        body += data + b"\0" * (-len(data) % 4)
        program += _PROGRAM_HEADER.pack(_PT_LOAD, at, address, address, len(data), len(data),
                                        segment_flags, 4)
        headers += _SECTION_HEADER.pack(name_at, _SHT_PROGBITS, flags, address, at, len(data),
                                        0, 0, 4, 0)
        name_at += len(name) + 1
    strtab_at = offset + len(body)
    body += names + b"\0" * (-len(names) % 4)
    headers += _SECTION_HEADER.pack(name_at, _SHT_STRTAB, 0, 0, strtab_at, len(names),
                                    0, 0, 1, 0)
    ident = b"\x7fELF" + bytes([1, 1, 1]) + b"\0" * 9  # ELFCLASS32, little-endian, v1
    header = _ELF_HEADER.pack(ident, 2, EM_XTENSA, 1, IRAM, _ELF_HEADER.size,
                              offset + len(body), 0, _ELF_HEADER.size,
                              _PROGRAM_HEADER.size, len(sections), _SECTION_HEADER.size,
                              len(sections) + 2, len(sections) + 1)
    return header + program + body + headers


def esp32_app_image(tmp: Path, *, payload: bytes = b"esp32tasks test payload\0",
                    version: str = "1.0.0", project_name: str = "hello") -> bytes:
    """An esp32 app image (``.bin``) made by esptool's ``elf2image`` from :func:`esp32_elf`;
    the ELF and the image are left in ``tmp`` as ``app.elf`` and ``app.bin``."""
    elf, out = tmp / "app.elf", tmp / "app.bin"
    elf.write_bytes(esp32_elf(payload=payload, version=version, project_name=project_name))
    subprocess.run([sys.executable, "-m", "esptool", "--chip", "esp32", "elf2image",
                    "--elf-sha256-offset", "0xb0", "--output", str(out), str(elf)],
                   check=True, capture_output=True)
    return out.read_bytes()
