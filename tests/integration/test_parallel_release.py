"""``doit -n N release`` on one machine: the same digests at any N, and successive parallel
releases with random edits rebuild exactly what changed (no lock error, nothing missed)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from esp32tasks.receipts import ImageReceipt, IndexReceipt
from tests.support.repo import TARGETS, Repo, Run, receipt

pytestmark = pytest.mark.integration

TROUBLE = ("Traceback", "locked", "database is locked", "error:")


def digests(repo: Repo) -> dict[str, str]:
    found = {t: receipt(repo, f"image-{t}", ImageReceipt).manifest.digest for t in TARGETS}
    found["index"] = receipt(repo, "index", IndexReceipt).index.digest
    return found


def builds(run: Run) -> set[str]:
    return {name.removeprefix("build:") for name in run.executed if name.startswith("build:")}


def clean(run: Run) -> None:
    for word in TROUBLE:
        assert word not in run.output, run.output


def test_any_number_of_processes_gives_the_same_digests(repo: Repo, tmp_path: Path) -> None:
    found = {}
    for jobs in (1, 2, 4):
        clone = repo.clone(tmp_path / f"n{jobs}" / "firmware")
        start = time.perf_counter()
        run = clone.doit("-n", str(jobs), "release")
        print(f"doit -n {jobs} release, cold: {time.perf_counter() - start:.2f} s")  # -rP
        clean(run)
        assert builds(run) == set(TARGETS)
        found[jobs] = digests(clone)
    assert found[2] == found[1]
    assert found[4] == found[1]


@pytest.mark.parametrize("rounds", [
    pytest.param(5, id="5-rounds"),
    pytest.param(20, id="20-rounds", marks=pytest.mark.slow),
])
def test_successive_parallel_releases_rebuild_exactly_what_changed(
        repo: Repo, tmp_path: Path, rounds: int) -> None:
    rng = random.Random(1302 + rounds)  # noqa: S311  # a replayable draw, no secret
    first = repo.doit("-n", "2", "release")
    clean(first)
    assert builds(first) == set(TARGETS)
    for i in range(rounds):
        kind = rng.choice(["shared", "own", "none"])
        if kind == "shared":  # every target's source
            repo.write("examples/hello/main/hello_main.c",
                       repo.read("examples/hello/main/hello_main.c") + f"/* round {i} */\n")
            expected = set(TARGETS)
        elif kind == "own":  # esp32c6's own file
            repo.write("examples/hello/sdkconfig.defaults.esp32c6",
                       f'CONFIG_HELLO_GREETING="Hello from the C6, round {i}"\n')
            expected = {"esp32c6"}
        else:
            expected = set()
        repo.commit(f"round {i}: {kind}")
        run = repo.doit("-n", "2", "release")
        clean(run)
        assert builds(run) == expected, f"round {i} ({kind}):\n{run.output}"
    assert repo.doit("-n", "1", "release").executed == []
    fresh = repo.clone(tmp_path / "fresh" / "firmware")
    fresh.doit("release")
    assert digests(repo) == digests(fresh)
