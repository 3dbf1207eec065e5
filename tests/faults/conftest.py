"""The fault suite's own fixture: the example committed and built once per session.

Every fault test releases a copy (`built`): its publishing is what the faults hit, and the
compile it would repeat costs seconds a test. A copy rebuilds nothing (the doit state is
relative and portable); configuring a server commits targets.toml, so the copy re-tags.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.repo import Repo, copy_example


@pytest.fixture(scope="session")
def built_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults-template")
    path = root / "firmware"
    path.mkdir()
    (root / "home").mkdir()
    copy_example(path)
    template = Repo(path)
    template.git("init", "-q", "-b", "main")
    template.commit("example firmware")
    template.doit("build")
    return path


@pytest.fixture
def built(tmp_path: Path, built_template: Path) -> Repo:
    """Like ``repo`` (a fresh git repository of the example), its targets already built."""
    path = tmp_path / "firmware"
    shutil.copytree(built_template, path, symlinks=True)
    (tmp_path / "home").mkdir()
    return Repo(path)
