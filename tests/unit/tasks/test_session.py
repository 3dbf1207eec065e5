"""The per-run session: the DOIT_CONFIG guard, and one session per run."""

from __future__ import annotations

import types
from typing import Any

import pytest

import esp32tasks.tasks
from esp32tasks.errors import ConfigError
from esp32tasks.tasks import doit_config
from esp32tasks.tasks.session import DOIT_KEYS, check_doit_config


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
