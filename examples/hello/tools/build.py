#!/usr/bin/env python3
"""Build the ``hello`` example firmware into an ESP-IDF-like build directory.

Usage (from the app directory, ``examples/hello``)::

    python3 tools/build.py --target esp32c3 --chip esp32c3 \
        --build-dir /abs/build/esp32c3 --version 1.2.3

The output layout mimics what ``idf.py build`` leaves behind: ``hello.elf``,
``hello.map``, ``hello.bin``, ``bootloader/bootloader.bin``,
``partition_table/partition-table.bin``, ``ota_data_initial.bin``,
``sdkconfig``, ``flasher_args.json`` and ``project_description.json``.
The two JSON files are written last (atomically), and removed at the start of
every build, so their presence means the build completed.

Builds are reproducible: no timestamps, no absolute paths in any output.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

APP_DIR = Path(__file__).resolve().parent.parent
PROJECT_NAME = "hello"
IDF_VER = "esp32tasks-example"
DEFAULT_CC = "riscv64-unknown-elf-gcc"

FLASH_MODE = "dio"
FLASH_SIZE = "2MB"
FLASH_SIZE_BYTES = 2 * 1024 * 1024
PARTITION_TABLE_OFFSET = 0x8000
PARTITION_CSV = "partitions.csv"

APP_SOURCES = ("main/app_desc.c", "main/hello_main.c")
BOOTLOADER_SOURCES = ("bootloader_src/bootloader_main.c",)

# Generated JSON files: written last, deleted first.
FLASHER_ARGS = "flasher_args.json"
PROJECT_DESCRIPTION = "project_description.json"

MAX_VERSION_BYTES = 31


@dataclass(frozen=True)
class Chip:
    """Per-chip facts the build needs."""

    name: str
    bootloader_offset: int
    flash_freq: str  # must be a value esptool accepts for this chip


CHIPS: dict[str, Chip] = {
    "esp32c2": Chip("esp32c2", 0x0, "60m"),
    "esp32c3": Chip("esp32c3", 0x0, "80m"),
    "esp32c5": Chip("esp32c5", 0x2000, "80m"),
    "esp32c6": Chip("esp32c6", 0x0, "80m"),
    "esp32h2": Chip("esp32h2", 0x0, "48m"),
    "esp32p4": Chip("esp32p4", 0x2000, "80m"),
}

CFLAGS = (
    "-march=rv32imc_zicsr",
    "-mabi=ilp32",
    "-Os",
    "-nostdlib",
    "-ffreestanding",
    "-fno-common",
    "-ffunction-sections",
    "-fdata-sections",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-std=gnu17",
    "-Wall",
    "-Wextra",
    "-Werror",
)

LDFLAGS = (
    "-march=rv32imc_zicsr",
    "-mabi=ilp32",
    "-nostdlib",
    "-nostartfiles",
    "-static",
    "-Wl,--gc-sections",
    "-Wl,--build-id=none",
    "-Wl,--no-warn-rwx-segments",
)


class BuildError(Exception):
    """A build failure, reported as one line on stderr."""


# --------------------------------------------------------------------------
# sdkconfig
# --------------------------------------------------------------------------

_CONFIG_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_NOT_SET_LINE = re.compile(r"^#\s*(CONFIG_[A-Za-z0-9_]+) is not set\s*$")
_STRING_VALUE = re.compile(r'^"(?:[^"\\]|\\.)*"$')
_NUMBER_VALUE = re.compile(r"^(?:-?[0-9]+|0[xX][0-9A-Fa-f]+)$")

# None means "is not set" (n).
Sdkconfig = dict[str, str | None]


def quote_string(value: str) -> str:
    """Quote ``value`` as a Kconfig string (which is also a valid C literal)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_sdkconfig(path: Path) -> Sdkconfig:
    """Parse a ``sdkconfig``-style file (``CONFIG_X=value`` lines)."""
    values: Sdkconfig = {}
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        not_set = _NOT_SET_LINE.match(line)
        if not_set:
            values[not_set.group(1)] = None
            continue
        if line.startswith("#"):
            continue
        match = _CONFIG_LINE.match(line)
        if not match:
            raise BuildError(f"{path.name}:{lineno}: cannot parse {raw!r}")
        name, value = match.group(1), match.group(2).strip()
        if not (value in ("y", "n") or _STRING_VALUE.match(value) or _NUMBER_VALUE.match(value)):
            raise BuildError(f"{path.name}:{lineno}: bad value for {name}: {value!r}")
        values[name] = None if value == "n" else value
    return values


def defaults_files(app_dir: Path, target: str, chip: str) -> list[Path]:
    """The sdkconfig defaults files that apply, lowest precedence first.

    ESP-IDF applies ``sdkconfig.defaults`` then ``sdkconfig.defaults.<chip>``;
    when the target name differs from the chip, ``sdkconfig.defaults.<target>``
    is applied last.
    """
    names = ["sdkconfig.defaults", f"sdkconfig.defaults.{chip}"]
    if target != chip:
        names.append(f"sdkconfig.defaults.{target}")
    return [app_dir / name for name in names if (app_dir / name).is_file()]


def make_sdkconfig(
    app_dir: Path, target: str, chip: Chip, version: str
) -> tuple[Sdkconfig, list[str]]:
    """Merge the defaults files and the generated settings.

    Returns the final settings and the names of the defaults files used.
    Generated settings take precedence over the defaults files.
    """
    merged: Sdkconfig = {}
    used: list[str] = []
    for path in defaults_files(app_dir, target, chip.name):
        merged.update(parse_sdkconfig(path))
        used.append(path.name)
    generated: Sdkconfig = {
        "CONFIG_IDF_TARGET": quote_string(chip.name),
        f"CONFIG_IDF_TARGET_{chip.name.upper()}": "y",
        "CONFIG_APP_PROJECT_VER": quote_string(version),
        "CONFIG_PARTITION_TABLE_CUSTOM": "y",
        "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME": quote_string(PARTITION_CSV),
        "CONFIG_PARTITION_TABLE_OFFSET": f"{PARTITION_TABLE_OFFSET:#x}",
        "CONFIG_ESPTOOLPY_FLASHMODE": quote_string(FLASH_MODE),
        "CONFIG_ESPTOOLPY_FLASHFREQ": quote_string(chip.flash_freq),
        "CONFIG_ESPTOOLPY_FLASHSIZE": quote_string(FLASH_SIZE),
    }
    final: Sdkconfig = dict(generated)
    for name, value in merged.items():
        if name not in generated:
            final[name] = value
    return final, used


def render_sdkconfig(config: Sdkconfig) -> str:
    lines = [
        "#",
        "# Automatically generated file. DO NOT EDIT.",
        f"# {PROJECT_NAME} ({IDF_VER}) Project Configuration",
        "#",
    ]
    for name, value in config.items():
        lines.append(f"# {name} is not set" if value is None else f"{name}={value}")
    return "\n".join(lines) + "\n"


def config_defines(config: Sdkconfig) -> list[str]:
    """-D options for every set option (like ESP-IDF's sdkconfig.h)."""
    defines = []
    for name, value in config.items():
        if value is None:
            continue
        defines.append(f"-D{name}={'1' if value == 'y' else value}")
    return defines


# --------------------------------------------------------------------------
# Partition table (ESP-IDF binary format)
# --------------------------------------------------------------------------

PARTITION_MAGIC = b"\xaa\x50"
PARTITION_MD5_MAGIC = b"\xeb\xeb" + b"\xff" * 14
PARTITION_TABLE_SIZE = 0xC00
PARTITION_ENTRY = struct.Struct("<2sBBII16sI")

TYPES = {"app": 0x00, "data": 0x01}
SUBTYPES: dict[int, dict[str, int]] = {
    0x00: {
        "factory": 0x00,
        "test": 0x20,
        **{f"ota_{i}": 0x10 + i for i in range(16)},
    },
    0x01: {
        "ota": 0x00,
        "phy": 0x01,
        "nvs": 0x02,
        "coredump": 0x03,
        "nvs_keys": 0x04,
        "efuse": 0x05,
        "undefined": 0x06,
        "esphttpd": 0x80,
        "fat": 0x81,
        "spiffs": 0x82,
        "littlefs": 0x83,
    },
}
FLAGS = {"encrypted": 0x01, "readonly": 0x02}
APP_ALIGN = 0x10000
DATA_ALIGN = 0x1000


@dataclass(frozen=True)
class Partition:
    name: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int


def _parse_int(text: str, what: str) -> int:
    text = text.strip()
    multiplier = 1
    if text[-1:].upper() == "K":
        multiplier, text = 1024, text[:-1]
    elif text[-1:].upper() == "M":
        multiplier, text = 1024 * 1024, text[:-1]
    try:
        return int(text, 0) * multiplier
    except ValueError:
        raise BuildError(f"{PARTITION_CSV}: bad {what} {text!r}") from None


def _parse_partition(fields: list[str], next_offset: int, where: str) -> Partition:
    """Parse one CSV row; ``next_offset`` is where the previous partition ended."""
    fields = fields + [""] * (6 - len(fields))
    name, type_text, subtype_text, offset_text, size_text, flags_text = fields[:6]
    if not name or len(name.encode()) > 16:
        raise BuildError(f"{where}: partition name must be 1-16 bytes")
    ptype = TYPES.get(type_text)
    if ptype is None:
        ptype = _parse_int(type_text, "type")
    subtype = SUBTYPES.get(ptype, {}).get(subtype_text)
    if subtype is None:
        subtype = _parse_int(subtype_text, "subtype")
    align = APP_ALIGN if ptype == TYPES["app"] else DATA_ALIGN
    if offset_text:
        offset = _parse_int(offset_text, "offset")
    else:
        offset = (next_offset + align - 1) // align * align
    size = _parse_int(size_text, "size")
    if offset % align:
        raise BuildError(f"{where}: {name} offset {offset:#x} not {align:#x}-aligned")
    if offset < next_offset:
        raise BuildError(f"{where}: {name} overlaps the previous partition")
    if size <= 0 or offset + size > FLASH_SIZE_BYTES:
        raise BuildError(f"{where}: {name} does not fit in {FLASH_SIZE} flash")
    flags = 0
    for flag in filter(None, (f.strip() for f in flags_text.split(":"))):
        if flag not in FLAGS:
            raise BuildError(f"{where}: unknown flag {flag!r}")
        flags |= FLAGS[flag]
    return Partition(name, ptype, subtype, offset, size, flags)


def parse_partitions(path: Path) -> list[Partition]:
    """Parse an ESP-IDF partition CSV (empty offsets are computed)."""
    partitions: list[Partition] = []
    next_offset = PARTITION_TABLE_OFFSET + 0x1000
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        partition = _parse_partition(fields, next_offset, f"{path.name}:{lineno}")
        partitions.append(partition)
        next_offset = partition.offset + partition.size
    if not partitions:
        raise BuildError(f"{path.name}: no partitions")
    names = [p.name for p in partitions]
    if len(set(names)) != len(names):
        raise BuildError(f"{path.name}: duplicate partition names")
    return partitions


def partition_table_binary(partitions: Sequence[Partition]) -> bytes:
    entries = b"".join(
        PARTITION_ENTRY.pack(
            PARTITION_MAGIC,
            p.type,
            p.subtype,
            p.offset,
            p.size,
            p.name.encode(),
            p.flags,
        )
        for p in partitions
    )
    table = entries + PARTITION_MD5_MAGIC + hashlib.md5(entries, usedforsecurity=False).digest()
    if len(table) > PARTITION_TABLE_SIZE:
        raise BuildError(f"{PARTITION_CSV}: too many partitions")
    return table + b"\xff" * (PARTITION_TABLE_SIZE - len(table))


def find_partition(partitions: Sequence[Partition], ptype: int, subtype: int) -> Partition:
    for p in partitions:
        if p.type == ptype and p.subtype == subtype:
            return p
    raise BuildError(f"{PARTITION_CSV}: no partition of type {ptype:#x}/{subtype:#x}")


# --------------------------------------------------------------------------
# Compiling and linking
# --------------------------------------------------------------------------


def run(cmd: Sequence[str], cwd: Path) -> None:
    print(shlex.join(cmd), flush=True)
    try:
        result = subprocess.run(cmd, cwd=cwd, check=False)
    except OSError as exc:
        raise BuildError(f"cannot run {cmd[0]}: {exc.strerror}") from None
    if result.returncode != 0:
        raise BuildError(f"command failed (exit {result.returncode}): {Path(cmd[0]).name}")


def compiler() -> list[str]:
    cc = shlex.split(os.environ.get("CC", "") or DEFAULT_CC)
    if not cc:
        raise BuildError("CC is empty")
    return cc


def build_elf(
    *,
    cc: list[str],
    sources: Sequence[str],
    obj_dir: Path,
    out_dir: Path,
    name: str,
    linker_script: str,
    defines: Sequence[str],
) -> None:
    """Compile ``sources`` (relative to the app dir) and link ``<name>.elf``.

    Linking runs inside ``out_dir`` with relative paths so that the map file
    mentions no absolute path.
    """
    common = [
        *CFLAGS,
        f"-ffile-prefix-map={APP_DIR}=.",
        "-I",
        str(APP_DIR / "include"),
        *defines,
    ]
    objects = []
    for source in sources:
        obj = obj_dir / (source + ".o")
        obj.parent.mkdir(parents=True, exist_ok=True)
        run([*cc, *common, "-c", str(APP_DIR / source), "-o", str(obj)], cwd=APP_DIR)
        objects.append(os.path.relpath(obj, out_dir))
    run(
        [
            *cc,
            *LDFLAGS,
            f"-Wl,-Map={name}.map",
            "-L",
            str(APP_DIR / "ld"),
            "-T",
            linker_script,
            "-o",
            f"{name}.elf",
            *objects,
        ],
        cwd=out_dir,
    )


def elf2image(chip: Chip, elf: str, out: str, cwd: Path, *, app: bool) -> None:
    cmd = [
        sys.executable,
        "-m",
        "esptool",
        "--chip",
        chip.name,
        "elf2image",
        "--flash-mode",
        FLASH_MODE,
        "--flash-freq",
        chip.flash_freq,
        "--flash-size",
        FLASH_SIZE,
    ]
    if app:
        cmd += ["--elf-sha256-offset", "0xb0"]
    run([*cmd, "-o", out, elf], cwd=cwd)


# --------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_bytes(obj: object) -> bytes:
    return (json.dumps(obj, indent=4) + "\n").encode()


def flash_entry(offset: int, file: str) -> dict[str, str]:
    return {"offset": f"{offset:#x}", "file": file, "encrypted": "false"}


def flasher_args(chip: Chip, app_offset: int, otadata_offset: int) -> dict[str, object]:
    entries = {
        "bootloader": flash_entry(chip.bootloader_offset, "bootloader/bootloader.bin"),
        "app": flash_entry(app_offset, f"{PROJECT_NAME}.bin"),
        "partition-table": flash_entry(
            PARTITION_TABLE_OFFSET, "partition_table/partition-table.bin"
        ),
        "otadata": flash_entry(otadata_offset, "ota_data_initial.bin"),
    }
    by_offset = sorted(entries.values(), key=lambda e: int(e["offset"], 16))
    return {
        "write_flash_args": [
            "--flash_mode",
            FLASH_MODE,
            "--flash_size",
            FLASH_SIZE,
            "--flash_freq",
            chip.flash_freq,
        ],
        "flash_settings": {
            "flash_mode": FLASH_MODE,
            "flash_size": FLASH_SIZE,
            "flash_freq": chip.flash_freq,
        },
        "flash_files": {e["offset"]: e["file"] for e in by_offset},
        **entries,
        "extra_esptool_args": {
            "after": "hard_reset",
            "before": "default_reset",
            "stub": True,
            "chip": chip.name,
        },
    }


def project_description(
    chip: Chip, target: str, version: str, cc: list[str], defaults: list[str]
) -> dict[str, object]:
    return {
        "version": "1.2",
        "project_name": PROJECT_NAME,
        "project_version": version,
        "project_path": ".",
        "build_dir": ".",
        "config_file": "sdkconfig",
        "config_defaults": ";".join(defaults),
        "bootloader_elf": "bootloader/bootloader.elf",
        "app_elf": f"{PROJECT_NAME}.elf",
        "app_bin": f"{PROJECT_NAME}.bin",
        "build_type": "flash_app",
        "target": chip.name,
        "target_name": target,
        "idf_ver": IDF_VER,
        "c_compiler": Path(cc[-1]).name,
    }


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def check_version(version: str) -> None:
    size = len(version.encode("utf-8"))
    if size == 0:
        raise BuildError("--version must not be empty")
    if size > MAX_VERSION_BYTES:
        raise BuildError(
            f"--version {version!r} is {size} bytes; at most {MAX_VERSION_BYTES} fit "
            "in esp_app_desc_t.version"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in version):
        raise BuildError("--version must not contain control characters")


def build(target: str, chip: Chip, build_dir: Path, version: str) -> None:
    # A build that fails from here on (even on bad arguments) must not leave
    # an earlier build's JSON files behind, looking complete.
    for name in (FLASHER_ARGS, PROJECT_DESCRIPTION):
        (build_dir / name).unlink(missing_ok=True)
    check_version(version)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", target):
        raise BuildError(f"bad --target {target!r}")

    build_dir.mkdir(parents=True, exist_ok=True)

    config, defaults_used = make_sdkconfig(APP_DIR, target, chip, version)
    (build_dir / "sdkconfig").write_text(render_sdkconfig(config), encoding="utf-8")

    partitions = parse_partitions(APP_DIR / PARTITION_CSV)
    otadata = find_partition(partitions, TYPES["data"], SUBTYPES[1]["ota"])
    ota_0 = find_partition(partitions, TYPES["app"], SUBTYPES[0]["ota_0"])
    pt_dir = build_dir / "partition_table"
    pt_dir.mkdir(exist_ok=True)
    (pt_dir / "partition-table.bin").write_bytes(partition_table_binary(partitions))
    (build_dir / "ota_data_initial.bin").write_bytes(b"\xff" * otadata.size)

    cc = compiler()
    defines = [
        *config_defines(config),
        f"-DPROJECT_NAME={quote_string(PROJECT_NAME)}",
        f"-DIDF_VER={quote_string(IDF_VER)}",
    ]

    build_elf(
        cc=cc,
        sources=APP_SOURCES,
        obj_dir=build_dir / "obj",
        out_dir=build_dir,
        name=PROJECT_NAME,
        linker_script=f"{chip.name}.ld",
        defines=defines,
    )
    elf2image(chip, f"{PROJECT_NAME}.elf", f"{PROJECT_NAME}.bin", build_dir, app=True)
    app_size = (build_dir / f"{PROJECT_NAME}.bin").stat().st_size
    if app_size > ota_0.size:
        raise BuildError(f"{PROJECT_NAME}.bin ({app_size} bytes) does not fit in ota_0")

    bl_dir = build_dir / "bootloader"
    bl_dir.mkdir(exist_ok=True)
    build_elf(
        cc=cc,
        sources=BOOTLOADER_SOURCES,
        obj_dir=bl_dir / "obj",
        out_dir=bl_dir,
        name="bootloader",
        linker_script=f"{chip.name}.bootloader.ld",
        defines=defines,
    )
    elf2image(chip, "bootloader.elf", "bootloader.bin", bl_dir, app=False)

    write_atomic(
        build_dir / PROJECT_DESCRIPTION,
        json_bytes(project_description(chip, target, version, cc, defaults_used)),
    )
    write_atomic(
        build_dir / FLASHER_ARGS,
        json_bytes(flasher_args(chip, ota_0.offset, otadata.offset)),
    )


class _ArgumentParser(argparse.ArgumentParser):
    """Report usage errors on one line, like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"build.py: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", required=True, help="target name (e.g. esp32c6-a)")
    parser.add_argument("--chip", required=True, choices=sorted(CHIPS), help="IDF chip")
    parser.add_argument("--build-dir", required=True, type=Path, help="output directory")
    parser.add_argument("--version", required=True, help="app version (max 31 bytes)")
    args = parser.parse_args(argv)
    try:
        build(args.target, CHIPS[args.chip], args.build_dir.absolute(), args.version)
    except (BuildError, OSError) as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
