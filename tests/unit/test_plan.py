"""The plan: tag names, per-target source sets and every published name."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esp32tasks.config import DEFAULT_STORE, MAX_TAG_LENGTH, TAG_SUFFIX_MAX, parse
from esp32tasks.errors import ConfigError
from esp32tasks.gitinfo import GitState
from esp32tasks.plan import (
    GIT_CACHE,
    OCI_DIR,
    RECEIPTS,
    RESERVED,
    STATE_FILE,
    Plan,
    expand,
    image_tag,
    index_tag,
)

GIT = GitState(revision="0123456789abcdef0123456789abcdef01234567", dirty=False,
               commit_time="2026-01-01T00:00:00Z",
               files=("app/main.c", "app/sdk.c6", "app/sdk.r8", "app/CMakeLists.txt"))

TAG_PART = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True)


@given(TAG_PART, TAG_PART, TAG_PART, st.booleans())
def test_tags_are_valid_oci_tags(target: str, app_type: str, version: str, dirty: bool) -> None:
    git = GitState(revision=GIT.revision, dirty=dirty, commit_time=GIT.commit_time, files=())
    tag = image_tag(target.lower(), app_type, version, git)
    assert tag.startswith(f"{target.lower()}-{app_type}-{version}-0123456")
    assert tag.endswith("-dirty") == dirty
    assert "--" not in tag.replace(f"{target.lower()}-{app_type}-{version}", "")
    assert len(tag) <= len(f"{target}-{app_type}-{version}") + TAG_SUFFIX_MAX <= MAX_TAG_LENGTH
    assert index_tag(app_type, version) == f"{app_type}-{version}"


PLAN_TOML = """\
[project]
name = "hello"
app_type = "ota"
version = "1.2.0"
app_dir = "app"

[builder]
kind = "command"
command = ["make"]

[[targets]]
name = "esp32c6"
files = ["sdk.c6"]

[[targets]]
name = "esp32s3r8"
sdkconfig_defaults = ["sdk.r8"]
"""


def test_plan_names_and_source_sets(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    for name in ("sdk.c6", "sdk.r8"):
        (tmp_path / "app" / name).write_text("x")
    plan = expand(parse(PLAN_TOML, tmp_path / "targets.toml"), GIT)
    c6, r8 = plan.steps
    assert c6.sources == ("app/CMakeLists.txt", "app/main.c", "app/sdk.c6")
    assert r8.sources == ("app/CMakeLists.txt", "app/main.c", "app/sdk.r8")
    assert c6.tag == "esp32c6-ota-1.2.0-0123456"
    assert r8.target.chip == "esp32s3"
    assert r8.build_dir == PurePosixPath("build/esp32s3r8")
    assert r8.store_prefix == "hello/ota-1.2.0/esp32s3r8/artifacts/"
    assert plan.variants[0].index_tag == "ota-1.2.0"
    assert plan.release_prefix == "hello/ota-1.2.0/"


def test_plan_per_target_file_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "app" / "sdk.c6").mkdir(parents=True)
    (tmp_path / "app" / "sdk.r8").write_text("x")
    with pytest.raises(ConfigError) as info:
        expand(parse(PLAN_TOML, tmp_path / "targets.toml"), GIT)
    assert str(info.value) == ("targets.toml: targets[0]: 'sdk.c6' is a directory in app; "
                               "list the files in it, one by one")


def test_plan_missing_per_target_file(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "sdk.r8").write_text("x")
    with pytest.raises(ConfigError) as info:
        expand(parse(PLAN_TOML, tmp_path / "targets.toml"), GIT)
    assert str(info.value) == ("targets.toml: targets[0]: file 'sdk.c6' does not exist in app; "
                               "create it or remove it from the list")


def test_a_dirty_tree_takes_no_release_name_and_moves_no_channel(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    for name in ("sdk.c6", "sdk.r8"):
        (tmp_path / "app" / name).write_text("x")
    text = PLAN_TOML.replace('version = "1.2.0"', 'version = "1.2.0"\nchannels = ["beta"]')
    clean = expand(parse(text, tmp_path / "targets.toml"), GIT)
    assert [(c.name, c.tag, c.pointer_key) for c in clean.channels] == [
        ("beta", "ota-beta", "hello/channels/ota-beta.json")]
    dirty = expand(parse(text, tmp_path / "targets.toml"),
                   GitState(revision=GIT.revision, dirty=True, commit_time=GIT.commit_time,
                            files=GIT.files))
    assert dirty.variants[0].index_tag == "ota-1.2.0-dirty"
    assert dirty.release_prefix == "hello/ota-1.2.0-dirty/"
    assert dirty.steps[0].tag == "esp32c6-ota-1.2.0-0123456-dirty"
    assert dirty.steps[0].store_prefix == "hello/ota-1.2.0-dirty/esp32c6/artifacts/"
    assert dirty.channels == ()


def test_a_snapshot_is_a_version_with_a_distance(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    for name in ("sdk.c6", "sdk.r8"):
        (tmp_path / "app" / name).write_text("x")
    for version, snapshot in (("1.2.0", False), ("1.2.0-rc.1", False),
                              ("1.2.0-3-gabc1234", True)):
        text = PLAN_TOML.replace('version = "1.2.0"', f'version = "{version}"')
        plan = expand(parse(text, tmp_path / "targets.toml"), GIT)
        assert (plan.variants[0].index_tag, plan.snapshot) == (f"ota-{version}", snapshot)


def test_a_composed_tag_over_128_characters_names_its_longest_part(tmp_path: Path) -> None:
    name = "esp32c3-" + "x" * 100
    text = PLAN_TOML + f'[[targets]]\nname = "{name}"\nchip = "esp32c3"\n'
    tag = f"{name}-ota-1.2.0-0123456-dirty"
    dirty = GitState(revision=GIT.revision, dirty=True, commit_time=GIT.commit_time,
                     files=GIT.files)
    (tmp_path / "app").mkdir()
    for file in ("sdk.c6", "sdk.r8"):
        (tmp_path / "app" / file).write_text("x")
    expand(parse(text, tmp_path / "targets.toml"), GIT)  # 128 when clean: fits
    with pytest.raises(ConfigError) as info:
        expand(parse(text, tmp_path / "targets.toml"), dirty)
    assert str(info.value) == (
        f"targets.toml: the tag '{tag}' is {len(tag)} characters, over the 128 OCI allows; its "
        f"longest part is the target name '{name}' (108): shorten it")


# -- build/ is ours: no target, store or app among our files (issue 9) ---------------------

def plan_error(tmp_path: Path, text: str) -> str:
    (tmp_path / "app").mkdir(exist_ok=True)
    for name in ("sdk.c6", "sdk.r8"):
        (tmp_path / "app" / name).write_text("x")
    with pytest.raises(ConfigError) as info:
        expand(parse(text, tmp_path / "targets.toml"), GIT)
    return str(info.value)


def test_reserved_names_are_what_lives_in_build() -> None:
    assert {"oci", "receipts", "delta", "store", "gitstate.json", "doit-state.sqlite3",
            "doit-state.sqlite3.lock", "doit-state.sqlite3-journal"} == RESERVED
    assert {RECEIPTS.name, OCI_DIR.name, GIT_CACHE.name, PurePosixPath(STATE_FILE).name,
            PurePosixPath(DEFAULT_STORE).name} <= RESERVED


@pytest.mark.parametrize("name", sorted(RESERVED))
def test_a_target_named_like_our_own_files(tmp_path: Path, name: str) -> None:
    text = PLAN_TOML + f'[[targets]]\nname = "{name}"\nchip = "esp32c3"\n'
    assert plan_error(tmp_path, text) == (
        f"targets.toml: targets[2].name: '{name}' is reserved (build/{name} is esp32tasks' "
        "own); give the target another name")


@pytest.mark.parametrize("url", ["build", "build/", "./build/receipts", "build/esp32c6",
                                 "build/oci/blobs", "build/store/x", "build/dist"])
def test_a_store_dir_among_our_own_outputs(tmp_path: Path, url: str) -> None:
    shown = url.removeprefix("./").rstrip("/")
    assert plan_error(tmp_path, PLAN_TOML + f'[store]\nurl = "{url}"\n') == (
        f"targets.toml: store.url: '{shown}' is in build/, which esp32tasks owns; use "
        '"build/store" (the default) or a directory outside build/ (e.g. "dist")')


@pytest.mark.parametrize("url", ["build/store", "./build/store/", "dist", "builds"])
def test_store_dirs_that_are_not_ours(tmp_path: Path, url: str) -> None:
    (tmp_path / "app").mkdir()
    for name in ("sdk.c6", "sdk.r8"):
        (tmp_path / "app" / name).write_text("x")
    plan = expand(parse(PLAN_TOML + f'[store]\nurl = "{url}"\n', tmp_path / "targets.toml"),
                  GIT)
    assert plan.release.store.url == url.removeprefix("./").rstrip("/")


def test_an_app_dir_in_build(tmp_path: Path) -> None:
    (tmp_path / "build" / "app").mkdir(parents=True)
    text = PLAN_TOML.replace('app_dir = "app"', 'app_dir = "build/app"').replace(
        'files = ["sdk.c6"]\n', "").replace('sdkconfig_defaults = ["sdk.r8"]\n', "")
    assert plan_error(tmp_path, text) == (
        "targets.toml: project.app_dir: 'build/app' is in build/, which esp32tasks owns (doit "
        "clean deletes there); move the app out of build/")


def test_a_listed_file_whose_name_is_too_long_for_the_file_system(tmp_path: Path) -> None:
    name = "x" * 300
    assert plan_error(tmp_path, PLAN_TOML.replace('"sdk.c6"', f'"{name}"')) == (
        f"targets.toml: targets[0]: file '{name}' does not exist in app; create it or remove "
        "it from the list")


def test_every_plan_problem_in_one_pass(tmp_path: Path) -> None:
    text = PLAN_TOML.replace('"sdk.c6"', '"missing"') + (
        '[[targets]]\nname = "oci"\nchip = "esp32c3"\n[store]\nurl = "build/oci"\n')
    assert plan_error(tmp_path, text).splitlines() == [
        "targets.toml: targets[0]: file 'missing' does not exist in app; create it or remove it "
        "from the list",
        "targets.toml: targets[2].name: 'oci' is reserved (build/oci is esp32tasks' own); give "
        "the target another name",
        "targets.toml: store.url: 'build/oci' is in build/, which esp32tasks owns; use "
        '"build/store" (the default) or a directory outside build/ (e.g. "dist")',
    ]


# -- sources that match the app (issue 10) --------------------------------------------------

def _plan_with(tmp_path: Path, text: str, files: tuple[str, ...]) -> Plan:
    (tmp_path / "app").mkdir(exist_ok=True)
    for name in ("sdk.c6", "sdk.r8"):
        (tmp_path / "app" / name).write_text("x")
    git = GitState(revision=GIT.revision, dirty=False, commit_time=GIT.commit_time, files=files)
    return expand(parse(text, tmp_path / "targets.toml"), git)


def test_exclude_leaves_gitignore_matches_out_of_every_source_set(tmp_path: Path) -> None:
    text = PLAN_TOML.replace('app_dir = "app"',
                             'app_dir = "app"\nexclude = [".venv/", "*.md", "!keep.md"]')
    plan = _plan_with(tmp_path, text, (
        "app/main.c", "app/README.md", "app/keep.md", "app/.venv/lib/x.py", "app/sdk.c6",
        "app/sdk.r8"))
    assert plan.steps[0].sources == ("app/keep.md", "app/main.c", "app/sdk.c6")


def test_with_idf_a_chips_sdkconfig_defaults_are_that_chips_alone(tmp_path: Path) -> None:
    text = PLAN_TOML.replace('kind = "command"\ncommand = ["make"]', 'kind = "idf"')
    plan = _plan_with(tmp_path, text, (
        "app/main.c", "app/sdkconfig.defaults", "app/sdkconfig.defaults.esp32c6",
        "app/sdkconfig.defaults.esp32s3", "app/sdk.r8.esp32s3", "app/sdk.c6", "app/sdk.r8"))
    c6, r8 = plan.steps
    assert c6.sources == ("app/main.c", "app/sdk.c6", "app/sdkconfig.defaults",
                          "app/sdkconfig.defaults.esp32c6")
    # esp32s3r8 lists sdk.r8 as its defaults: ESP-IDF then applies sdk.r8.esp32s3, and not
    # sdkconfig.defaults.esp32s3, which is nobody's here (esp32c6 applies only its own)
    assert r8.sources == ("app/main.c", "app/sdk.r8", "app/sdk.r8.esp32s3",
                          "app/sdkconfig.defaults")


def test_a_source_set_over_5000_files_is_warned_about_once(tmp_path: Path) -> None:
    files = tuple(f"app/.venv/lib/{i}.py" for i in range(4990)) + tuple(
        f"app/docs/{i}.md" for i in range(20)) + ("app/main.c", "app/sdk.c6", "app/sdk.r8")
    plan = _plan_with(tmp_path, PLAN_TOML, files)
    assert plan.warnings == (
        "targets.toml: every target depends on 5011 files in 'app' (most in .venv/ (4990), "
        "docs/ (20)); leave out what is no source with [project] exclude = [...] (gitignore "
        "patterns), or a narrower app_dir",)
    assert _plan_with(tmp_path, PLAN_TOML, files[4000:]).warnings == ()
