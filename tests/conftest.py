"""Shared fixtures: a real git repository holding the bundled example, and doit runs in it.

Server fixtures (registry, S3) live in tests/servers/ and are registered below; helpers
shared by test modules live in tests/support/ (no test module imports another).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from esp32tasks import runcache
from tests.support.repo import ROOT, Repo, copy_example

# Property tests: a bounded number of examples in CI (CI=true), hypothesis' default
# elsewhere, many with HYPOTHESIS_PROFILE=thorough.
settings.register_profile("ci", max_examples=50, deadline=None)
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else
                                     "default"))

pytest_plugins = [
    f"tests.servers.{p.stem}" for p in sorted((ROOT / "tests" / "servers").glob("[a-z]*.py"))
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run tests marked slow, and the long variants (e.g. 50 kill "
                          "trials instead of 12)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: runs only with --slow (the long variants)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="a long variant: run with --slow")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_run_caches() -> Iterator[None]:
    """Each test is its own doit run: no client, store or check outlives it."""
    runcache.reset()
    yield
    runcache.reset()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """A fresh git repository with the bundled example committed, as a user would have."""
    path = tmp_path / "firmware"
    path.mkdir()
    (tmp_path / "home").mkdir()
    copy_example(path)
    r = Repo(path)
    r.git("init", "-q", "-b", "main")
    r.commit("example firmware")
    return r
