"""`doit release` end to end: real compiler, real git, the bundled example in a temp repo."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esp32tasks.receipts import AppReceipt, ImageReceipt, IndexReceipt
from tests.support.repo import TARGETS, Repo, receipt

pytestmark = pytest.mark.integration

APP = "examples/hello"


def manifest_digests(repo: Repo) -> dict[str, str]:
    return {t: receipt(repo, f"image-{t}", ImageReceipt).manifest.digest for t in TARGETS}


def blob_stats(repo: Repo) -> dict[str, int]:
    blobs = repo.path / "build/oci/blobs/sha256"
    return {p.name: p.stat().st_mtime_ns for p in blobs.iterdir()}


def layout_refs(repo: Repo) -> dict[str, str]:
    index = json.loads(repo.read("build/oci/index.json"))
    return {d["annotations"]["org.opencontainers.image.ref.name"]: d["digest"]
            for d in index["manifests"]}


def test_cold_release_then_noop(repo: Repo) -> None:
    cold = repo.doit("release")
    assert sorted(cold.executed) == sorted(
        [f"{kind}:{t}" for kind in ("build", "tag", "upload") for t in TARGETS]
        + ["index", "manifest"])
    noop = repo.doit("release")
    assert noop.executed == []
    # `doit` with no arguments is the release, too
    assert repo.doit().executed == []

    sha7 = repo.git("rev-parse", "--short=7", "HEAD")
    refs = layout_refs(repo)
    assert set(refs) == {f"{t}-hello-1.0.0-{sha7}" for t in TARGETS} | {"hello-1.0.0"}
    index = json.loads((repo.path / "build/oci/blobs/sha256" /
                        refs["hello-1.0.0"].split(":")[1]).read_text())
    assert [(m["platform"], m["digest"]) for m in index["manifests"]] == [
        ({"architecture": t, "os": "custom"}, refs[f"{t}-hello-1.0.0-{sha7}"]) for t in TARGETS]
    assert index["annotations"]["org.opencontainers.image.revision"] == repo.git("rev-parse",
                                                                                  "HEAD")
    for target in TARGETS:
        artifacts = repo.path / f"build/store/hello/hello-1.0.0/{target}/artifacts"
        assert sorted(p.name for p in artifacts.iterdir()) == sorted([
            "hello.bin", "bootloader.bin", "partition-table.bin", "ota_data_initial.bin",
            "sdkconfig", "partitions.csv", "flasher_args.json", "hello.elf", "hello.map",
            "hello-factory.bin"])
        assert (artifacts / "hello.bin").read_bytes() == \
            (repo.path / f"build/{target}/hello.bin").read_bytes()


def test_touch_without_change_rebuilds_nothing(repo: Repo) -> None:
    repo.doit("release")
    for path in (repo.path / APP).rglob("*"):
        if path.is_file():
            os.utime(path, (time.time() + 5, time.time() + 5))
    assert repo.doit("release").executed == []


def test_change_to_one_targets_file_rebuilds_only_that_target(repo: Repo) -> None:
    repo.doit("release")
    before = manifest_digests(repo)
    repo.edit(f"{APP}/sdkconfig.defaults.esp32c6", '"Hello from', '"Hello again from')
    repo.commit("esp32c6 greets differently")
    run = repo.doit("release")
    builds = [t for t in run.executed if t.startswith("build:")]
    assert builds == ["build:esp32c6"]
    after = manifest_digests(repo)
    assert after["esp32c6"] != before["esp32c6"]
    assert {t: after[t] for t in ("esp32c3", "esp32h2")} == \
        {t: before[t] for t in ("esp32c3", "esp32h2")}
    # the new commit re-tags every target under its own short SHA
    sha7 = repo.git("rev-parse", "--short=7", "HEAD")
    assert {receipt(repo, f"image-{t}", ImageReceipt).tag for t in TARGETS} == \
        {f"{t}-hello-1.0.0-{sha7}" for t in TARGETS}
    assert "upload:esp32c3" not in run.executed


def test_byte_identical_rebuild_repacks_nothing(repo: Repo) -> None:
    repo.doit("release")
    digests, blobs = manifest_digests(repo), blob_stats(repo)
    main_c = next((repo.path / APP / "main").glob("*main*.c"))
    main_c.write_text(main_c.read_text() + "\n/* a comment changes no byte of the app */\n")
    repo.commit("comment")
    run = repo.doit("release")
    assert sorted(t for t in run.executed if t.startswith("build:")) == \
        [f"build:{t}" for t in TARGETS]
    assert "upload:esp32c3" not in run.executed  # same artifacts: nothing to copy
    assert manifest_digests(repo) == digests
    # re-tagged under the new commit, but no blob was written again
    after = blob_stats(repo)
    assert {k: after[k] for k in blobs} == blobs
    new_index = receipt(repo, "index", IndexReceipt).index.digest
    assert set(after) - set(blobs) == {new_index.split(":")[1]}


def test_version_change_rebuilds_and_retags(repo: Repo) -> None:
    repo.doit("release")
    repo.edit("targets.toml", 'version = "1.0.0"', 'version = "1.1.0"')
    repo.commit("1.1.0")
    run = repo.doit("release")
    assert sorted(run.executed) == sorted(
        [f"{kind}:{t}" for kind in ("build", "tag", "upload") for t in TARGETS]
        + ["index", "manifest"])
    sha7 = repo.git("rev-parse", "--short=7", "HEAD")
    assert set(layout_refs(repo)) == {f"{t}-hello-1.1.0-{sha7}" for t in TARGETS} | \
        {"hello-1.1.0"}
    assert receipt(repo, "app-esp32c3", AppReceipt).app_desc.version == "1.1.0"


def test_dirty_tree_is_marked(repo: Repo) -> None:
    repo.write(f"{APP}/notes.txt", "uncommitted\n")
    repo.doit("release")
    sha7 = repo.git("rev-parse", "--short=7", "HEAD")
    assert receipt(repo, "image-esp32c3", ImageReceipt).tag == \
        f"esp32c3-hello-1.0.0-{sha7}-dirty"
    # a dirty tree never takes the release's name, in the local layout and store too
    assert receipt(repo, "index", IndexReceipt).tag == "hello-1.0.0-dirty"
    assert (repo.path / "build/store/hello/hello-1.0.0-dirty/release.json").is_file()
    assert not (repo.path / "build/store/hello/hello-1.0.0").exists()


def test_two_clones_give_identical_digests(repo: Repo, tmp_path: Path) -> None:
    a = repo.clone(tmp_path / "clone-a")
    b = repo.clone(tmp_path / "deeper" / "path" / "clone-b")
    a.doit("release")
    b.doit("release")
    assert receipt(a, "index", IndexReceipt) == receipt(b, "index", IndexReceipt)
    for target in TARGETS:
        assert receipt(a, f"image-{target}", ImageReceipt) == \
            receipt(b, f"image-{target}", ImageReceipt)
    assert sorted(blob_stats(a)) == sorted(blob_stats(b))


def test_state_is_portable_and_relative(repo: Repo, tmp_path: Path) -> None:
    """CI caches build/ and the state file; a runner at another path rebuilds nothing."""
    repo.doit("release")
    state = repo.path / "build/doit-state.sqlite3"
    with sqlite3.connect(state) as db:
        rows = db.execute("select task_id, task_data from doit").fetchall()
    assert rows, "the state is in sqlite3"
    assert not [r for r in rows if str(repo.path) in r[1]], "no absolute repo path in state"
    moved = tmp_path / "restored" / "elsewhere"
    shutil.copytree(repo.path, moved)  # copies content; mtimes of copies are new
    assert Repo(moved).doit("release").executed == []


def test_killed_run_keeps_finished_tasks(repo: Repo) -> None:
    """SIGKILL after some tasks finished: a rerun does not redo them."""
    slow = repo.path / "slow.py"
    slow.write_text(
        "import os, sys, time\n"
        "if sys.argv[1] == 'esp32h2':\n"
        "    open(os.environ['MARK'], 'w').close()\n"
        "    time.sleep(60)\n"
        "os.execvp(sys.argv[2], sys.argv[2:])\n")
    repo.edit("targets.toml", 'command = ["python3",', 'command = ["python3", "../../slow.py", '
              '"{target}", "python3",')
    repo.commit("slow h2")
    mark = repo.path.parent / "h2-started"
    repo.env["MARK"] = str(mark)
    env = {**os.environ, **repo.env, "HOME": str(repo.path.parent / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "doit", "release"], cwd=repo.path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not mark.exists():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "build:esp32h2 never started"
        time.sleep(0.05)
    os.killpg(proc.pid, 9)
    proc.wait()
    repo.edit("slow.py", "time.sleep(60)", "pass")
    repo.commit("fast again")
    run = repo.doit("release")
    builds = [t for t in run.executed if t.startswith("build:")]
    assert builds == ["build:esp32h2"], run.stdout


def test_parallel_release(repo: Repo) -> None:
    run = repo.doit("-n", "2", "release")
    assert len(run.executed) == 11
    assert len(layout_refs(repo)) == 4  # three targets and the index, none lost
    assert repo.doit("release").executed == []


def test_doit_list_and_clean(repo: Repo) -> None:
    listing = repo.doit("list", "--all").stdout
    for name in ("build", "tag", "index", "upload", "release", "build:esp32c3",
                 "tag:esp32h2", "upload:esp32c6"):
        line = next((ln for ln in listing.splitlines() if ln.split()[0] == name), None)
        assert line is not None, f"{name} missing from doit list:\n{listing}"
        assert len(line.split(None, 1)) == 2, f"{name} has no doc line"
    repo.doit("release")
    repo.doit("clean")
    # left: doit's own state (and the lock beside it) and the git cache, not task outputs
    leftover = {p.relative_to(repo.path).as_posix()
                for p in (repo.path / "build").rglob("*") if p.is_file()}
    assert leftover <= {"build/doit-state.sqlite3", "build/doit-state.sqlite3.lock",
                        "build/gitstate.json"}
    assert len(repo.doit("release").executed) == 11


def test_not_a_git_repository(repo: Repo) -> None:
    shutil.rmtree(repo.path / ".git")
    run = repo.doit("release", check=False)
    assert run.code != 0
    assert run.stderr.strip() == (
        f"error: {repo.path} is not in a git repository; esp32tasks tags every image with the "
        "commit it was built from: run `git init` and commit, or release from a clone")
    assert "Traceback" not in run.output
