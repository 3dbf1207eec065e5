"""Run a target's build (``idf.py`` or a command) and find its outputs.

Both builders share ESP-IDF's output contract: the build dir holds ``flasher_args.json``
and ``project_description.json``, and every other artifact is found through them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from esp32tasks.config import Release, Target, substitute
from esp32tasks.errors import BuildError

__all__ = [
    "CONTRACT_FILES",
    "Artifact",
    "build_argv",
    "build_env",
    "discover",
    "idf_version_files",
    "resolve_toolchain",
    "settings",
]

FLASHER_ARGS: Final = "flasher_args.json"
PROJECT_DESCRIPTION: Final = "project_description.json"
#: What every build must write; doit learns the rest after the build, from these.
CONTRACT_FILES: Final = (FLASHER_ARGS, PROJECT_DESCRIPTION)
#: Environment our own publishing reads; a build never sees it unless pass_env names it.
SECRET_PREFIXES: Final = ("ESP32TASKS_", "AWS_")
SECRET_NAMES: Final = frozenset({"DOCKER_AUTH_CONFIG", "DOCKER_CONFIG"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Artifact:
    kind: str
    """app, bootloader, partition-table, otadata, sdkconfig, partitions-csv, flasher-args,
    elf, map."""
    path: Path
    """Absolute path of the file."""

    @property
    def name(self) -> str:
        """The object name in the store: the file's base name."""
        return self.path.name


def build_argv(release: Release, target: Target, build_dir: str) -> list[str]:
    """The argv to run; ``build_dir`` is substituted as given (relative for hashing)."""
    builder = release.builder
    if builder.kind == "idf":
        # ESP-IDF's tools/cmake/project.cmake (__project_get_revision) takes PROJECT_VER
        # as it is when it is defined, before version.txt and git describe: a -D cache
        # entry is, so the app descriptor gets our version with no CMake edit.
        argv = [builder.command[0], "-B", build_dir, f"-DIDF_TARGET={target.chip}",
                f"-DSDKCONFIG={build_dir}/sdkconfig",
                f"-DPROJECT_VER={release.project.version}"]
        defaults = builder.sdkconfig_defaults + target.sdkconfig_defaults
        if defaults:
            argv.append("-DSDKCONFIG_DEFAULTS=" + ";".join(defaults))
        return [*argv, "build"]
    values = {"target": target.name, "chip": target.chip, "build_dir": build_dir,
              "version": release.project.version}
    return [substitute(arg, values) for arg in builder.command]


def build_env(release: Release, target: Target,
              base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The build's environment: ours minus secrets, plus the config's and the reference's."""
    base = os.environ if base is None else base
    passed = set(release.builder.pass_env + target.pass_env)
    # a signing key's variable never reaches a build, pass_env or not
    keys = {k.private_key_env for k in release.keys if k.private_key_env is not None}
    env = {k: v for k, v in base.items() if k not in keys and
           (k in passed or not (k.startswith(SECRET_PREFIXES) or k in SECRET_NAMES))}
    # programs installed beside us (esptool, python3 of this venv) come first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(release.builder.env)
    env.update(target.env)
    defaults = release.builder.sdkconfig_defaults + target.sdkconfig_defaults
    if defaults and release.builder.kind == "command":
        env["SDKCONFIG_DEFAULTS"] = ";".join(defaults)
    env.update(
        FIRMWARE_VERSION=release.project.version,
        DEVICE_TYPE=target.name,
        APPLICATION_TYPE=release.project.app_type,
    )
    return env


def settings(release: Release, target: Target, build_dir: str) -> dict[str, Any]:
    """Everything but files that decides a build's output: doit's ``config_changed``."""
    builder = release.builder
    return {
        "builder": builder.kind,
        "argv": build_argv(release, target, build_dir),
        "env": sorted({**dict(builder.env), **dict(target.env)}.items()),
        "pass_env": sorted(set(builder.pass_env + target.pass_env)),
        "chip": target.chip,
        "version": release.project.version,
        "app_type": release.project.app_type,
        "idf_path": os.environ.get("IDF_PATH", "") if builder.kind == "idf" else "",
    }


#: What names an ESP-IDF tree's version, relative to ``IDF_PATH``.
IDF_VERSION_FILES: Final = ("version.txt", "tools/cmake/version.cmake")


def idf_version_files(release: Release) -> list[tuple[str, Path]]:
    """For the idf builder: ``(IDF_PATH/<name>, path)`` of each of the ESP-IDF tree's
    version files there is (the build cache's toolchain identity, besides its programs)."""
    idf = os.environ.get("IDF_PATH", "") if release.builder.kind == "idf" else ""
    if not idf:
        return []
    return [(f"IDF_PATH/{name}", Path(idf) / name) for name in IDF_VERSION_FILES
            if (Path(idf) / name).is_file()]


def resolve_toolchain(release: Release) -> list[str]:
    """Absolute paths of the toolchain programs, whose content doit tracks like sources.

    The builder's own program counts too. A program that is not installed is left out
    here; running the build then reports it.
    """
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = []
    for program in (release.builder.command[0], *release.builder.toolchain):
        if "{" in program or ("/" in program and not Path(program).is_absolute()):
            continue  # a file of the app (e.g. tools/build.py) is a source already
        where = shutil.which(program, path=path)
        if where:
            found.append(os.path.realpath(where))
    return sorted(set(found))


def discover(build_dir: Path, app_dir: Path, label: str) -> list[Artifact]:
    """Find a finished build's artifacts through its two contract files.

    ``label`` is the build dir as the user knows it (``build/esp32c3``), for messages.
    """
    flasher = _contract(build_dir, FLASHER_ARGS, label)
    description = _contract(build_dir, PROJECT_DESCRIPTION, label)

    def flasher_file(key: str) -> object:
        entry = flasher.get(key)
        return entry.get("file") if isinstance(entry, dict) else None

    found: list[tuple[str, Path, bool]] = []  # kind, path, required

    def add(kind: str, name: object, required: bool, *, source: str,
            base: Path = build_dir) -> None:
        if name is not None and not isinstance(name, str):
            raise BuildError(f"{label}/{source}: the {kind} file must be a path string, not "
                             f"{json.dumps(name)[:60]}; fix the build")
        if name:
            found.append((kind, base / name, required))
        elif required:
            raise BuildError(f"{label}/{source}: no {kind} entry; the build must list "
                             f"its {kind} file (ESP-IDF's output contract)")

    app = flasher_file("app")
    add("app", app or description.get("app_bin"), required=True,
        source=FLASHER_ARGS if app or "app_bin" not in description else PROJECT_DESCRIPTION)
    add("bootloader", flasher_file("bootloader"), required=True, source=FLASHER_ARGS)
    add("partition-table", flasher_file("partition-table"), required=True, source=FLASHER_ARGS)
    add("otadata", flasher_file("otadata"), required=False, source=FLASHER_ARGS)
    elf = description.get("app_elf")
    add("elf", elf, required=True, source=PROJECT_DESCRIPTION)
    if isinstance(elf, str):
        add("map", str(Path(elf).with_suffix(".map")), required=False,
            source=PROJECT_DESCRIPTION)
    config_file = description.get("config_file") or "sdkconfig"
    add("sdkconfig", config_file, required=False, source=PROJECT_DESCRIPTION)
    if not isinstance(config_file, str):
        config_file = "sdkconfig"  # add() refused it already; keeps mypy honest
    found.append(("flasher-args", build_dir / FLASHER_ARGS, True))
    sdkconfig = build_dir / config_file
    if sdkconfig.is_file():
        csv, required = _partition_csv(sdkconfig, app_dir)
        if csv:
            add("partitions-csv", csv, required=required, source="sdkconfig", base=app_dir)

    artifacts = []
    for kind, path, required in found:
        if path.is_file():
            artifacts.append(Artifact(kind=kind, path=path))
        elif required:
            shown = _shown(path, build_dir, label)
            raise BuildError(f"expected output missing: {shown} ({kind}); the build finished "
                             f"but did not write it (see {label}/build.log)")
    names = [a.name for a in artifacts]
    for name in set(names):
        if names.count(name) > 1:
            raise BuildError(f"{label}: two artifacts are both named '{name}'; they would "
                             "overwrite each other in the store: rename one")
    return artifacts


def _contract(build_dir: Path, name: str, label: str) -> dict[str, Any]:
    path = build_dir / name
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BuildError(f"expected output missing: {label}/{name}; the build must write it "
                         "(ESP-IDF's output contract; see README.md, 'Builders')") from None
    except json.JSONDecodeError as exc:
        raise BuildError(f"{label}/{name} is not valid JSON ({exc}); fix the build") from None
    if not isinstance(data, dict):
        raise BuildError(f"{label}/{name} must hold a JSON object; fix the build")
    return data


def _partition_csv(sdkconfig: Path, app_dir: Path) -> tuple[str | None, bool]:
    """The partition table CSV of the app an sdkconfig names, and whether it must exist:
    the custom table's (``CONFIG_PARTITION_TABLE_CUSTOM_FILENAME``), else
    ``CONFIG_PARTITION_TABLE_FILENAME`` when it names a file in the app (a built-in table's
    CSV lives in ESP-IDF, not in the app)."""
    values = {}
    for line in sdkconfig.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_PARTITION_TABLE_"):
            values[key] = value.strip().strip('"')
    if values.get("CONFIG_PARTITION_TABLE_CUSTOM") == "y":
        return values.get("CONFIG_PARTITION_TABLE_CUSTOM_FILENAME") or None, True
    named = values.get("CONFIG_PARTITION_TABLE_FILENAME")
    if named and (app_dir / named).is_file():
        return named, False
    return None, False


def _shown(path: Path, build_dir: Path, label: str) -> str:
    try:
        return f"{label}/{path.relative_to(build_dir).as_posix()}"
    except ValueError:
        return str(path)
