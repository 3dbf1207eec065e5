"""The first-flash bundle offline: the web manifest, chip families, bad flasher_args.json.

Every flasher_args.json problem here is found before esptool runs (tests/integration/
test_bundle.py merges real builds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest

from esp32tasks.bundle import CHIP_FAMILIES, ChipFamily, WebBuild, merge, web_manifest
from esp32tasks.config import KNOWN_CHIPS
from esp32tasks.errors import BuildError, ConfigError


def web(target: str, chip: str | None = None) -> WebBuild:
    return WebBuild(target=target, chip=chip or target,
                    path=f"{target}/artifacts/hello-{target}-factory.bin")


def test_web_manifest_has_one_factory_part_per_target_at_offset_0() -> None:
    assert web_manifest("hello", "1.0.0", [web("esp32c3"), web("esp32c6-a", "esp32c6")]) == {
        "name": "hello",
        "version": "1.0.0",
        "new_install_prompt_erase": True,
        "builds": [
            {"chipFamily": "ESP32-C3",
             "parts": [{"path": "esp32c3/artifacts/hello-esp32c3-factory.bin", "offset": 0}]},
            {"chipFamily": "ESP32-C6",
             "parts": [{"path": "esp32c6-a/artifacts/hello-esp32c6-a-factory.bin",
                        "offset": 0}]},
        ],
    }


def test_web_manifest_is_json() -> None:
    manifest = web_manifest("hello", "1.0.0", [web(chip) for chip in KNOWN_CHIPS])
    assert json.loads(json.dumps(manifest)) == manifest


@pytest.mark.parametrize(("chip", "family"), [
    ("esp32", "ESP32"), ("esp32s2", "ESP32-S2"), ("esp32s3", "ESP32-S3"),
    ("esp32c2", "ESP32-C2"), ("esp32c3", "ESP32-C3"), ("esp32c5", "ESP32-C5"),
    ("esp32c6", "ESP32-C6"), ("esp32c61", "ESP32-C61"), ("esp32h2", "ESP32-H2"),
    ("esp32p4", "ESP32-P4"), ("esp8266", "ESP8266"),
])
def test_chip_family(chip: str, family: str) -> None:
    assert CHIP_FAMILIES[chip] == family
    built = web_manifest("hello", "1", [web(chip)])["builds"]
    assert [b["chipFamily"] for b in built] == [family]


def test_every_chip_we_build_has_a_family_and_every_family_is_typed() -> None:
    assert set(KNOWN_CHIPS) <= set(CHIP_FAMILIES)
    assert sorted(CHIP_FAMILIES.values()) == sorted(get_args(ChipFamily))


def test_a_chip_esp_web_tools_cannot_flash_is_refused_with_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        web_manifest("hello", "1", [web("esp32c3"), web("esp32h4"), web("c3-b", "esp32c3")])
    assert caught.value.problems == [
        "target 'esp32h4': ESP Web Tools cannot flash chip 'esp32h4' (it knows "
        f"{', '.join(CHIP_FAMILIES)}); leave the target out of the web manifest",
        "targets 'esp32c3' and 'c3-b' are both ESP32-C3: ESP Web Tools installs the first "
        "build of a chip family only; leave one out of the web manifest",
    ]


@pytest.mark.parametrize("path", ["", "/abs/x.bin", "../x.bin", "a/../../x.bin",
                                  "https://example.com/x.bin", "a\\x.bin"])
def test_a_web_build_path_is_relative(path: str) -> None:
    with pytest.raises(ValueError, match="relative POSIX path"):
        WebBuild(target="esp32c3", chip="esp32c3", path=path)


# --- flasher_args.json -----------------------------------------------------------------

FIX = "; build the target again (doit build), or fix the builder that writes it"


def flasher_args(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "flash_settings": {"flash_mode": "dio", "flash_size": "2MB", "flash_freq": "80m"},
        "flash_files": {"0x0": "bootloader/bootloader.bin", "0x8000": "pt.bin",
                        "0x10000": "hello.bin"},
        "extra_esptool_args": {"chip": "esp32c3"},
    }
    doc.update(changes)
    return doc


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    """Tiny part files: flasher_args.json is checked before esptool would read them."""
    build = tmp_path / "build" / "esp32c3"
    (build / "bootloader").mkdir(parents=True)
    (build / "bootloader" / "bootloader.bin").write_bytes(b"\xe9" * 0x10)
    (build / "pt.bin").write_bytes(b"\xaa" * 0xC00)
    (build / "hello.bin").write_bytes(b"\xe9" * 0x20)
    return build


def refusal(build_dir: Path, content: bytes | dict[str, Any] | None) -> str:
    path = build_dir / "flasher_args.json"
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    out = build_dir.parent / "factory.bin"
    with pytest.raises(BuildError) as caught:
        merge(build_dir, path, out)
    assert not out.exists()
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("content", "problem"), [
    (b"{", "not valid JSON (Expecting property name enclosed in double quotes: line 1 "
           "column 2 (char 1))"),
    (b"\xff", "not valid JSON ('utf-8' codec can't decode byte 0xff in position 0: "
              "invalid start byte)"),
    (b"[]", "must hold a JSON object"),
    (flasher_args(flash_settings=None), "'flash_settings' must be a non-empty object, "
                                        "found null"),
    (flasher_args(flash_settings={"flash_mode": "dio", "flash_size": "2MB"}),
     "'flash_settings.flash_freq' must be a non-empty string, found null"),
    (flasher_args(flash_settings={"flash_mode": 2, "flash_size": "2MB", "flash_freq": "80m"}),
     "'flash_settings.flash_mode' must be a non-empty string, found 2"),
    (flasher_args(extra_esptool_args={"stub": True}),
     "'extra_esptool_args.chip' must be a non-empty string, found null"),
    (flasher_args(flash_files={}), "'flash_files' must be a non-empty object, found {}"),
    (flasher_args(flash_files={"boot": "hello.bin"}),
     "'flash_files' key 'boot' is not an offset like \"0x10000\""),
    (flasher_args(flash_files={"-0x10": "hello.bin"}),
     "'flash_files' key '-0x10' is not an offset like \"0x10000\""),
    (flasher_args(flash_files={"0x0": ["hello.bin"]}),
     "'flash_files.0x0' must be a non-empty string, found [\"hello.bin\"]"),
    (flasher_args(flash_files={"0x8000": "pt.bin", "0x8800": "hello.bin"}),
     "'hello.bin' at 0x8800 overlaps 'pt.bin', which ends at 0x8c00"),
])
def test_a_bad_flasher_args_is_one_line_naming_the_file(
        build_dir: Path, content: bytes | dict[str, Any], problem: str) -> None:
    assert refusal(build_dir, content) == f"{build_dir / 'flasher_args.json'}: {problem}{FIX}"


def test_a_missing_flasher_args_says_build_first(build_dir: Path) -> None:
    assert refusal(build_dir, None) == (f"{build_dir / 'flasher_args.json'} is missing; build "
                                        "the target first (doit build)")


def test_a_missing_part_names_the_part_and_the_list(build_dir: Path) -> None:
    (build_dir / "hello.bin").unlink()
    assert refusal(build_dir, flasher_args()) == (
        f"{build_dir / 'hello.bin'} is missing, but {build_dir / 'flasher_args.json'} lists "
        "it at 0x10000; build the target again (doit build)")
