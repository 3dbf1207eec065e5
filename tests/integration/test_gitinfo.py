"""gitinfo against real git repositories: sources, dirtiness, and the stat-keyed cache."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from esp32tasks import gitinfo
from esp32tasks.errors import GitError
from tests.support.repo import GIT_ENV

pytestmark = pytest.mark.integration


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True,
                   env={**os.environ, **GIT_ENV})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "app" / "main").mkdir(parents=True)
    (tmp_path / "app" / "main" / "main.c").write_text("int main;\n")
    (tmp_path / "README.md").write_text("readme\n")
    (tmp_path / ".gitignore").write_text("/build/\n*.o\n/vendor/\n")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "init")
    return tmp_path


def read(root: Path, monkeypatch: pytest.MonkeyPatch | None = None,
         expect_git: bool = True, *, describe: bool = False) -> gitinfo.GitState:
    calls: list[int] = []
    real = gitinfo._ask_git

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    if monkeypatch is not None:
        monkeypatch.setattr(gitinfo, "_ask_git", counting)
    state = gitinfo.read(root, PurePosixPath("app"), ["build"], cache=root / "build/git.json",
                         describe=describe)
    if monkeypatch is not None:
        assert bool(calls) == expect_git, "git asked" if calls else "cache answered"
        monkeypatch.undo()
    return state


def test_sources_and_clean_state(root: Path) -> None:
    state = read(root)
    assert state.files == ("app/main/main.c",)
    assert not state.dirty
    assert len(state.revision) == 40
    assert state.commit_time == "2026-01-01T00:00:00Z"


def test_cache_answers_until_something_changes(root: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    first = read(root)
    assert read(root, monkeypatch, expect_git=False) == first
    # output in ignored directories does not invalidate it
    (root / "build" / "out.o").write_text("x")
    (root / "vendor").mkdir()
    assert read(root, monkeypatch).files == first.files  # vendor/ is new in the root dir...
    (root / "vendor" / "lib.o").write_text("x")
    assert read(root, monkeypatch, expect_git=False) == first  # ...but is not watched
    # an ignored file in a source directory changes the directory: asked again, same answer
    (root / "app" / "main" / "main.o").write_text("x")
    assert read(root, monkeypatch) == first
    # an edit to a tracked file outside the app dir makes the tree dirty
    (root / "README.md").write_text("changed\n")
    assert read(root, monkeypatch).dirty
    git(root, "commit", "-q", "-am", "readme")
    state = read(root, monkeypatch)
    assert not state.dirty
    assert state.revision != first.revision


def test_bytecode_is_neither_source_nor_dirt(root: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """doit imports dodo.py, which writes __pycache__/ even where .gitignore forgot it."""
    first = read(root)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "dodo.cpython-311.pyc").write_bytes(b"pyc")
    (root / "app" / "__pycache__").mkdir()
    (root / "app" / "__pycache__" / "x.pyc").write_bytes(b"pyc")
    assert read(root, monkeypatch) == first  # the new directories invalidate, once
    (root / "__pycache__" / "dodo.cpython-311.pyc").write_bytes(b"newer pyc")
    assert read(root, monkeypatch, expect_git=False) == first


def test_new_untracked_file_in_new_directory_is_seen(root: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    read(root)
    (root / "app" / "lib").mkdir()
    state = read(root, monkeypatch)  # the directory alone changes nothing but invalidates
    assert state.files == ("app/main/main.c",)
    (root / "app" / "lib" / "util.c").write_text("int util;\n")
    state = read(root, monkeypatch)
    assert state.files == ("app/lib/util.c", "app/main/main.c")
    assert state.dirty


def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="is not in a git repository"):
        gitinfo.read(tmp_path, PurePosixPath("."), [])


def test_no_commit_yet(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    with pytest.raises(GitError, match="has no commit yet"):
        gitinfo.read(tmp_path, PurePosixPath("."), [])


def test_describe_counts_from_the_last_v_tag_and_a_new_tag_is_seen(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert read(root, describe=True).described is None  # no tag yet
    git(root, "tag", "v1.0.1")
    git(root, "tag", "nightly")  # not v[0-9]*: never counted from
    state = read(root, monkeypatch, describe=True)
    assert state.described == f"v1.0.1-0-g{state.short}"
    for n in range(3):
        (root / "app" / f"more{n}.c").write_text("x")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", f"more {n}")
    state = read(root, monkeypatch, describe=True)
    assert state.described == f"v1.0.1-3-g{state.short}"
    assert read(root, monkeypatch, expect_git=False, describe=True) == state  # cached
    git(root, "tag", "-a", "-m", "1.0.2", "v1.0.2")  # an annotated tag, made since
    state = read(root, monkeypatch, describe=True)
    assert state.described == f"v1.0.2-0-g{state.short}"
