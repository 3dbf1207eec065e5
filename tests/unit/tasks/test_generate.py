"""Every task dict the doit face makes: wrapped, picklable, named actions; honest uptodate."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from doit.exceptions import TaskFailed
from doit.tools import config_changed

import esp32tasks.tasks
from esp32tasks import receiptfile
from esp32tasks.config import parse
from esp32tasks.errors import ConfigError, Esp32TasksError
from esp32tasks.gitinfo import GitState
from esp32tasks.plan import expand
from esp32tasks.tasks import generate
from esp32tasks.tasks.boundary import Action
from esp32tasks.tasks.session import Session

REV = "0123456789abcdef0123456789abcdef01234567"
TOML = """
[project]
name = "hello"
app_type = "hello"
version = "1.0.0"

[builder]
kind = "command"
command = ["make", "{build_dir}"]

[[targets]]
name = "esp32c3"

[[targets]]
name = "esp32s3r8"
"""
REGISTRY = '\n[registry]\nrepository = "registry.test:5000/cloud-iot/hello"\n'
S3 = '\n[store]\nurl = "s3://bucket/prefix"\nendpoint_url = "http://127.0.0.1:1"\n'


def session(root: Path, extra: str = "") -> Session:
    release = parse(TOML + extra, root / "targets.toml")
    git = GitState(revision=REV, dirty=False, commit_time="2026-01-01T00:00:00Z",
                   files=("main.c",))
    return Session(plan=expand(release, git), toolchain=("/usr/bin/cc",))


def all_tasks(monkeypatch: pytest.MonkeyPatch, s: Session) -> list[dict[str, Any]]:
    """What doit gets from every task_* function the star import hands it."""
    monkeypatch.setattr(esp32tasks.tasks, "current", lambda: s)
    tasks: list[dict[str, Any]] = []
    for name in esp32tasks.tasks.__all__:
        if not name.startswith("task_"):
            continue
        made = getattr(esp32tasks.tasks, name)()
        tasks.extend(made if isinstance(made, Iterator) else [made])
    return tasks


def actions_of(task: dict[str, Any]) -> list[Any]:
    return [*(task.get("actions") or []), *(task.get("clean") or [])]


@pytest.mark.parametrize("extra", ["", REGISTRY, REGISTRY + S3])
def test_every_action_is_a_wrapped_plain_function(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, extra: str) -> None:
    tasks = all_tasks(monkeypatch, session(tmp_path, extra))
    wrapped = [a for t in tasks for a in actions_of(t)]
    assert len(wrapped) > 10
    for task in tasks:
        for action in actions_of(task):
            assert isinstance(action, Action), (task.get("name"), action)
            # module-level functions: importable by name, so picklable for `doit -n N`
            assert "<locals>" not in action.function.__qualname__
            copy = pickle.loads(pickle.dumps(action))  # noqa: S301  # our own bytes
            assert copy.name == action.name
        assert task.get("meta", {}).get("actions", []) == \
            [a.name for a in task.get("actions") or []]


def test_uptodate_holds_one_config_changed_and_a_receipt_check(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tasks = all_tasks(monkeypatch, session(tmp_path, REGISTRY))
    made = [t for t in tasks if t.get("targets")]
    kinds = set(receiptfile.SCHEMAS)
    assert {f"{t.get('basename', '')}:{t.get('name', '')}" for t in made} >= {
        "build:esp32c3", "tag:esp32c3", "upload:esp32c3", "push:esp32c3", "push-index:"}
    for task in made:
        checks = task["uptodate"]
        # doit re-runs a task forever when it has two config_changed
        assert sum(isinstance(c, config_changed) for c in checks) == 1, task
        receipts = [c for c in checks if isinstance(c, generate.ReceiptsCurrent)]
        if task["targets"] == ["build/receipts/release.json"]:
            assert receipts == []  # the published bytes, not a typed receipt
            continue
        assert len(receipts) == 1, task
        listed = {p.as_posix() for p, _ in receipts[0].receipts}
        assert listed <= set(task["targets"])
        assert {kind for _, kind in receipts[0].receipts} <= kinds


def test_doit_names_the_function_and_what_it_acts_on(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tasks = all_tasks(monkeypatch, session(tmp_path))
    build = next(t for t in tasks if t.get("basename") == "build" and t.get("name") == "esp32c3")
    (action,) = build["actions"]
    assert action.name == "esp32tasks.build.action.build(esp32c3)"
    # doit prints str(callable)[1:] up to " at " (doit.action.PythonAction.__str__)
    assert str(action)[1:].split(" at ")[0] == "esp32tasks.build.action.build(esp32c3)"
    clean_names = [a.name for a in build["clean"]]
    assert clean_names[0].startswith("esp32tasks.tasks.generate.rmtree(")
    assert clean_names[0].endswith("build/esp32c3)")


def test_receipts_current_reads_the_frame(tmp_path: Path) -> None:
    receipt = tmp_path / "r.json"
    check = generate.ReceiptsCurrent(tmp_path, (Path("r.json"), "image"))  # type: ignore[arg-type]
    assert not check()
    receipt.write_text('{"kind": "image", "schema": 1}')
    assert check()
    receipt.write_text('{"kind": "image", "schema": 0}')
    assert not check()
    receipt.write_text("{truncated")
    assert not check()
    assert "r.json" in str(check)


def _raises_ours() -> None:
    raise ConfigError(["targets.toml: project.name: missing; add `name = ...`"])


def _raises_other() -> None:
    raise KeyError("a bug")


def test_the_boundary_turns_our_errors_into_one_failure_and_lets_bugs_through() -> None:
    failed = Action(_raises_ours)()
    assert isinstance(failed, TaskFailed)
    assert failed.message == "targets.toml: project.name: missing; add `name = ...`"
    with pytest.raises(KeyError):
        Action(_raises_other)()
    assert Action(print)() is None


def test_domain_errors_are_esp32tasks_errors() -> None:
    assert issubclass(ConfigError, Esp32TasksError)
