"""The idf builder, against a stand-in idf.py (ESP-IDF itself cannot be installed here).

The stand-in honours the options esp32tasks passes (-B, -DIDF_TARGET, -DSDKCONFIG,
-DSDKCONFIG_DEFAULTS, build), records each call, and writes ESP-IDF-shaped output
(absolute paths in project_description.json, as idf.py does) with the example's real
compiler, so the images it leaves are real.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from esp32tasks.receipts import BuildReceipt
from tests.support.repo import Repo, receipt

pytestmark = pytest.mark.integration

STAND_IN = '''#!/usr/bin/env python3
"""Stand-in for ESP-IDF's idf.py, made by esp32tasks' tests; not ESP-IDF."""
import json, os, subprocess, sys

args = sys.argv[1:]
if args[-1:] != ["build"] or "-B" not in args:
    sys.exit(f"idf.py stand-in: unsupported arguments {args}")
build_dir = os.path.abspath(args[args.index("-B") + 1])
defines = dict(a[2:].split("=", 1) for a in args if a.startswith("-D"))
with open(os.environ["IDF_STANDIN_LOG"], "a") as log:
    log.write(json.dumps({"argv": args, "cwd": os.getcwd(),
                          "version": os.environ.get("FIRMWARE_VERSION")}) + "\\n")
chip = defines["IDF_TARGET"]
subprocess.run([sys.executable, "tools/build.py", "--target", chip, "--chip", chip,
                "--build-dir", build_dir, "--version", defines["PROJECT_VER"]],
               check=True)
if os.path.abspath(defines["SDKCONFIG"]) != os.path.join(build_dir, "sdkconfig"):
    sys.exit("idf.py stand-in: sdkconfig is not where -DSDKCONFIG says")
# idf.py's project_description.json holds absolute paths
path = os.path.join(build_dir, "project_description.json")
description = json.load(open(path))
description.update(build_dir=build_dir, project_path=os.getcwd(),
                   config_file=os.path.join(build_dir, "sdkconfig"))
json.dump(description, open(path, "w"))
'''

IDF_TARGETS = """\
[project]
name = "hello"
app_type = "hello"
version = "2.0.0"
app_dir = "examples/hello"

[builder]
kind = "idf"
sdkconfig_defaults = ["sdkconfig.defaults"]

[[targets]]
name = "esp32c3"

[[targets]]
name = "esp32c6"
sdkconfig_defaults = ["sdkconfig.defaults.esp32c6"]
"""


@pytest.fixture
def idf_repo(repo: Repo, tmp_path: Path) -> Repo:
    bin_dir = tmp_path / "idf-bin"
    bin_dir.mkdir()
    idf = bin_dir / "idf.py"
    idf.write_text(STAND_IN)
    idf.chmod(0o755)
    repo.env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    repo.env["IDF_STANDIN_LOG"] = str(tmp_path / "idf-calls.jsonl")
    repo.write("targets.toml", IDF_TARGETS)
    repo.commit("build with idf.py")
    return repo


def calls(repo: Repo) -> list[dict[str, Any]]:
    log = Path(repo.env["IDF_STANDIN_LOG"])
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_idf_builder_arguments_and_outputs(idf_repo: Repo) -> None:
    run = idf_repo.doit("-n", "2", "release")
    assert sorted(t for t in run.executed if t.startswith("build:")) == \
        ["build:esp32c3", "build:esp32c6"]
    root = idf_repo.path
    by_target = {c["argv"][c["argv"].index("-B") + 1]: c for c in calls(idf_repo)}
    c3 = by_target[str(root / "build/esp32c3")]
    assert c3["argv"] == ["-B", str(root / "build/esp32c3"), "-DIDF_TARGET=esp32c3",
                          f"-DSDKCONFIG={root / 'build/esp32c3'}/sdkconfig",
                          "-DPROJECT_VER=2.0.0",
                          "-DSDKCONFIG_DEFAULTS=sdkconfig.defaults", "build"]
    c6 = by_target[str(root / "build/esp32c6")]
    assert "-DSDKCONFIG_DEFAULTS=sdkconfig.defaults;sdkconfig.defaults.esp32c6" in c6["argv"]
    assert c3["cwd"] == str(root / "examples/hello")
    assert c3["version"] == "2.0.0"
    # outputs found through the contract files, although IDF's paths are absolute
    kinds = {a.kind for a in receipt(idf_repo, "build-esp32c3", BuildReceipt).artifacts}
    assert kinds == {"app", "bootloader", "partition-table", "otadata", "elf", "map",
                     "sdkconfig", "flasher-args", "partitions-csv", "factory"}
    assert idf_repo.doit("release").executed == []


def test_per_target_sdkconfig_defaults_rebuild_only_their_target(idf_repo: Repo) -> None:
    idf_repo.doit("release")
    idf_repo.edit("examples/hello/sdkconfig.defaults.esp32c6", "Hello from", "Hi from")
    idf_repo.commit("c6 greeting")
    builds = [t for t in idf_repo.doit("release").executed if t.startswith("build:")]
    assert builds == ["build:esp32c6"]
    idf_repo.edit("examples/hello/sdkconfig.defaults", '"Hello"', '"Hey"')
    idf_repo.commit("everyone's greeting")
    builds = [t for t in idf_repo.doit("release").executed if t.startswith("build:")]
    assert sorted(builds) == ["build:esp32c3", "build:esp32c6"]


def test_a_chips_own_sdkconfig_defaults_need_no_listing(idf_repo: Repo) -> None:
    """ESP-IDF applies sdkconfig.defaults.<chip> by itself: with the idf builder it is a
    file of that chip's targets, and no other target rebuilds when it changes."""
    idf_repo.edit("targets.toml", 'sdkconfig_defaults = ["sdkconfig.defaults.esp32c6"]\n', "")
    idf_repo.commit("ESP-IDF finds the chip's defaults itself")
    idf_repo.doit("release")
    idf_repo.edit("examples/hello/sdkconfig.defaults.esp32c6", "Hello from", "Hi from")
    idf_repo.commit("c6 greeting")
    builds = [t for t in idf_repo.doit("release").executed if t.startswith("build:")]
    assert builds == ["build:esp32c6"]


def test_idf_py_not_installed(idf_repo: Repo) -> None:
    idf_repo.env["PATH"] = "/usr/bin:/bin"
    run = idf_repo.doit("release", check=False)
    assert run.code != 0
    assert "error: build:esp32c3: command not found: 'idf.py'; install it or fix the command " \
           "in targets.toml ([builder] command)" in run.stderr
