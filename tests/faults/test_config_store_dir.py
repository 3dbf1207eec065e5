"""A local store written `./dist` is our own output, in a real repository (issue 9).

Before, `url = "./dist"` reached git's ignore list as written, matched no path git prints,
and the first release's uploads made the second one `-dirty`.
"""

from __future__ import annotations

import pytest

from esp32tasks.receipts import ImageReceipt
from tests.support.repo import TARGETS, Repo, receipt

pytestmark = pytest.mark.integration


def test_a_store_dir_spelled_dot_slash_never_makes_the_tree_dirty(repo: Repo) -> None:
    repo.write("targets.toml", repo.read("targets.toml") + '\n[store]\nurl = "./dist/"\n')
    repo.commit("the store in dist/")
    sha7 = repo.git("rev-parse", "--short=7", "HEAD")

    repo.doit("release")
    assert (repo.path / "dist/hello/hello-1.0.0/release.json").is_file()
    again = repo.doit("release")

    assert again.executed == []
    assert {receipt(repo, f"image-{t}", ImageReceipt).tag for t in TARGETS} == {
        f"{t}-hello-1.0.0-{sha7}" for t in TARGETS}
