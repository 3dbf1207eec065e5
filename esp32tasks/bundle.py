"""The first-flash bundle: a merged factory image per target, and ESP Web Tools' manifest.

:func:`merge` runs esptool's ``merge-bin`` over what ESP-IDF's ``flasher_args.json`` lists;
:func:`web_manifest` describes the images for https://github.com/esphome/esp-web-tools.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final, Literal

from esp32tasks.errors import BuildError, CommandFailed, ConfigError
from esp32tasks.files import write_atomic

if TYPE_CHECKING:
    import subprocess

__all__ = ["CHIP_FAMILIES", "WEB_MANIFEST", "ChipFamily", "MergedImage", "WebBuild",
           "factory_name", "merge", "web_builds", "web_manifest"]

#: ESP Web Tools' manifest, beside release.json.
WEB_MANIFEST: Final = "manifest.json"


def factory_name(project: str) -> str:
    """The merged factory image's file name, in the build dir and the store."""
    return f"{project}-factory.bin"

#: ``Build["chipFamily"]`` in esp-web-tools 10.4.0's ``dist/const.d.ts`` (ci/web-tools.sh).
ChipFamily = Literal["ESP32", "ESP32-C2", "ESP32-C3", "ESP32-C5", "ESP32-C6", "ESP32-C61",
                     "ESP32-H2", "ESP32-P4", "ESP32-S2", "ESP32-S3", "ESP8266"]
#: ESP-IDF chip -> ESP Web Tools chip family.
CHIP_FAMILIES: Final[Mapping[str, ChipFamily]] = {
    "esp32": "ESP32", "esp32c2": "ESP32-C2", "esp32c3": "ESP32-C3", "esp32c5": "ESP32-C5",
    "esp32c6": "ESP32-C6", "esp32c61": "ESP32-C61", "esp32h2": "ESP32-H2",
    "esp32p4": "ESP32-P4", "esp32s2": "ESP32-S2", "esp32s3": "ESP32-S3", "esp8266": "ESP8266",
}
_SETTINGS: Final = ("flash_mode", "flash_freq", "flash_size")


@dataclass(frozen=True, kw_only=True, slots=True)
class MergedImage:
    """A factory image, flashed at offset 0; ``parts`` are (offset, file in the build dir)."""

    path: Path
    size: int
    sha256: str
    chip: str
    parts: tuple[tuple[int, str], ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class WebBuild:
    """One target's factory image; ``path`` is relative to where manifest.json is served."""

    target: str
    chip: str
    path: str

    def __post_init__(self) -> None:
        parts = PurePosixPath(self.path).parts
        if not parts or parts[0] == "/" or ".." in parts or "\\" in self.path \
                or ":" in self.path:
            raise ValueError(f"WebBuild.path must be a relative POSIX path: {self.path!r}")


def merge(build_dir: Path, flasher_args: Path, out: Path,
          instead: Mapping[str, Path] | None = None) -> MergedImage:
    """Merge the files ``flasher_args`` lists (relative to ``build_dir``) into ``out``;
    ``instead`` maps a listed name to the file to use in its place (a signed app or
    bootloader).

    The flash settings are passed on, so the bootloader header holds what ``idf.py flash``
    would write. ``out`` is replaced atomically.
    """
    import subprocess  # only when a build runs: never on a no-op
    import tempfile

    chip, settings, parts = _read_flasher_args(build_dir, flasher_args, instead or {})
    with tempfile.TemporaryDirectory(prefix="esp32tasks-merge-") as tmp:
        merged = Path(tmp) / out.name
        argv = [sys.executable, "-m", "esptool", "--chip", chip, "merge-bin", "-o", str(merged)]
        for key in _SETTINGS:
            argv += ["--" + key.replace("_", "-"), settings[key]]
        for offset, name in parts:
            argv += [f"{offset:#x}", str(_file(build_dir, name, instead or {}))]
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            raise CommandFailed(f"esptool merge-bin of {flasher_args} failed "
                                f"(exit {proc.returncode}): {_esptool_error(proc)}; fix the "
                                "build's flash settings or files and build again")
        data = merged.read_bytes()
    write_atomic(out, data)
    return MergedImage(path=out, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                       chip=chip, parts=parts)


def web_manifest(name: str, version: str, builds: Sequence[WebBuild]) -> dict[str, Any]:
    """ESP Web Tools' ``manifest.json``: per target one part, its factory image at offset 0.

    Raises :class:`ConfigError` (every problem at once) for a chip ESP Web Tools cannot
    flash, and for two targets of one chip family: it installs only the first of them.
    """
    problems: list[str] = []
    seen: dict[str, str] = {}
    entries: list[dict[str, Any]] = []
    for build in builds:
        family = CHIP_FAMILIES.get(build.chip)
        if family is None:
            problems.append(f"target '{build.target}': ESP Web Tools cannot flash chip "
                            f"'{build.chip}' (it knows {', '.join(CHIP_FAMILIES)}); leave "
                            "the target out of the web manifest")
        elif family in seen:
            problems.append(f"targets '{seen[family]}' and '{build.target}' are both "
                            f"{family}: ESP Web Tools installs the first build of a chip "
                            "family only; leave one out of the web manifest")
        else:
            seen[family] = build.target
            entries.append({"chipFamily": family, "parts": [{"path": build.path, "offset": 0}]})
    if problems:
        raise ConfigError(problems)
    return {"name": name, "version": version, "new_install_prompt_erase": True,
            "builds": entries}


def web_builds(builds: Sequence[WebBuild]) -> tuple[list[WebBuild], list[str]]:
    """The builds ESP Web Tools can install (the first target of each chip family), and
    what was left out and why (for the release's own note, never an error)."""
    kept: list[WebBuild] = []
    seen: dict[str, str] = {}
    left: list[str] = []
    for build in builds:
        family = CHIP_FAMILIES.get(build.chip)
        if family is None:
            left.append(f"{build.target}: ESP Web Tools cannot flash {build.chip}")
        elif family in seen:
            left.append(f"{build.target}: {family} is {seen[family]}'s already")
        else:
            seen[family] = build.target
            kept.append(build)
    return kept, left


def _file(build_dir: Path, name: str, instead: Mapping[str, Path]) -> Path:
    return instead.get(name) or build_dir / name


def _read_flasher_args(build_dir: Path, path: Path, instead: Mapping[str, Path]) -> \
        tuple[str, dict[str, str], tuple[tuple[int, str], ...]]:
    """The chip, flash settings and parts (by offset) of ESP-IDF's ``flasher_args.json``."""
    def bad(problem: str) -> BuildError:
        return BuildError(f"{path}: {problem}; build the target again (doit build), or fix "
                          "the builder that writes it")

    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BuildError(f"{path} is missing; build the target first (doit build)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(f"not valid JSON ({exc})") from None

    def table(value: object, key: str) -> dict[str, Any]:
        if not isinstance(value, dict) or not value:
            raise bad(f"'{key}' must be a non-empty object, found {json.dumps(value)[:40]}")
        return value

    def text(value: object, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise bad(f"'{key}' must be a non-empty string, found {json.dumps(value)[:40]}")
        return value

    if not isinstance(doc, dict):
        raise bad("must hold a JSON object")
    flash = table(doc.get("flash_settings"), "flash_settings")
    settings = {key: text(flash.get(key), f"flash_settings.{key}") for key in _SETTINGS}
    chip = text(table(doc.get("extra_esptool_args"), "extra_esptool_args").get("chip"),
                "extra_esptool_args.chip")
    parts: list[tuple[int, str]] = []
    for key, value in table(doc.get("flash_files"), "flash_files").items():
        try:
            offset = int(key, 16)
        except ValueError:
            offset = -1
        if offset < 0:
            raise bad(f"'flash_files' key '{key}' is not an offset like \"0x10000\"")
        parts.append((offset, text(value, f"flash_files.{key}")))
    parts.sort()
    end, previous = 0, ""
    for offset, name in parts:
        file = _file(build_dir, name, instead)
        if not file.is_file():
            raise BuildError(f"{file} is missing, but {path} lists it at {offset:#x}; build "
                             "the target again (doit build)")
        if offset < end:
            raise bad(f"'{name}' at {offset:#x} overlaps '{previous}', which ends at {end:#x}")
        end, previous = offset + file.stat().st_size, name
    return chip, settings, tuple(parts)


def _esptool_error(proc: subprocess.CompletedProcess[str]) -> str:
    """esptool's error as one line: the text of click's error box, else the last line."""
    lines = [line.strip(" │|╭╮╰╯─-+") for line in proc.stderr.splitlines()]
    if "Error" in lines:
        message = " ".join(line for line in lines[lines.index("Error") + 1:] if line)
    else:
        message = next((line for line in reversed(lines) if line), "") or \
            next((line for line in reversed(proc.stdout.splitlines()) if line.strip()), "")
    return " ".join(message.removeprefix("ERROR: ").split()).rstrip(".") or "no message"
