"""The builders offline: argv, environment and settings of a build, and its outputs found
through ESP-IDF's two contract files, written by hand here."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from esp32tasks.build.builders import (
    CONTRACT_FILES,
    build_argv,
    build_env,
    discover,
    resolve_toolchain,
    settings,
)
from esp32tasks.config import Builder, BuilderKind, Project, Release, Target
from esp32tasks.errors import BuildError

LABEL = "build/esp32c3"
VENV_BIN = str(Path(sys.executable).parent)


def make_release(kind: BuilderKind = "command", *, command: tuple[str, ...] = (),
                 env: tuple[tuple[str, str], ...] = (), sdkconfig_defaults: tuple[str, ...] = (),
                 toolchain: tuple[str, ...] = (), pass_env: tuple[str, ...] = (),
                 targets: tuple[Target, ...] = ()) -> Release:
    builder = Builder(kind=kind, command=command or (("idf.py",) if kind == "idf" else ("make",)),
                      env=env, sdkconfig_defaults=sdkconfig_defaults, toolchain=toolchain,
                      pass_env=pass_env)
    return Release(path=Path("/repo/targets.toml"),
                   project=Project(name="hello", app_type="ota", version="1.2.0",
                                   app_dir=PurePosixPath("app")),
                   builder=builder, targets=targets or (Target(name="esp32c3", chip="esp32c3"),))


C3 = Target(name="esp32c3", chip="esp32c3")
S3R8 = Target(name="esp32s3r8", chip="esp32s3", sdkconfig_defaults=("sdkconfig.r8",),
              env=(("BOARD", "r8"),), pass_env=("AWS_PROFILE",))


# -- argv ---------------------------------------------------------------------------------

def test_idf_argv() -> None:
    release = make_release("idf", command=("/opt/idf/tools/idf.py",))
    assert build_argv(release, C3, "build/esp32c3") == [
        "/opt/idf/tools/idf.py", "-B", "build/esp32c3", "-DIDF_TARGET=esp32c3",
        "-DSDKCONFIG=build/esp32c3/sdkconfig", "-DPROJECT_VER=1.2.0", "build"]


def test_idf_argv_with_sdkconfig_defaults_of_the_builder_then_the_target() -> None:
    release = make_release("idf", sdkconfig_defaults=("sdkconfig.defaults", "sdkconfig.ci"))
    assert build_argv(release, S3R8, "build/esp32s3r8") == [
        "idf.py", "-B", "build/esp32s3r8", "-DIDF_TARGET=esp32s3",
        "-DSDKCONFIG=build/esp32s3r8/sdkconfig", "-DPROJECT_VER=1.2.0",
        "-DSDKCONFIG_DEFAULTS=sdkconfig.defaults;sdkconfig.ci;sdkconfig.r8", "build"]


def test_command_argv_fills_every_placeholder() -> None:
    release = make_release(command=("python3", "tools/build.py", "--target", "{target}",
                                    "--chip={chip}", "{build_dir}/out", "v{version}", "plain"))
    assert build_argv(release, S3R8, "build/esp32s3r8") == [
        "python3", "tools/build.py", "--target", "esp32s3r8", "--chip=esp32s3",
        "build/esp32s3r8/out", "v1.2.0", "plain"]


def test_command_argv_takes_the_build_dir_as_given() -> None:
    release = make_release(command=("make", "{build_dir}"))
    assert build_argv(release, C3, "/abs/build/esp32c3") == ["make", "/abs/build/esp32c3"]


# -- environment --------------------------------------------------------------------------

BASE = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/u",
    "IDF_PATH": "/opt/idf",
    "ESP32TASKS_REGISTRY_PASSWORD": "secret",
    "ESP32TASKS_FORCE": "1",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "AWS_PROFILE": "ci",
    "DOCKER_CONFIG": "/home/u/.docker",
    "DOCKER_AUTH_CONFIG": "{}",
    "DOCKER_HOST": "unix:///run/docker.sock",
    "MY_AWS_THING": "kept",
}


def test_build_env_drops_our_secrets() -> None:
    env = build_env(make_release(), C3, BASE)
    assert env == {
        "PATH": f"{VENV_BIN}{os.pathsep}/usr/bin:/bin",
        "HOME": "/home/u",
        "IDF_PATH": "/opt/idf",
        "DOCKER_HOST": "unix:///run/docker.sock",
        "MY_AWS_THING": "kept",
        "FIRMWARE_VERSION": "1.2.0",
        "DEVICE_TYPE": "esp32c3",
        "APPLICATION_TYPE": "ota",
    }


def test_pass_env_of_the_builder_and_the_target_lets_them_through() -> None:
    release = make_release(pass_env=("DOCKER_CONFIG", "ESP32TASKS_FORCE"), targets=(S3R8,))
    env = build_env(release, S3R8, BASE)
    assert env["DOCKER_CONFIG"] == "/home/u/.docker"
    assert env["ESP32TASKS_FORCE"] == "1"
    assert env["AWS_PROFILE"] == "ci"  # the target's pass_env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert "ESP32TASKS_REGISTRY_PASSWORD" not in env
    assert "DOCKER_AUTH_CONFIG" not in env
    assert "AWS_PROFILE" not in build_env(release, C3, BASE), "another target's pass_env"


def test_config_env_then_the_target_then_ours() -> None:
    release = make_release(env=(("BOARD", "generic"), ("CFLAGS", "-O2"),
                                ("FIRMWARE_VERSION", "9.9.9")),
                           sdkconfig_defaults=("sdkconfig.defaults",), targets=(S3R8,))
    env = build_env(release, S3R8, {"PATH": "/bin", "DEVICE_TYPE": "outer"})
    assert env == {
        "PATH": f"{VENV_BIN}{os.pathsep}/bin",
        "BOARD": "r8",
        "CFLAGS": "-O2",
        "SDKCONFIG_DEFAULTS": "sdkconfig.defaults;sdkconfig.r8",
        "FIRMWARE_VERSION": "1.2.0",
        "DEVICE_TYPE": "esp32s3r8",
        "APPLICATION_TYPE": "ota",
    }


def test_idf_builds_get_sdkconfig_defaults_on_the_command_line_only() -> None:
    release = make_release("idf", sdkconfig_defaults=("sdkconfig.defaults",), targets=(S3R8,))
    assert "SDKCONFIG_DEFAULTS" not in build_env(release, S3R8, {"PATH": "/bin"})


def test_build_env_without_path_still_finds_our_programs() -> None:
    assert build_env(make_release(), C3, {})["PATH"] == f"{VENV_BIN}{os.pathsep}"


def test_build_env_reads_the_process_environment_by_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESP32TASKS_REGISTRY_USER", "u")
    monkeypatch.setenv("UNIT_MARKER", "1")
    env = build_env(make_release(), C3)
    assert env["UNIT_MARKER"] == "1"
    assert "ESP32TASKS_REGISTRY_USER" not in env


# -- settings (doit's config_changed) -------------------------------------------------------

def test_settings_of_a_command_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDF_PATH", "/opt/idf")
    release = make_release(command=("make", "{target}"), env=(("BOARD", "generic"),
                                                               ("A", "1")),
                           pass_env=("X", "AWS_PROFILE"), targets=(S3R8,))
    assert settings(release, S3R8, "build/esp32s3r8") == {
        "builder": "command",
        "argv": ["make", "esp32s3r8"],
        "env": [("A", "1"), ("BOARD", "r8")],
        "pass_env": ["AWS_PROFILE", "X"],
        "chip": "esp32s3",
        "version": "1.2.0",
        "app_type": "ota",
        "idf_path": "",
    }


def test_settings_of_an_idf_build_track_idf_path(monkeypatch: pytest.MonkeyPatch) -> None:
    release = make_release("idf")
    monkeypatch.setenv("IDF_PATH", "/opt/idf-5.3")
    first = settings(release, C3, "build/esp32c3")
    assert first["idf_path"] == "/opt/idf-5.3"
    assert first["argv"] == build_argv(release, C3, "build/esp32c3")
    monkeypatch.delenv("IDF_PATH")
    assert settings(release, C3, "build/esp32c3") == {**first, "idf_path": ""}


def test_settings_are_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDF_PATH", raising=False)
    value = settings(make_release(targets=(S3R8,)), S3R8, "build/esp32s3r8")
    assert json.loads(json.dumps(value)) == {**value, "env": [["BOARD", "r8"]]}


# -- toolchain ----------------------------------------------------------------------------

def program(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_resolve_toolchain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gcc = program(tmp_path / "bin", "riscv32-esp-elf-gcc")
    real_ld = program(tmp_path / "opt", "ld-2.41")
    (tmp_path / "bin" / "riscv32-esp-elf-ld").symlink_to(real_ld)
    absolute = program(tmp_path / "abs", "idf-tool")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    release = make_release(command=("tools/build.py", "{build_dir}"),
                           toolchain=("riscv32-esp-elf-ld", "riscv32-esp-elf-gcc",
                                      "not-installed", "{chip}-gcc", str(absolute),
                                      "riscv32-esp-elf-gcc"))
    assert resolve_toolchain(release) == sorted([os.path.realpath(gcc),
                                                 os.path.realpath(real_ld),
                                                 os.path.realpath(absolute)])


def test_the_builders_own_program_is_part_of_the_toolchain(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    idf = program(tmp_path / "bin", "idf.py")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert resolve_toolchain(make_release("idf")) == [os.path.realpath(idf)]


def test_programs_beside_our_python_are_found_first(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    name = Path(sys.executable).name
    assert resolve_toolchain(make_release(command=(name,))) == [
        os.path.realpath(Path(sys.executable).parent / name)]


# -- discover -----------------------------------------------------------------------------

def flasher_args(**entries: str) -> dict[str, Any]:
    return {"write_flash_args": ["--flash_mode", "dio"],
            **{kind: {"offset": "0x0", "file": name} for kind, name in entries.items()}}


FLASHER = flasher_args(app="hello.bin", bootloader="bootloader/bootloader.bin",
                       otadata="ota_data_initial.bin",
                       **{"partition-table": "partition_table/partition-table.bin"})
DESCRIPTION = {"app_elf": "hello.elf", "app_bin": "hello.bin", "project_name": "hello"}


def build_dir(tmp_path: Path, *, flasher: object = FLASHER, description: object = DESCRIPTION,
              files: tuple[str, ...] = ("hello.bin", "bootloader/bootloader.bin",
                                        "partition_table/partition-table.bin",
                                        "ota_data_initial.bin", "hello.elf", "hello.map",
                                        "sdkconfig"),
              sdkconfig: str = "CONFIG_IDF_TARGET=\"esp32c3\"\n") -> Path:
    out = tmp_path / "build" / "esp32c3"
    out.mkdir(parents=True)
    if flasher is not None:
        (out / "flasher_args.json").write_text(json.dumps(flasher))
    if description is not None:
        (out / "project_description.json").write_text(json.dumps(description))
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(sdkconfig if name == "sdkconfig" else name)
    (tmp_path / "app").mkdir(exist_ok=True)
    return out


def found(tmp_path: Path, out: Path) -> list[tuple[str, str]]:
    return [(a.kind, a.path.relative_to(tmp_path).as_posix())
            for a in discover(out, tmp_path / "app", LABEL)]


def test_every_output_is_found_through_the_contract_files(tmp_path: Path) -> None:
    out = build_dir(tmp_path)
    assert found(tmp_path, out) == [
        ("app", "build/esp32c3/hello.bin"),
        ("bootloader", "build/esp32c3/bootloader/bootloader.bin"),
        ("partition-table", "build/esp32c3/partition_table/partition-table.bin"),
        ("otadata", "build/esp32c3/ota_data_initial.bin"),
        ("elf", "build/esp32c3/hello.elf"),
        ("map", "build/esp32c3/hello.map"),
        ("sdkconfig", "build/esp32c3/sdkconfig"),
        ("flasher-args", "build/esp32c3/flasher_args.json"),
    ]
    assert [a.name for a in discover(out, tmp_path / "app", LABEL)] == [
        "hello.bin", "bootloader.bin", "partition-table.bin", "ota_data_initial.bin",
        "hello.elf", "hello.map", "sdkconfig", "flasher_args.json"]
    assert CONTRACT_FILES == ("flasher_args.json", "project_description.json")


def test_optional_outputs_may_be_missing(tmp_path: Path) -> None:
    flasher = {k: v for k, v in FLASHER.items() if k != "otadata"}
    out = build_dir(tmp_path, flasher=flasher,
                    files=("hello.bin", "bootloader/bootloader.bin",
                           "partition_table/partition-table.bin", "hello.elf"))
    assert found(tmp_path, out) == [
        ("app", "build/esp32c3/hello.bin"),
        ("bootloader", "build/esp32c3/bootloader/bootloader.bin"),
        ("partition-table", "build/esp32c3/partition_table/partition-table.bin"),
        ("elf", "build/esp32c3/hello.elf"),
        ("flasher-args", "build/esp32c3/flasher_args.json"),
    ]


def test_an_otadata_entry_whose_file_is_missing_is_left_out(tmp_path: Path) -> None:
    out = build_dir(tmp_path, files=("hello.bin", "bootloader/bootloader.bin",
                                     "partition_table/partition-table.bin", "hello.elf"))
    assert "otadata" not in [kind for kind, _ in found(tmp_path, out)]


def test_the_app_may_come_from_the_project_description(tmp_path: Path) -> None:
    flasher = {k: v for k, v in FLASHER.items() if k != "app"}
    out = build_dir(tmp_path, flasher=flasher)
    assert found(tmp_path, out)[0] == ("app", "build/esp32c3/hello.bin")


def test_an_absolute_config_file_as_esp_idf_writes_it(tmp_path: Path) -> None:
    elsewhere = tmp_path / "config" / "sdkconfig"
    elsewhere.parent.mkdir()
    elsewhere.write_text("")
    out = build_dir(tmp_path, description={**DESCRIPTION, "config_file": str(elsewhere)})
    assert ("sdkconfig", "config/sdkconfig") in found(tmp_path, out)


@pytest.mark.parametrize("name", CONTRACT_FILES)
def test_a_missing_contract_file(tmp_path: Path, name: str) -> None:
    out = build_dir(tmp_path)
    (out / name).unlink()
    with pytest.raises(BuildError) as info:
        discover(out, tmp_path / "app", LABEL)
    assert str(info.value) == (f"expected output missing: build/esp32c3/{name}; the build "
                               "must write it (ESP-IDF's output contract; see README.md, "
                               "'Builders')")


@pytest.mark.parametrize("name", CONTRACT_FILES)
def test_a_contract_file_that_is_not_json(tmp_path: Path, name: str) -> None:
    out = build_dir(tmp_path)
    (out / name).write_text('{"app": ')
    with pytest.raises(BuildError) as info:
        discover(out, tmp_path / "app", LABEL)
    assert str(info.value) == (f"build/esp32c3/{name} is not valid JSON (Expecting value: "
                               "line 1 column 9 (char 8)); fix the build")


@pytest.mark.parametrize("name", CONTRACT_FILES)
def test_a_contract_file_that_is_not_an_object(tmp_path: Path, name: str) -> None:
    out = build_dir(tmp_path)
    (out / name).write_text('["hello.bin"]')
    with pytest.raises(BuildError) as info:
        discover(out, tmp_path / "app", LABEL)
    assert str(info.value) == f"build/esp32c3/{name} must hold a JSON object; fix the build"


@pytest.mark.parametrize("kind", ["bootloader", "partition-table"])
def test_a_required_flasher_entry_is_missing(tmp_path: Path, kind: str) -> None:
    out = build_dir(tmp_path, flasher={k: v for k, v in FLASHER.items() if k != kind})
    with pytest.raises(BuildError) as info:
        discover(out, tmp_path / "app", LABEL)
    assert str(info.value) == (f"build/esp32c3/flasher_args.json: no {kind} entry; the build "
                               f"must list its {kind} file (ESP-IDF's output contract)")


def test_no_app_anywhere(tmp_path: Path) -> None:
    out = build_dir(tmp_path, flasher={k: v for k, v in FLASHER.items() if k != "app"},
                    description={"app_elf": "hello.elf"})
    with pytest.raises(BuildError) as info:
        discover(out, tmp_path / "app", LABEL)
    assert str(info.value) == ("build/esp32c3/flasher_args.json: no app entry; the build must "
                               "list its app file (ESP-IDF's output contract)")


def test_no_elf_names_the_project_description(tmp_path: Path) -> None:
    out = build_dir(tmp_path, description={"app_bin": "hello.bin"})
    with pytest.raises(BuildError) as info:
        discover(out, tmp_path / "app", LABEL)
    assert str(info.value) == ("build/esp32c3/project_description.json: no elf entry; the "
                               "build must list its elf file (ESP-IDF's output contract)")


@pytest.mark.parametrize(("flasher", "description"), [
    (FLASHER, {**DESCRIPTION, "app_elf": 42}),
    ({**FLASHER, "bootloader": {"offset": "0x0", "file": ["bootloader.bin"]}}, DESCRIPTION),
])
def test_a_file_name_that_is_not_a_string_is_a_build_error(
        tmp_path: Path, flasher: object, description: object) -> None:
    out = build_dir(tmp_path, flasher=flasher, description=description)
    with pytest.raises(BuildError, match=r"^build/esp32c3/(flasher_args|project_description)"
                       r"\.json: "):
        discover(out, tmp_path / "app", LABEL)


@pytest.mark.parametrize(("missing", "kind"), [
    ("hello.bin", "app"), ("bootloader/bootloader.bin", "bootloader"),
    ("partition_table/partition-table.bin", "partition-table"), ("hello.elf", "elf")])
def test_a_required_output_is_missing(tmp_path: Path, missing: str, kind: str) -> None:
    out = build_dir(tmp_path)
    (out / missing).unlink()
    with pytest.raises(BuildError) as info:
        discover(out, tmp_path / "app", LABEL)
    assert str(info.value) == (f"expected output missing: build/esp32c3/{missing} ({kind}); "
                               "the build finished but did not write it (see "
                               "build/esp32c3/build.log)")


def test_two_artifacts_with_one_name(tmp_path: Path) -> None:
    flasher = {**FLASHER, "bootloader": {"offset": "0x0", "file": "bootloader/hello.bin"}}
    out = build_dir(tmp_path, flasher=flasher,
                    files=("hello.bin", "bootloader/hello.bin",
                           "partition_table/partition-table.bin", "hello.elf"))
    with pytest.raises(BuildError) as info:
        discover(out, tmp_path / "app", LABEL)
    assert str(info.value) == ("build/esp32c3: two artifacts are both named 'hello.bin'; they "
                               "would overwrite each other in the store: rename one")


CUSTOM = ('CONFIG_PARTITION_TABLE_SINGLE_APP=n\nCONFIG_PARTITION_TABLE_CUSTOM=y\n'
          'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="partitions.csv"\n'
          'CONFIG_PARTITION_TABLE_FILENAME="partitions.csv"\n')


def test_a_custom_partition_csv_from_sdkconfig_is_an_artifact(tmp_path: Path) -> None:
    out = build_dir(tmp_path, sdkconfig=CUSTOM)
    (tmp_path / "app" / "partitions.csv").write_text("nvs, data, nvs, 0x9000, 0x6000\n")
    assert found(tmp_path, out)[-2:] == [("flasher-args", "build/esp32c3/flasher_args.json"),
                                         ("partitions-csv", "app/partitions.csv")]


def test_a_custom_partition_csv_that_is_missing(tmp_path: Path) -> None:
    out = build_dir(tmp_path, sdkconfig=CUSTOM)
    with pytest.raises(BuildError) as info:
        discover(out, tmp_path / "app", LABEL)
    assert str(info.value) == (f"expected output missing: {tmp_path / 'app' / 'partitions.csv'}"
                               " (partitions-csv); the build finished but did not write it (see "
                               "build/esp32c3/build.log)")


@pytest.mark.parametrize("sdkconfig", [
    'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="partitions.csv"\n',
    '# CONFIG_PARTITION_TABLE_CUSTOM is not set\n'
    'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="partitions.csv"\n',
    "CONFIG_PARTITION_TABLE_CUSTOM=y\n",
    'CONFIG_PARTITION_TABLE_CUSTOM=y\nCONFIG_PARTITION_TABLE_CUSTOM_FILENAME=""\n',
])
def test_no_custom_partition_csv(tmp_path: Path, sdkconfig: str) -> None:
    out = build_dir(tmp_path, sdkconfig=sdkconfig)
    assert "partitions-csv" not in [kind for kind, _ in found(tmp_path, out)]


def test_a_partition_csv_the_filename_names_in_the_app_is_an_artifact(tmp_path: Path) -> None:
    out = build_dir(tmp_path, sdkconfig='# CONFIG_PARTITION_TABLE_CUSTOM is not set\n'
                                        'CONFIG_PARTITION_TABLE_FILENAME="parts.csv"\n')
    assert "partitions-csv" not in [kind for kind, _ in found(tmp_path, out)]  # ESP-IDF's
    (tmp_path / "app" / "parts.csv").write_text("nvs, data, nvs, 0x9000, 0x6000\n")
    assert ("partitions-csv", "app/parts.csv") in found(tmp_path, out)


def test_the_sdkconfig_is_found_through_config_file(tmp_path: Path) -> None:
    out = build_dir(tmp_path, description={**DESCRIPTION, "config_file": "config/sdkconfig"},
                    files=("hello.bin", "bootloader/bootloader.bin",
                           "partition_table/partition-table.bin", "hello.elf"))
    (out / "config").mkdir()
    (out / "config" / "sdkconfig").write_text(CUSTOM)
    (tmp_path / "app" / "partitions.csv").write_text("")
    kinds = found(tmp_path, out)
    assert ("sdkconfig", "build/esp32c3/config/sdkconfig") in kinds
    assert ("partitions-csv", "app/partitions.csv") in kinds
