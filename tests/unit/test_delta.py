"""Delta OTA patches between two real builds of the example, with real detools and esptool.

The base is examples/hello as committed; the new app is a copy with one string changed.
Both are built once per module by the example's own build script (skipped without the
RISC-V compiler). Every refusal of :func:`esp32tasks.delta.check` is pinned to its message.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import detools
import pytest
from detools.common import COMPRESSION_HEATSHRINK, PATCH_TYPE_SEQUENTIAL, unpack_header

from esp32tasks import delta
from esp32tasks.delta import HEADER_SIZE, MAGIC, DeltaError

ROOT = Path(__file__).resolve().parents[2]
BASE, NEW = "build/esp32c3/hello-1.0.0.bin", "build/esp32c3/hello-1.0.1.bin"
AGAIN = f"make the patch again from {BASE} and the new app"
REBUILD = "rebuild it with ESP-IDF (idf.py build appends the hash)"

pytestmark = pytest.mark.skipif(shutil.which("riscv64-unknown-elf-gcc") is None,
                                reason="the example's build needs riscv64-unknown-elf-gcc")


def build(app_dir: Path, build_dir: Path) -> bytes:
    """The example's app image, built by its own tools/build.py (from a copy in tmp)."""
    subprocess.run([sys.executable, "tools/build.py", "--target", "esp32c3", "--chip",
                    "esp32c3", "--build-dir", str(build_dir), "--version", "1.0.0"],
                   cwd=app_dir, check=True, capture_output=True)
    return (build_dir / "hello.bin").read_bytes()


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """(base, new): the example as committed, and with one string changed."""
    tmp = tmp_path_factory.mktemp("delta")
    shutil.copytree(ROOT / "examples" / "hello", tmp / "base", ignore=shutil.ignore_patterns(
        "build"))
    shutil.copytree(tmp / "base", tmp / "new")
    source = tmp / "new" / "main" / "hello_main.c"
    text = source.read_text()
    assert '", world from "' in text
    source.write_text(text.replace('", world from "', '", planet from "'))
    return build(tmp / "base", tmp / "base-build"), build(tmp / "new", tmp / "new-build")


@pytest.fixture(scope="module")
def patch(apps: tuple[bytes, bytes]) -> delta.Patch:
    base, new = apps
    return delta.make(base, new, base_label=BASE, new_label=NEW)


def refusal(base: bytes, new: bytes, data: bytes) -> str:
    with pytest.raises(DeltaError) as caught:
        delta.check(base, new, data, base_label=BASE)
    message = str(caught.value)
    assert "\n" not in message
    return message


def tampered(data: bytes, at: int, value: int) -> bytes:
    changed = bytearray(data)
    changed[at] = value
    return bytes(changed)


# --- make and apply ----------------------------------------------------------------------


def test_the_patch_turns_the_base_into_the_new_app(apps: tuple[bytes, bytes],
                                                   patch: delta.Patch) -> None:
    base, new = apps
    assert base != new
    assert delta.apply(base, patch.data) == new
    assert patch.ratio == len(patch.data) / len(new)
    # one changed string: the header and a little heatshrink, not the app again
    assert patch.ratio < 0.5
    print(f"\napp {len(base)} -> {len(new)} bytes, patch {len(patch.data)} bytes "
          f"(ratio {patch.ratio:.3f})")


def test_the_header_is_magic_base_validation_hash_and_zeros(apps: tuple[bytes, bytes],
                                                            patch: delta.Patch) -> None:
    base, _ = apps
    assert patch.data[:4] == bytes.fromhex("10decdfc") == MAGIC.to_bytes(4, "little")
    assert patch.data[4:36] == delta.validation_hash(base, label=BASE)
    assert patch.data[4:36].hex() == patch.base_sha256
    assert patch.data[36:HEADER_SIZE] == bytes(28)


def test_the_base_hash_is_what_esptool_image_info_calls_the_validation_hash(
        apps: tuple[bytes, bytes], patch: delta.Patch, tmp_path: Path) -> None:
    base, _ = apps
    (tmp_path / "base.bin").write_bytes(base)
    shown = subprocess.run([sys.executable, "-m", "esptool", "image-info",
                            str(tmp_path / "base.bin")],
                           check=True, capture_output=True, text=True).stdout
    # the regex of esp_delta_ota_patch_gen.py (idf-extra-components), which makes the header
    found = re.search(r"Validation Hash: ([A-Za-z0-9]+) \(valid\)", shown, re.IGNORECASE)
    assert found is not None, shown
    assert found[1] == patch.base_sha256


def test_the_detools_patch_is_sequential_heatshrink_8_7(patch: delta.Patch) -> None:
    assert unpack_header(patch.data[HEADER_SIZE:HEADER_SIZE + 1]) == (
        PATCH_TYPE_SEQUENTIAL, COMPRESSION_HEATSHRINK)
    assert patch.data[HEADER_SIZE] == 0x04
    info = detools.patch_info(io.BytesIO(patch.data[HEADER_SIZE:]))
    assert info[0] == "sequential"
    assert info[1][1:3] == ("heatshrink", {"window-sz2": 8, "lookahead-sz2": 7})


def test_the_patch_is_what_espressifs_generator_makes(apps: tuple[bytes, bytes],
                                                      patch: delta.Patch,
                                                      tmp_path: Path) -> None:
    """esp_delta_ota_patch_gen.py's own detools call, on files, with detools' defaults."""
    base, new = apps
    for name, data in (("base.bin", base), ("new.bin", new)):
        (tmp_path / name).write_bytes(data)
    with (tmp_path / "base.bin").open("rb") as b, (tmp_path / "new.bin").open("rb") as n, \
            (tmp_path / "patch.bin").open("wb") as p:
        detools.create_patch(b, n, p, compression="heatshrink")
    assert patch.data[HEADER_SIZE:] == (tmp_path / "patch.bin").read_bytes()


def test_making_a_patch_checks_the_new_app_too(apps: tuple[bytes, bytes]) -> None:
    base, new = apps
    with pytest.raises(DeltaError) as caught:
        delta.make(base, tampered(new, 23, 0), base_label=BASE, new_label=NEW)
    assert str(caught.value).startswith(f"{NEW} has no appended SHA-256")


# --- check's refusals --------------------------------------------------------------------


def test_a_wrong_magic(apps: tuple[bytes, bytes], patch: delta.Patch) -> None:
    base, new = apps
    assert refusal(base, new, tampered(patch.data, 0, 0x11)) == (
        f"the delta patch for {BASE} starts with magic 0xfccdde11, not esp_delta_ota's "
        f"0xfccdde10 (little-endian); {AGAIN}")


def test_a_big_endian_magic(apps: tuple[bytes, bytes], patch: delta.Patch) -> None:
    base, new = apps
    data = struct.pack(">I", MAGIC) + patch.data[4:]
    assert refusal(base, new, data).startswith(
        f"the delta patch for {BASE} starts with magic 0x10decdfc, not")


def test_a_patch_for_another_base(apps: tuple[bytes, bytes], patch: delta.Patch) -> None:
    base, new = apps
    other = tampered(patch.data, 4, patch.data[4] ^ 0xFF)
    assert refusal(base, new, other) == (
        f"the delta patch's base hash {other[4:36].hex()} is not {BASE}'s validation hash "
        f"{patch.base_sha256}, so a device running {BASE} refuses it; {AGAIN}")


def test_a_patch_from_the_new_app_back_is_refused_for_the_base(
        apps: tuple[bytes, bytes]) -> None:
    base, new = apps
    back = delta.make(new, base, base_label=NEW, new_label=BASE)
    assert refusal(base, new, back.data).startswith(
        f"the delta patch's base hash {back.base_sha256} is not {BASE}'s validation hash")


@pytest.mark.parametrize("at", [36, 50, 63])
def test_reserved_bytes_that_are_not_zero(apps: tuple[bytes, bytes], patch: delta.Patch,
                                          at: int) -> None:
    base, new = apps
    assert refusal(base, new, tampered(patch.data, at, 1)) == (
        f"the delta patch for {BASE} has a non-zero reserved header byte at offset {at} "
        f"(bytes 36-63 must be zero); {AGAIN}")


@pytest.mark.parametrize(("first", "kind"), [
    (0x01, "sequential patch with lzma"),
    (0x00, "sequential patch with none"),
    (0x05, "sequential patch with zstd"),
    (0x14, "in-place patch with heatshrink"),
    (0x24, "hdiffpatch patch with heatshrink"),
    (0x7F, "type 7 patch with compression 15"),
])
def test_a_detools_patch_of_another_kind(apps: tuple[bytes, bytes], patch: delta.Patch,
                                         first: int, kind: str) -> None:
    base, new = apps
    assert refusal(base, new, tampered(patch.data, HEADER_SIZE, first)) == (
        f"the delta patch for {BASE} is a detools {kind} compression (first byte "
        f"{first:#04x}), but esp_delta_ota applies only sequential patches with heatshrink "
        f"(0x04); {AGAIN}")


def test_heatshrink_parameters_the_device_is_not_built_for(apps: tuple[bytes, bytes]) -> None:
    base, new = apps
    body = io.BytesIO()
    detools.create_patch(io.BytesIO(base), io.BytesIO(new), body, compression="heatshrink",
                         heatshrink_window_sz2=10, heatshrink_lookahead_sz2=5)
    data = struct.pack("<I", MAGIC) + delta.validation_hash(base, label=BASE) + bytes(28) \
        + body.getvalue()
    applied = io.BytesIO()  # detools' Python side applies it; the device's static decoder not
    detools.apply_patch(io.BytesIO(base), io.BytesIO(body.getvalue()), applied)
    assert applied.getvalue() == new
    assert refusal(base, new, data) == (
        f"the delta patch for {BASE} uses heatshrink window_sz2 10, lookahead_sz2 5, but "
        f"esp_delta_ota's decoder is built for 8 and 7; {AGAIN}")


def test_a_truncated_patch_does_not_apply(apps: tuple[bytes, bytes],
                                          patch: delta.Patch) -> None:
    base, new = apps
    assert refusal(base, new, patch.data[:-1]) == (
        f"the delta patch does not apply to {BASE} (Early end of patch data.); {AGAIN}")


@pytest.mark.parametrize("size", [0, 4, HEADER_SIZE])
def test_a_patch_with_no_detools_part(apps: tuple[bytes, bytes], patch: delta.Patch,
                                      size: int) -> None:
    base, new = apps
    assert refusal(base, new, patch.data[:size]) == (
        f"the delta patch for {BASE} is {size} bytes, too short for the 64-byte "
        f"esp_delta_ota header and a detools patch; {AGAIN}")


def test_a_patch_that_makes_another_app(apps: tuple[bytes, bytes]) -> None:
    """A well-formed patch from the base to itself, checked against the new app."""
    base, new = apps
    same = delta.make(base, base, base_label=BASE, new_label=BASE)
    at = next(i for i, (a, b) in enumerate(zip(base, new, strict=True)) if a != b)
    assert refusal(base, new, same.data) == (
        f"applying the delta patch to {BASE} gives {len(base)} bytes that differ from the "
        f"new app's {len(new)} from offset {at:#x}; {AGAIN}")


def test_a_patch_that_makes_a_shorter_app(apps: tuple[bytes, bytes]) -> None:
    base, new = apps
    short = delta.make(base, new, base_label=BASE, new_label=NEW)
    assert refusal(base, new + b"\xff" * 16, short.data) == (
        f"applying the delta patch to {BASE} gives {len(new)} bytes that differ from the "
        f"new app's {len(new) + 16} from offset {len(new):#x}; {AGAIN}")


def test_a_changed_byte_in_the_body_is_refused(apps: tuple[bytes, bytes],
                                               patch: delta.Patch) -> None:
    base, new = apps
    middle = HEADER_SIZE + (len(patch.data) - HEADER_SIZE) // 2
    message = refusal(base, new, tampered(patch.data, middle, patch.data[middle] ^ 0xFF))
    assert re.fullmatch(rf"(the delta patch does not apply to {BASE} \(.+\)|applying the "
                        rf"delta patch to {BASE} gives \d+ bytes that differ .+); {AGAIN}",
                        message), message


# --- validation_hash ---------------------------------------------------------------------


def hash_error(app: bytes) -> str:
    with pytest.raises(DeltaError) as caught:
        delta.validation_hash(app, label=BASE)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_validation_hash_is_the_sha256_appended_to_the_image(
        apps: tuple[bytes, bytes]) -> None:
    base, _ = apps
    digest = delta.validation_hash(base, label=BASE)
    # the example's image ends right after its digest: 16-aligned content, then 32 bytes
    assert digest == base[-32:] == hashlib.sha256(base[:-32]).digest()
    # what follows the digest (a signature sector, padding) is not part of it
    assert delta.validation_hash(base + b"\xff" * 4096, label=BASE) == digest


def test_an_image_without_an_appended_hash(apps: tuple[bytes, bytes]) -> None:
    base, _ = apps
    assert hash_error(tampered(base, 23, 0)[:-32]) == (
        f"{BASE} has no appended SHA-256 (hash_appended is 0), so a device running it cannot "
        f"be matched to a delta patch; {REBUILD} (not with esptool elf2image "
        "--dont-append-digest)")


@pytest.mark.parametrize("cut", [1, 31])
def test_an_image_cut_inside_its_hash(apps: tuple[bytes, bytes], cut: int) -> None:
    base, _ = apps
    assert hash_error(base[:-cut]) == (
        f"{BASE} ends {32 - cut} bytes into its appended SHA-256 (of 32): the file is "
        f"truncated; {REBUILD}")


def test_an_image_whose_hash_does_not_match(apps: tuple[bytes, bytes]) -> None:
    base, _ = apps
    bad = tampered(base, len(base) - 1, base[-1] ^ 1)
    assert hash_error(bad) == (
        f"{BASE}'s appended SHA-256 {bad[-32:].hex()} is not the SHA-256 of its content "
        f"({base[-32:].hex()}); {REBUILD}")


def test_an_image_cut_inside_its_segments(apps: tuple[bytes, bytes]) -> None:
    base, _ = apps
    assert re.fullmatch(rf"{BASE} is a corrupt app image \(.+\); {re.escape(REBUILD)}",
                        hash_error(base[:100]))


@pytest.mark.parametrize("app", [b"", b"\xe9" * 23, b"\x7fELF" + bytes(60)])
def test_not_an_image(app: bytes) -> None:
    assert hash_error(app) == (
        f"{BASE} is not an ESP app image (no 0xE9 magic in a 24-byte header); {REBUILD}")


def test_an_unknown_chip(apps: tuple[bytes, bytes]) -> None:
    base, _ = apps
    assert hash_error(base[:12] + struct.pack("<H", 0x7777) + base[14:]) == (
        f"{BASE} has chip id 30583, which no ESP32 chip esptool knows has; {REBUILD}")


def test_a_check_of_a_base_that_is_no_image_names_it(apps: tuple[bytes, bytes],
                                                     patch: delta.Patch) -> None:
    _, new = apps
    assert refusal(b"", new, patch.data).startswith(f"{BASE} is not an ESP app image")


# --- cost --------------------------------------------------------------------------------


def test_importing_the_module_loads_neither_detools_nor_esptool() -> None:
    code = ("import sys, esp32tasks.delta; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('detools', 'esptool')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def test_generation_time(apps: tuple[bytes, bytes]) -> None:
    """Reported, not asserted: make on the example app; raw detools on 1 MiB blobs."""
    base, new = apps
    app_s = timed(lambda: delta.make(base, new, base_label=BASE, new_label=NEW))
    rng = random.Random(1)  # noqa: S311 - reproducible test data, not a secret
    old = bytearray(rng.randbytes(1 << 20))
    changed = bytearray(old)
    for at in (4096, 300_000, 700_000, 1_000_000):
        changed[at:at + 16] = rng.randbytes(16)
    body = io.BytesIO()
    blob_s = timed(lambda: detools.create_patch(
        io.BytesIO(bytes(old)), io.BytesIO(bytes(changed)), body, compression="heatshrink",
        heatshrink_window_sz2=8, heatshrink_lookahead_sz2=7, use_mmap=False))
    out = io.BytesIO()
    detools.apply_patch(io.BytesIO(bytes(old)), io.BytesIO(body.getvalue()), out)
    assert out.getvalue() == changed
    print(f"\nmake (app {len(new)} bytes): {app_s * 1000:.1f} ms; detools create (1 MiB, 4 "
          f"changes of 16 bytes): {blob_s * 1000:.1f} ms, patch {len(body.getvalue())} bytes")
