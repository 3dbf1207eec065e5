"""Integration tests for the bundled example firmware ``examples/hello``.

These run the real build script (RISC-V cross compiler + esptool) for every
supported chip, so they are marked ``integration``. All builds happen once per
module, in parallel, into temporary directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"
CHIPS = ("esp32c2", "esp32c3", "esp32c5", "esp32c6", "esp32h2", "esp32p4")
VERSION = "1.2.3-test+abc"
BOOTLOADER_OFFSETS = {"esp32c5": 0x2000, "esp32p4": 0x2000}

EXPECTED_FILES = (
    "hello.elf",
    "hello.map",
    "hello.bin",
    "bootloader/bootloader.bin",
    "bootloader/bootloader.elf",
    "partition_table/partition-table.bin",
    "ota_data_initial.bin",
    "sdkconfig",
    "flasher_args.json",
    "project_description.json",
)

APP_DESC = struct.Struct("<II8s32s32s16s16s32s32sHHB3s72s")


def _compiler_available() -> bool:
    cc = os.environ.get("CC") or "riscv64-unknown-elf-gcc"
    return shutil.which(cc.split()[0]) is not None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The venv's bin first, like the release tool does (python3, esptool).
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_build(
    app_dir: Path,
    build_dir: Path,
    chip: str,
    *,
    target: str | None = None,
    version: str = VERSION,
) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "tools/build.py",
        "--target",
        target or chip,
        "--chip",
        chip,
        "--build-dir",
        str(build_dir),
        "--version",
        version,
    ]
    return subprocess.run(cmd, cwd=app_dir, env=_env(), capture_output=True, text=True, check=False)


def copy_example(dest: Path) -> Path:
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("build", "__pycache__"))
    return dest


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def image_info(chip: str, path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "esptool", "--chip", chip, "image-info", str(path)],
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_valid_checksum_and_hash(out: str) -> None:
    lines = out.splitlines()
    checksum = [line for line in lines if line.startswith("Checksum: ")]
    digest = [line for line in lines if line.startswith("Validation hash: ")]
    assert len(checksum) == 1
    assert checksum[0].endswith("(valid)")
    assert len(digest) == 1
    assert digest[0].endswith("(valid)")


@dataclass(frozen=True)
class Builds:
    root: Path
    a: dict[str, Path]  # chip -> build dir of the first copy
    b: dict[str, Path]  # chip -> build dir of the second copy
    no_c6_defaults: dict[str, Path]  # copy without sdkconfig.defaults.esp32c6
    target_alias: Path  # target "esp32c6-a", chip esp32c6


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    if not _compiler_available():
        pytest.skip("riscv64-unknown-elf-gcc not installed")
    root = tmp_path_factory.mktemp("hello")
    app_a = copy_example(root / "a" / "hello")
    app_b = copy_example(root / "some" / "other" / "place" / "hello")
    app_c = copy_example(root / "c" / "hello")
    (app_c / "sdkconfig.defaults.esp32c6").unlink()

    jobs: list[tuple[Path, Path, str, str | None]] = []
    a = {chip: root / "out-a" / chip for chip in CHIPS}
    b = {chip: root / "x" / "y" / "out-b" / chip for chip in CHIPS}
    c = {chip: root / "out-c" / chip for chip in ("esp32c3", "esp32c6")}
    alias = root / "out-a" / "esp32c6-a"
    jobs += [(app_a, a[chip], chip, None) for chip in CHIPS]
    jobs += [(app_b, b[chip], chip, None) for chip in CHIPS]
    jobs += [(app_c, c[chip], chip, None) for chip in c]
    jobs.append((app_a, alias, "esp32c6", "esp32c6-a"))

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = [
            pool.submit(run_build, app, out, chip, target=target) for app, out, chip, target in jobs
        ]
        for (_, out, _, _), future in zip(jobs, futures, strict=True):
            result = future.result()
            assert result.returncode == 0, f"{out}: {result.stdout}\n{result.stderr}"
    return Builds(root, a, b, c, alias)


@pytest.mark.parametrize("chip", CHIPS)
def test_outputs_exist(builds: Builds, chip: str) -> None:
    for name in EXPECTED_FILES:
        assert (builds.a[chip] / name).is_file(), name
    assert (builds.a[chip] / "ota_data_initial.bin").read_bytes() == b"\xff" * 0x2000


@pytest.mark.parametrize("chip", CHIPS)
def test_app_image_info(builds: Builds, chip: str) -> None:
    out = image_info(chip, builds.a[chip] / "hello.bin")
    assert_valid_checksum_and_hash(out)
    assert "Project name: hello" in out
    assert f"App version: {VERSION}" in out
    assert "ESP-IDF: esp32tasks-example" in out
    elf_sha = hashlib.sha256((builds.a[chip] / "hello.elf").read_bytes()).hexdigest()
    assert f"ELF file SHA256: {elf_sha}" in out


@pytest.mark.parametrize("chip", CHIPS)
def test_bootloader_image_info(builds: Builds, chip: str) -> None:
    out = image_info(chip, builds.a[chip] / "bootloader" / "bootloader.bin")
    assert_valid_checksum_and_hash(out)
    assert "Bootloader version: 1" in out


@pytest.mark.parametrize("chip", CHIPS)
def test_app_desc(builds: Builds, chip: str) -> None:
    image = (builds.a[chip] / "hello.bin").read_bytes()
    assert image[0] == 0xE9
    _seg_addr, seg_len = struct.unpack_from("<II", image, 0x18)
    assert seg_len >= APP_DESC.size
    (
        magic,
        secure_version,
        _r1,
        version,
        project,
        time,
        date,
        idf_ver,
        elf_sha256,
        _min_efuse,
        _max_efuse,
        mmu_page_size,
        _r3,
        _r2,
    ) = APP_DESC.unpack_from(image, 0x20)
    assert magic == 0xABCD5432
    assert secure_version == 0
    assert version.rstrip(b"\0").decode() == VERSION
    assert project.rstrip(b"\0") == b"hello"
    assert time == b"\0" * 16
    assert date == b"\0" * 16
    assert idf_ver.rstrip(b"\0") == b"esp32tasks-example"
    assert elf_sha256 == hashlib.sha256((builds.a[chip] / "hello.elf").read_bytes()).digest()
    assert mmu_page_size == 16


@pytest.mark.parametrize("chip", ["esp32c3", "esp32c6"])
def test_partition_table(builds: Builds, chip: str) -> None:
    table = (builds.a[chip] / "partition_table" / "partition-table.bin").read_bytes()
    assert len(table) == 0xC00
    entries = []
    pos = 0
    while table[pos : pos + 2] == b"\xaa\x50":
        entries.append(struct.unpack_from("<2sBBII16sI", table, pos))
        pos += 32
    assert table[pos : pos + 16] == b"\xeb\xeb" + b"\xff" * 14
    assert table[pos + 16 : pos + 32] == hashlib.md5(table[:pos], usedforsecurity=False).digest()
    assert set(table[pos + 32 :]) == {0xFF}
    by_name = {e[5].rstrip(b"\0").decode(): e for e in entries}
    assert list(by_name) == ["nvs", "otadata", "phy_init", "ota_0", "ota_1"]
    assert by_name["otadata"][1:3] == (0x01, 0x00)
    assert by_name["ota_0"][1:3] == (0x00, 0x10)
    assert by_name["ota_1"][1:3] == (0x00, 0x11)
    args = json.loads((builds.a[chip] / "flasher_args.json").read_text())
    assert int(args["otadata"]["offset"], 16) == by_name["otadata"][3]
    assert int(args["app"]["offset"], 16) == by_name["ota_0"][3]


@pytest.mark.parametrize("chip", CHIPS)
def test_json_files(builds: Builds, chip: str) -> None:
    out = builds.a[chip]
    args = json.loads((out / "flasher_args.json").read_text())
    assert args["write_flash_args"][:4] == ["--flash_mode", "dio", "--flash_size", "2MB"]
    assert args["flash_settings"]["flash_mode"] == "dio"
    assert args["extra_esptool_args"]["chip"] == chip
    assert args["bootloader"]["offset"] == hex(BOOTLOADER_OFFSETS.get(chip, 0))
    assert args["partition-table"]["offset"] == "0x8000"
    flash_files = {}
    for key in ("bootloader", "app", "partition-table", "otadata"):
        entry = args[key]
        assert entry["encrypted"] == "false"
        assert (out / entry["file"]).is_file()
        flash_files[entry["offset"]] = entry["file"]
    assert args["flash_files"] == flash_files

    desc = json.loads((out / "project_description.json").read_text())
    assert desc["project_name"] == "hello"
    assert desc["project_version"] == VERSION
    assert desc["target"] == chip
    assert (out / desc["app_elf"]).is_file()
    assert (out / desc["app_bin"]).is_file()
    assert (out / desc["config_file"]).is_file()

    sdkconfig = (out / "sdkconfig").read_text()
    assert f'CONFIG_IDF_TARGET="{chip}"' in sdkconfig
    assert f'CONFIG_APP_PROJECT_VER="{VERSION}"' in sdkconfig


def test_no_absolute_paths(builds: Builds) -> None:
    needles = [str(builds.root).encode(), str(EXAMPLE).encode(), b"/tmp/", b"/usr/"]
    for chip in CHIPS:
        for name, data in tree(builds.a[chip]).items():
            for needle in needles:
                assert needle not in data, f"{chip}/{name} contains {needle!r}"


@pytest.mark.parametrize("chip", CHIPS)
def test_reproducible_across_paths(builds: Builds, chip: str) -> None:
    files_a, files_b = tree(builds.a[chip]), tree(builds.b[chip])
    assert sorted(files_a) == sorted(files_b)
    different = [name for name in files_a if files_a[name] != files_b[name]]
    assert different == []


def test_per_target_defaults_only_affect_that_target(builds: Builds) -> None:
    c3_with, c3_without = builds.a["esp32c3"], builds.no_c6_defaults["esp32c3"]
    c6_with, c6_without = builds.a["esp32c6"], builds.no_c6_defaults["esp32c6"]
    assert (c3_with / "hello.bin").read_bytes() == (c3_without / "hello.bin").read_bytes()
    assert (c6_with / "hello.bin").read_bytes() != (c6_without / "hello.bin").read_bytes()
    assert 'CONFIG_HELLO_GREETING="Hello"' in (c6_without / "sdkconfig").read_text()
    assert 'CONFIG_HELLO_GREETING="Hello"' not in (c6_with / "sdkconfig").read_text()


def test_target_name_distinct_from_chip(builds: Builds) -> None:
    alias, plain = builds.target_alias, builds.a["esp32c6"]
    assert (alias / "hello.bin").read_bytes() == (plain / "hello.bin").read_bytes()
    desc = json.loads((alias / "project_description.json").read_text())
    assert desc["target"] == "esp32c6"


@pytest.mark.parametrize("version", ["v" * 32, "1.0.0-" + "x" * 40, ""])
def test_bad_version_fails(tmp_path: Path, version: str) -> None:
    out = tmp_path / "build"
    out.mkdir()
    (out / "flasher_args.json").write_text("{}")  # stale file from an earlier build
    result = run_build(EXAMPLE, out, "esp32c3", version=version)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (out / "flasher_args.json").exists()
    assert not (out / "project_description.json").exists()


def test_max_length_version_builds(tmp_path: Path) -> None:
    if not _compiler_available():
        pytest.skip("riscv64-unknown-elf-gcc not installed")
    version = "9" * 31
    result = run_build(EXAMPLE, tmp_path / "b", "esp32c3", version=version)
    assert result.returncode == 0, result.stderr
    assert f"App version: {version}" in image_info("esp32c3", tmp_path / "b" / "hello.bin")
