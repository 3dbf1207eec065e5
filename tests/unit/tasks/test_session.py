"""The per-run session: the DOIT_CONFIG guard, and one session per run."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

import esp32tasks.tasks
from esp32tasks.errors import ConfigError
from esp32tasks.tasks import DOIT_CONFIG, doit_config
from esp32tasks.tasks.session import DOIT_KEYS, check_doit_config, open_session
from tests.support.repo import Repo


def dodo(**namespace: Any) -> types.ModuleType:
    module = types.ModuleType("dodo")
    module.__file__ = "/repo/dodo.py"
    module.task_release = esp32tasks.tasks.task_release  # type: ignore[attr-defined]  # the star import
    vars(module).update(namespace)
    return module


def test_the_star_import_alone_passes() -> None:
    check_doit_config([dodo(DOIT_CONFIG=esp32tasks.tasks.DOIT_CONFIG)])


def test_doit_config_keeps_ours_and_adds_yours() -> None:
    config = doit_config(verbosity=2, dep_file="elsewhere.sqlite3")
    assert config["verbosity"] == 2
    assert config["dep_file"] == "elsewhere.sqlite3"
    assert config["backend"] == "sqlite3-durable"
    check_doit_config([dodo(DOIT_CONFIG=config)])


def test_a_hand_written_doit_config_is_refused_naming_what_it_lost() -> None:
    with pytest.raises(ConfigError) as caught:
        check_doit_config([dodo(DOIT_CONFIG={"verbosity": 2, "backend": "sqlite3"})])
    assert str(caught.value) == (
        "dodo.py: DOIT_CONFIG lacks esp32tasks' default_tasks, dep_file, check_file_uptodate, "
        "reporter: doit would keep its state in the repository root and run every task by "
        "default; write `DOIT_CONFIG = doit_config(...)` (from esp32tasks.tasks import "
        "doit_config), which keeps them and adds yours")


def test_tasks_imported_without_doit_config_are_refused() -> None:
    with pytest.raises(ConfigError, match=", ".join(DOIT_KEYS)):
        check_doit_config([dodo()])


def test_modules_without_our_tasks_are_not_ours_to_judge() -> None:
    other = types.ModuleType("other")
    other.task_release = lambda: None  # type: ignore[attr-defined]
    other.DOIT_CONFIG = {}  # type: ignore[attr-defined]
    check_doit_config([other, esp32tasks.tasks, types.ModuleType("empty")])


# -- git's stat cache lives beside doit's state ------------------------------------------

def test_gits_cache_lives_beside_the_state_by_default_in_build(repo: Repo) -> None:
    open_session(repo.path, {}, {}, state=Path(DOIT_CONFIG["dep_file"]))
    assert (repo.path / "build" / "gitstate.json").is_file()


def test_with_the_state_elsewhere_a_no_op_writes_nothing_in_the_checkout(
        repo: Repo, tmp_path: Path) -> None:
    state = tmp_path / "ci-cache" / "doit-state.sqlite3"
    first = open_session(repo.path, {}, {}, state=state)
    assert (state.parent / "gitstate.json").is_file()
    assert not (repo.path / "build").exists()
    assert open_session(repo.path, {}, {}, state=state).plan.git == first.plan.git


def test_a_state_kept_in_the_checkout_is_neither_a_source_nor_a_change(repo: Repo) -> None:
    state = Path("examples/hello/.doit/state.sqlite3")  # not ignored, next to the sources
    for name in ("state.sqlite3", "state.sqlite3-journal", "state.sqlite3.lock"):
        repo.write(f"examples/hello/.doit/{name}", "")
    session = open_session(repo.path, {}, {}, state=state)
    assert not session.plan.git.dirty
    assert not any(".doit" in f for f in session.plan.git.files)
    assert "examples/hello/main/hello_main.c" in session.plan.git.files


def test_a_cache_the_disk_refuses_costs_a_git_call_not_the_run(repo: Repo) -> None:
    blocked = repo.path / "build"
    blocked.write_text("a file where the cache's directory belongs")
    session = open_session(repo.path, {}, {}, state=blocked / "doit-state.sqlite3")
    assert len(session.plan.git.revision) == 40
