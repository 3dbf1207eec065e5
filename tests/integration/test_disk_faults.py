"""The disk says no: full, read-only, not ours to write, a directory where a file belongs.

Each is one ``error:`` line naming the path and the fix, never a traceback; nothing a rerun
would trust is left behind, and the rerun converges once the disk is fixed. Real faults,
not mocks: a small tmpfs filled to the last byte, a read-only bind mount, and doit run
without the capability that lets root write anywhere. Mounting needs root (CI's runner is
root, as is the development machine); where it is not permitted the test says so and
skips. Every mount is undone in teardown.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.repo import Repo, Run

pytestmark = pytest.mark.integration

AGAIN = "run `doit release` again"
SOURCE = "examples/hello/main/hello_main.c"


class Mounts:
    """Mounts a test makes; :meth:`undo` unmounts them all, the last first."""

    def __init__(self) -> None:
        self.made: list[Path] = []

    def _mount(self, *argv: str) -> None:
        if not sys.platform.startswith("linux") or shutil.which("mount") is None:
            pytest.skip("needs Linux mounts (mount(8)) to make a real disk fault")
        try:
            proc = subprocess.run(["mount", *argv], capture_output=True, text=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot run mount(8): {exc}")
        if proc.returncode != 0:
            pytest.skip(f"mounting is not permitted here (needs root with CAP_SYS_ADMIN): "
                        f"mount {' '.join(argv)}: {proc.stderr.strip()}")

    def tmpfs(self, point: Path, size: str) -> Path:
        """A fresh filesystem of ``size`` over the directory ``point``."""
        point.mkdir(parents=True, exist_ok=True)
        self._mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point))
        self.made.append(point)
        return point

    def read_only(self, point: Path) -> Path:
        """``point`` as it is, but read-only (a bind mount of itself, remounted ro)."""
        self._mount("--bind", str(point), str(point))
        self.made.append(point)
        self._mount("-o", "remount,bind,ro", str(point))
        probe = point / ".probe"
        try:
            probe.touch()
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
        else:
            probe.unlink()
            pytest.skip(f"{point} stayed writable after `mount -o remount,bind,ro`")
        return point

    def undo(self) -> None:
        for point in reversed(self.made):
            done = subprocess.run(["umount", str(point)], capture_output=True, check=False)
            if done.returncode != 0:  # busy: detach it now, the kernel frees it later
                subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
        self.made.clear()


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    made = Mounts()
    try:
        yield made
    finally:
        made.undo()


def fill(directory: Path) -> Path:
    """A file taking every byte left on ``directory``'s filesystem (ENOSPC proves it)."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 20, 4096, 1):
            chunk = b"\0" * size
            try:
                while out.write(chunk):
                    pass
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


def one_line(run: Run, code: int) -> str:
    """The run's only output on stderr, with the exit code doit gave."""
    assert "Traceback" not in run.output, run.output
    assert run.code == code, run.output
    (line,) = run.stderr.splitlines()
    return line


def test_a_full_disk_under_the_state_is_one_line_and_the_rerun_converges(
        repo: Repo, mounts: Mounts) -> None:
    build = mounts.tmpfs(repo.path / "build", "8m")
    filler = fill(build)
    full = repo.doit("release", check=False)
    assert one_line(full, 2) == (
        f"error: build/doit-state.sqlite3: no space left on device; free space on the "
        f"filesystem at {build} and {AGAIN}")
    assert full.executed == []
    filler.unlink()
    assert len(repo.doit("release").executed) == 11
    assert repo.doit("release").executed == []


def test_a_full_store_is_one_line_and_leaves_no_object(repo: Repo, mounts: Mounts) -> None:
    store = mounts.tmpfs(repo.path / "build" / "store", "4m")
    filler = fill(store)
    full = repo.doit("release", check=False)
    line = one_line(full, 1)
    pattern = (r"error: upload:(esp32\w+): build/store/[\w./-]+: no space left on device; "
               f"free space on the filesystem at {re.escape(str(store))} and "
               f"{re.escape(AGAIN)}")
    match = re.fullmatch(pattern, line)
    assert match, line
    assert [p for p in store.rglob("*") if not p.is_dir()] == [filler], "no object, no temp"
    assert not (repo.path / f"build/receipts/upload-{match[1]}.json").exists()
    filler.unlink()
    rerun = repo.doit("release")
    assert {f"upload:{match[1]}", "manifest"} <= set(rerun.executed)
    assert repo.doit("release").executed == []


def test_a_read_only_build_is_one_line_even_on_a_no_op(repo: Repo, mounts: Mounts) -> None:
    repo.doit("release")
    build = mounts.read_only(repo.path / "build")
    run = repo.doit("release", check=False)
    assert one_line(run, 2) == (
        f"error: build/doit-state.sqlite3.lock: read-only file system; make the filesystem "
        f"at {build} writable and {AGAIN}; or keep doit's state on a writable disk: "
        "`doit --db-file <path> release`")


def test_a_no_op_on_a_read_only_checkout_with_the_state_elsewhere_works(
        repo: Repo, mounts: Mounts, tmp_path: Path) -> None:
    state = tmp_path / "state" / "doit-state.sqlite3"
    repo.doit("--db-file", str(state), "release")
    os.utime(repo.path / "examples" / "hello")  # git's stat cache no longer answers
    mounts.read_only(repo.path)
    for _ in range(2):  # git answers, then the cache (beside the state) does
        run = repo.doit("--db-file", str(state), "release")
        assert run.executed == []
        assert run.stderr == ""
    assert (state.parent / "gitstate.json").is_file()
    assert not (repo.path / "build" / "gitstate.json").exists()


def test_a_directory_where_a_file_belongs_is_one_line(repo: Repo) -> None:
    repo.doit("release")
    receipt = repo.path / "build" / "receipts" / "app-esp32c3.json"
    receipt.unlink()
    receipt.mkdir()
    run = repo.doit("release", check=False)
    assert one_line(run, 1) == (
        "error: build:esp32c3: build/receipts/app-esp32c3.json: is a directory; esp32tasks "
        f"writes a file there: remove or rename the directory and {AGAIN}")
    receipt.rmdir()
    assert "build:esp32c3" in repo.doit("release").executed

    artifacts = repo.path / "build" / "store" / "hello" / "hello-1.0.0" / "esp32c3" / "artifacts"
    (artifacts / "hello.bin").unlink()
    (artifacts / "hello.bin").mkdir()
    repo.doit("forget", "upload:esp32c3")  # check the store, don't trust the receipt
    run = repo.doit("release", check=False)
    assert one_line(run, 1) == (
        "error: upload:esp32c3: build/store/hello/hello-1.0.0/esp32c3/artifacts/hello.bin: "
        "is a directory; esp32tasks writes a file there: remove or rename the directory and "
        f"{AGAIN}")
    assert not [p for p in artifacts.iterdir() if p.name.startswith(".")], "no temp file"
    (artifacts / "hello.bin").rmdir()
    assert "upload:esp32c3" in repo.doit("release").executed


def without_root_powers(repo: Repo, locked: Path, *args: str) -> Run:
    """doit as this user, minus root's power to write where the modes forbid it
    (``locked`` is such a directory: the probe proves the power is gone)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("needs setpriv(1) (util-linux) to run doit without root's powers")
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    probe = locked / ".probe"
    tried = subprocess.run([*prefix, sys.executable, "-c",
                            "import sys; open(sys.argv[1], 'x')", str(probe)],
                           capture_output=True, check=False)
    if tried.returncode == 0:
        probe.unlink()
        pytest.skip("cannot take root's power to write past file modes here (setpriv needs "
                    "CAP_SETPCAP)")
    return repo.run(*prefix, sys.executable, "-m", "doit", *args, check=False)


def test_permission_denied_is_one_line(repo: Repo) -> None:
    import pwd

    repo.doit("release")
    receipts = repo.path / "build" / "receipts"
    repo.doit("forget", "build:esp32c3")
    receipts.chmod(0o555)
    try:
        run = without_root_powers(repo, receipts, "release")
    finally:
        receipts.chmod(0o755)
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert one_line(run, 1) == (
        "error: build:esp32c3: build/receipts/build-esp32c3.json: permission denied; give "
        f"user {user} write access to it and its directory (chown or chmod), then {AGAIN}")
    assert "build:esp32c3" in repo.doit("release").executed


def test_a_source_nobody_may_read_is_the_builds_own_error_not_a_traceback(
        repo: Repo) -> None:
    """doit hashes a changed file_dep itself: a source this user may not read fails in the
    build (the compiler says so), one error, no traceback from doit's check."""
    repo.doit("release")
    source = repo.path / "examples/hello/main/hello_main.c"
    repo.write("examples/hello/main/hello_main.c", source.read_text() + "\n")
    locked = repo.path.parent / "locked"  # the probe's: proves root's powers are gone
    locked.mkdir()
    locked.chmod(0o555)
    source.chmod(0o000)
    try:
        run = without_root_powers(repo, locked, "release")
    finally:
        source.chmod(0o644)
    assert run.code == 1
    assert "Traceback" not in run.output
    assert run.stderr.startswith("error: build:esp32c3: ")
    assert "hello_main.c: Permission denied" in run.stderr
    assert [line for line in run.stderr.splitlines() if line.startswith("error:")] == [
        run.stderr.splitlines()[0]]
