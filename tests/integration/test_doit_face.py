"""The doit face as a user meets it: DOIT_CONFIG in dodo.py, `doit info` and `doit clean`."""

from __future__ import annotations

import pytest

from tests.support.repo import Repo

pytestmark = pytest.mark.integration

STAR = "from esp32tasks.tasks import *  # noqa: F403\n"


def test_own_doit_config_without_ours_is_one_clear_error(repo: Repo) -> None:
    repo.write("dodo.py", STAR + 'DOIT_CONFIG = {"verbosity": 2}\n')
    run = repo.doit("release", check=False)
    assert run.code == 2
    assert run.stderr.splitlines() == [
        "error: dodo.py: DOIT_CONFIG lacks esp32tasks' default_tasks, dep_file, backend, "
        "check_file_uptodate, reporter: doit would keep its state in the repository root and "
        "run every task by default; write `DOIT_CONFIG = doit_config(...)` (from "
        "esp32tasks.tasks import doit_config), which keeps them and adds yours"]
    assert not (repo.path / "build").exists()  # nothing ran


def test_doit_config_helper_keeps_our_state_file_and_default_task(repo: Repo) -> None:
    repo.write("dodo.py", STAR + "from esp32tasks.tasks import doit_config\n\n"
               "DOIT_CONFIG = doit_config(verbosity=2)\n")
    repo.commit("own doit settings")
    first = repo.doit()  # the default task is release
    assert "build:esp32c3" in first.executed
    assert "verify" not in first.output
    assert (repo.path / "build" / "doit-state.sqlite3").is_file()
    assert not list(repo.path.glob(".doit*"))
    assert repo.doit().executed == []


def test_info_and_clean_name_the_functions_and_paths(repo: Repo) -> None:
    info = repo.doit("info", "build:esp32c3", check=False)  # 1: not up to date
    assert "esp32tasks.build.action.build(esp32c3)" in info.stdout
    repo.doit("release")
    clean = repo.doit("clean", "--dry-run", "tag:esp32c3")
    assert ("tag:esp32c3 - executing 'Python: "
            "esp32tasks.files.remove(build/receipts/image-esp32c3.json)'") in clean.stdout
    assert "function" not in clean.stdout


@pytest.mark.parametrize(("damage", "line"), [
    ("directory", "targets.toml: is a directory, not a file; esp32tasks reads the release from "
                  "the file targets.toml at the repository root"),
    ("syntax", "error: targets.toml:1:9: invalid TOML: expected ']' at the end of a table "
               "declaration; fix the syntax there (https://toml.io)"),
])
def test_a_broken_targets_toml_is_one_line(repo: Repo, damage: str, line: str) -> None:
    config = repo.path / "targets.toml"
    config.unlink()
    if damage == "directory":
        config.mkdir()
    else:
        config.write_text('[project\nname = "x"\n')
    run = repo.doit("release", check=False)
    assert run.code == 2
    (printed,) = run.stderr.splitlines()
    assert printed.endswith(line)
    assert "Traceback" not in run.output
