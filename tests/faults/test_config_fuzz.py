"""targets.toml that cannot hurt: whatever the file and the overrides hold, config.load and
plan.expand give a plan that writes only where it should, or one ConfigError of one-line
problems; never another exception, never a traceback (issue 9, item 5).

Texts come fully random (TOML-ish characters, random tables) and as mutations of the bundled
targets.toml (values swapped for hostile ones: `../`, absolute paths, links out of the
repository, NUL, shell metacharacters, placeholders, huge strings, a BOM). The number of
examples comes from the profile in tests/conftest.py.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esp32tasks.config import DEFAULT_STORE, load
from esp32tasks.errors import ConfigError
from esp32tasks.gitinfo import GitState
from esp32tasks.plan import BUILD_DIR, GIT_CACHE, RESERVED, STATE_FILE, Plan, expand
from tests.support.repo import ROOT

EXAMPLE = (ROOT / "targets.toml").read_text()
APP = "examples/hello"
GIT = GitState(revision="0123456789abcdef0123456789abcdef01234567", dirty=False,
               commit_time="2026-01-01T00:00:00Z",
               files=(f"{APP}/main/main.c", f"{APP}/sdkconfig.defaults",
                      f"{APP}/sdkconfig.defaults.esp32c6", f"{APP}/tools/build.py"))
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large,
                                                      HealthCheck.large_base_example])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository-shaped directory (no git: plans get ``GIT``) with traps in it."""
    top = tmp_path_factory.mktemp("fuzz")
    for name in GIT.files:
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_text("x")
    (top / "dist").mkdir()
    (top / ".git").mkdir()
    (top / "escape").symlink_to("/etc")                 # a directory link out of the repo
    (top / APP / "passwd").symlink_to("/etc/passwd")    # a file link out of the repo
    (top / "linked").symlink_to(APP)                    # a link inside the repo
    (top / "loop").symlink_to("loop")
    return top


# -- what goes in ------------------------------------------------------------------------

KEYS = ("project", "builder", "targets", "registry", "store", "name", "app_type", "version",
        "app_dir", "source", "kind", "command", "env", "sdkconfig_defaults", "toolchain",
        "pass_env", "chip", "files", "repository", "insecure", "ca_bundle", "timeout",
        "allow_dirty", "force", "url", "endpoint_url", "region", "create_bucket")
HOSTILE = (
    "", ".", "./", "..", "../x", "../../etc/passwd", "/", "/etc", "/etc/passwd", "~/x",
    "escape", "escape/passwd", "linked", "linked/main", "loop", "loop/x", "passwd", "dist",
    "./dist/", "dist/..", "dist//x", "build", "build/", "build/store", "./build/store/",
    "build/receipts", "build/oci", "build/esp32c3", "build/doit-state.sqlite3", ".git",
    ".git/x", APP, "examples", "main", "sdkconfig.defaults.esp32c6", "a\0b", "\0", "a\nb",
    "\r\n", "\u2028", "\x85", "\ufeff", "\u202e", "\x1b[31m", "$(rm -rf /)", "; rm -rf ~",
    "`id`", "| cat /etc/passwd", "&& echo", "'", '"', "\\", "C:\\Windows", "%s%n", "*", "?",
    "{target}", "{chip}", "{build_dir}", "{version}", "{target.__class__}", "{target[0]}",
    "{target!r}", "{target:>10}", "{build_dir.__init__.__globals__}", "{{", "}}", "{", "}",
    "{}", "{0}", "{{target}}", "esp32c3", "esp32s3r8", "esp32", "receipts", "oci", "store",
    "gitstate.json", "doit-state.sqlite3.lock", "idf", "command", "s3://bucket/x",
    "s3://ab", "s3://", "s3://firmware-bucket/../..", "gs://b/x", "file:///etc",
    "http://127.0.0.1:1", "127.0.0.1:999999/x", "127.0.0.1:0/x", "a..b/x", "[::1]:5000/x",
    "[::g]/x", "localhost/x", "registry.test:5000/cloud-iot/hello", "Harbor/Cloud",
    "1.0.0", "1" * 40, "x" * 300, "x/" * 3000, "é" * 200, "\U0001f4a9",
)
HUGE = st.builds(lambda piece, count: piece * count,
                 st.sampled_from(["x", "../", "{target}", "é", "a\0", "\n"]),
                 st.integers(1_000, 20_000))
STRINGS = st.sampled_from(HOSTILE) | st.text(max_size=40) | HUGE
SCALARS = (STRINGS | st.integers() | st.floats() | st.booleans()
           | st.dates(min_value=date(1, 1, 1)))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), inner,
                                        max_size=4), max_leaves=12)


def toml_string(text: str) -> str:
    escaped = []
    for ch in text:
        if ch in '"\\':
            escaped.append("\\" + ch)
        elif unicodedata.category(ch) == "Cc":
            escaped.append(f"\\u{ord(ch):04x}")
        else:
            escaped.append(ch)
    return '"' + "".join(escaped) + '"'


def toml_value(value: Any) -> str:
    match value:
        case bool():
            text = "true" if value else "false"
        case int() | float():  # repr of nan and inf is TOML's spelling too
            text = repr(value)
        case str():
            text = toml_string(value)
        case date():
            text = value.isoformat()
        case list():
            text = "[" + ", ".join(toml_value(item) for item in value) + "]"
        case _:
            text = "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}"
                                   for k, v in value.items()) + "}"
    return text


def toml_document(data: Mapping[str, Any]) -> str:
    """Every table inline: the shortest TOML writer that can say anything tomllib reads."""
    return "".join(f"{toml_string(key)} = {toml_value(value)}\n" for key, value in data.items())


def places(data: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of the nested dicts and lists in ``data``."""
    found: list[tuple[Any, Any]] = []
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        found.append((data, key))
        if isinstance(value, dict | list):
            found.extend(places(value))
    return found


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    """The bundled targets.toml with a few values set, added or removed, written back."""
    data = copy.deepcopy(tomllib.loads(EXAMPLE))
    for _ in range(draw(st.integers(1, 4))):
        spots = places(data)
        container, key = draw(st.sampled_from(spots)) if spots else (data, "project")
        action = draw(st.sampled_from(["set", "set", "delete", "add"]))
        if action == "delete":
            del container[key]
        elif action == "add" and isinstance(container, dict):
            container[draw(st.sampled_from(KEYS) | st.text(max_size=10))] = draw(VALUES)
        else:
            container[key] = draw(STRINGS | VALUES)
    return toml_document(data)


STRING_LITERAL = re.compile(r'"[^"\n]*"')


@st.composite
def edited_example(draw: st.DrawFn) -> str:
    """The bundled targets.toml as text, with strings replaced and bytes inserted or cut."""
    text = EXAMPLE
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["string", "string", "insert", "cut"]))
        literals = list(STRING_LITERAL.finditer(text))
        if action == "string" and literals:
            found = draw(st.sampled_from(literals))
            text = text[:found.start()] + toml_string(draw(STRINGS)) + text[found.end():]
        elif action == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(STRINGS | st.sampled_from(
                ["\n[store]\nurl = ", "\n[registry]\nrepository = ", "\n[[targets]]\nname = ",
                 "[", "]", "=", '"', "\n", "#"])) + text[at:]
        else:
            start = draw(st.integers(0, len(text)))
            text = text[:start] + text[start + draw(st.integers(1, 40)):]
    return text


TOMLISH = st.text(st.sampled_from([*'[]{}="\'.,:-_\n\t #\\abcfilnrstu0123{}', "\ufeff"])
                  | st.characters(), max_size=300)
RANDOM_TABLES = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), VALUES,
                                max_size=6).map(toml_document)
ENVIRON = st.fixed_dictionaries({"HOME": st.just("/home/u")}, optional={
    "ESP32TASKS_REGISTRY": STRINGS, "ESP32TASKS_FORCE": STRINGS,
    "ESP32TASKS_ALLOW_DIRTY": STRINGS, "ESP32TASKS_REGISTRY_USER": STRINGS,
    "ESP32TASKS_REGISTRY_PASSWORD": STRINGS, "ESP32TASKS_REGISTRY_INSECURE": STRINGS})
CLI = st.fixed_dictionaries({}, optional={"registry": st.none() | STRINGS})
BOM = st.sampled_from(["", "", "\ufeff", "\ufeff\ufeff"])


# -- what must come out ------------------------------------------------------------------

_UNPRINTABLE = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def outcome(root: Path, text: str, environ: dict[str, str],
            cli: dict[str, str | None]) -> Plan | None:
    """The plan, or None after checking that the one error is a list of one-line problems."""
    path = root / "targets.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))  # a lone surrogate: not UTF-8
    # the environment cannot hold NUL: os.environ refuses it before we would see it
    environ = {k: v for k, v in environ.items() if "\0" not in v}
    try:
        return expand(load(path, environ, cli), GIT)
    except ConfigError as exc:  # anything else fails the test, with its traceback
        error = exc
    assert type(error) is ConfigError
    assert error.problems
    assert str(error) == "\n".join(error.problems)
    for problem in error.problems:
        assert problem.splitlines() == [problem]
        assert not {unicodedata.category(ch) for ch in problem} & _UNPRINTABLE
        assert problem.startswith((f"{path}: ", "targets.toml", "ESP32TASKS_", "registry="))
    return None


def assert_writes_stay_inside(root: Path, plan: Plan) -> None:
    """Everything the plan writes is in build/ (our files, no two the same) or in the store
    directory, which is inside the repository, outside .git and not among our files."""
    def where(relative: object) -> Path:
        return Path(os.path.normpath(root / str(relative)))

    build = where(BUILD_DIR)
    ours = [plan.oci_dir, GIT_CACHE, STATE_FILE,
            *(r for v in plan.variants for r in (v.index_receipt, v.push_index_receipt))]
    for step in plan.steps:
        ours += [step.build_dir, step.log, step.build_receipt, step.app_receipt,
                 step.image_receipt, step.upload_receipt, step.push_receipt]
        assert where(step.build_dir).parent == build
        assert step.name not in RESERVED
    assert all(where(p).is_relative_to(build) and where(p) != build for p in ours)
    assert len({where(p) for p in ours}) == len(ours)
    assert root.resolve() / plan.release.project.app_dir == (
        root / plan.release.project.app_dir).resolve()
    assert not where(plan.release.project.app_dir).is_relative_to(build)
    store = plan.release.store
    if store.is_s3:
        return
    directory = where(store.url)
    assert directory.is_relative_to(root)
    assert directory != root
    assert (root / store.url).resolve() == root.resolve() / store.url  # no link on the way
    assert ".git" not in directory.relative_to(root).parts
    assert directory == where(DEFAULT_STORE) or not directory.is_relative_to(build)
    assert not where(plan.release.project.app_dir).is_relative_to(directory)
    for prefix in (plan.release_prefix, *(step.store_prefix for step in plan.steps)):
        assert where(f"{store.url}/{prefix}").is_relative_to(directory)


def check(root: Path, text: str, environ: dict[str, str], cli: dict[str, str | None]) -> None:
    plan = outcome(root, text, environ, cli)
    if plan is not None:
        assert_writes_stay_inside(root, plan)


# -- the properties ----------------------------------------------------------------------

def test_the_bundled_example_loads(root: Path) -> None:
    plan = outcome(root, EXAMPLE, {"HOME": "/home/u"}, {})
    assert plan is not None
    assert_writes_stay_inside(root, plan)


@FUZZ
@given(text=TOMLISH | RANDOM_TABLES, bom=BOM, environ=ENVIRON, cli=CLI)
def test_random_files(root: Path, text: str, bom: str, environ: dict[str, str],
                      cli: dict[str, str | None]) -> None:
    check(root, bom + text, environ, cli)


@FUZZ
@given(text=mutated_example(), bom=BOM, environ=ENVIRON, cli=CLI)
def test_mutated_example(root: Path, text: str, bom: str, environ: dict[str, str],
                         cli: dict[str, str | None]) -> None:
    check(root, bom + text, environ, cli)


@FUZZ
@given(text=edited_example(), bom=BOM, environ=ENVIRON, cli=CLI)
def test_edited_example(root: Path, text: str, bom: str, environ: dict[str, str],
                        cli: dict[str, str | None]) -> None:
    check(root, bom + text, environ, cli)


HOSTILE_FIELDS = st.fixed_dictionaries({
    "url": STRINGS, "app_dir": STRINGS | st.just(APP), "files": st.lists(STRINGS, max_size=3),
    "repository": STRINGS, "arg": STRINGS, "name": STRINGS | st.just("esp32c3")})


@FUZZ
@given(fields=HOSTILE_FIELDS)
def test_hostile_values_in_every_path_field(root: Path, fields: dict[str, Any]) -> None:
    """The example with each field that names a path, a program or a host set at once."""
    data = copy.deepcopy(tomllib.loads(EXAMPLE))
    data["project"]["app_dir"] = fields["app_dir"]
    data["builder"]["command"].append(fields["arg"])
    data["targets"][1]["files"] = fields["files"]
    data["targets"].append({"name": fields["name"], "chip": "esp32c3",
                            "sdkconfig_defaults": fields["files"]})
    data["store"] = {"url": fields["url"]}
    data["registry"] = {"repository": fields["repository"]}
    check(root, toml_document(data), {"HOME": "/home/u"}, {})
