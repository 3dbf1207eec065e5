"""DurableSqliteDB: doit's backend interface and file format, each task committed when done."""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from doit.dependency import JSONCodec, SqliteDB

from esp32tasks.tasks import DOIT_CONFIG, boundary, state
from esp32tasks.tasks.state import DurableSqliteDB

FILE_DEP = "examples/hello/main/hello_main.c"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "build" / "doit-state.sqlite3"


@pytest.fixture
def db(path: Path) -> Iterator[DurableSqliteDB]:
    backend = DurableSqliteDB(str(path), JSONCodec())
    yield backend
    kill(backend)


def kill(db: DurableSqliteDB) -> None:
    """What SIGKILL leaves: no dump(); the process's connection and lock are gone."""
    db._conn.close()  # dump() closes it too; closing twice is harmless
    db.unlock()  # the kernel's part; once only, after dump() too


def rows(path: Path) -> dict[str, Any]:
    """What another process sees in the file now: every committed row, decoded."""
    codec = JSONCodec()
    with sqlite3.connect(path) as other:
        return {task_id: codec.decode(data)
                for task_id, data in other.execute("select task_id, task_data from doit")}


def finish(db: DurableSqliteDB, task_id: str) -> None:
    """What doit's ``save_success`` sets, in its order: ``deps:`` last."""
    db.set(task_id, "_values_:", {})
    db.set(task_id, "checker:", "MD5Checker")
    db.set(task_id, FILE_DEP, [1767225600.0, 120, "d41d8cd98f00b204e9800998ecf8427e"])
    db.set(task_id, "deps:", [FILE_DEP])


FINISHED = {"_values_:": {}, "checker:": "MD5Checker",
            FILE_DEP: [1767225600.0, 120, "d41d8cd98f00b204e9800998ecf8427e"],
            "deps:": [FILE_DEP]}


def test_it_is_the_backend_we_configure() -> None:
    assert DOIT_CONFIG["backend"] == "sqlite3-durable"
    assert DOIT_CONFIG["dep_file"] == "build/doit-state.sqlite3"


def test_the_file_and_its_directory_are_created(path: Path, db: DurableSqliteDB) -> None:
    assert path.is_file()
    assert rows(path) == {}


def test_set_get_in(db: DurableSqliteDB) -> None:
    assert not db.in_("build:esp32c3")
    assert db.get("build:esp32c3", "checker:") is None
    assert not db.in_("build:esp32c3"), "a get does not make a task"
    db.set("build:esp32c3", "checker:", "MD5Checker")
    assert db.in_("build:esp32c3")
    assert db.get("build:esp32c3", "checker:") == "MD5Checker"
    assert db.get("build:esp32c3", "result:") is None
    assert not db.in_("build:esp32c6")


def test_a_finished_task_is_committed_at_once(path: Path, db: DurableSqliteDB) -> None:
    db.set("build:esp32c3", "_values_:", {})
    db.set("build:esp32c3", "checker:", "MD5Checker")
    assert rows(path) == {}, "not before deps:"
    db.set("build:esp32c3", FILE_DEP, [1767225600.0, 120, "d41d8cd98f00b204e9800998ecf8427e"])
    db.set("build:esp32c3", "deps:", [FILE_DEP])
    assert rows(path) == {"build:esp32c3": FINISHED}


def test_an_ignored_task_is_committed_at_once(path: Path, db: DurableSqliteDB) -> None:
    db.set("push:esp32c3", "ignore:", "1")
    assert rows(path) == {"push:esp32c3": {"ignore:": "1"}}


def test_an_unfinished_task_is_not_visible(path: Path, db: DurableSqliteDB) -> None:
    db.set("build:esp32c6", "_values_:", {})
    db.set("build:esp32c6", "checker:", "MD5Checker")
    finish(db, "build:esp32c3")
    assert rows(path) == {"build:esp32c3": FINISHED}
    db.set("build:esp32c3", "result:", "late")  # after deps: it waits for the next one or dump
    assert rows(path) == {"build:esp32c3": FINISHED}


def test_a_killed_run_keeps_what_it_finished(path: Path) -> None:
    db = DurableSqliteDB(str(path), JSONCodec())
    finish(db, "build:esp32c3")
    db.set("build:esp32c6", "checker:", "MD5Checker")
    kill(db)  # SIGKILL: no dump()
    again = DurableSqliteDB(str(path), JSONCodec())
    assert again.in_("build:esp32c3")
    assert again.get("build:esp32c3", "deps:") == [FILE_DEP]
    assert not again.in_("build:esp32c6")
    again.dump()


def test_dump_writes_the_rest_and_closes(path: Path, db: DurableSqliteDB) -> None:
    finish(db, "build:esp32c3")
    db.set("build:esp32c6", "checker:", "MD5Checker")
    db.set("build:esp32c3", "result:", "late")
    db.dump()
    assert rows(path) == {"build:esp32c3": {**FINISHED, "result:": "late"},
                          "build:esp32c6": {"checker:": "MD5Checker"}}
    with pytest.raises(sqlite3.ProgrammingError):
        db.set("x", "deps:", [])


def test_a_second_run_reads_and_updates_the_first_runs_rows(path: Path) -> None:
    first = DurableSqliteDB(str(path), JSONCodec())
    finish(first, "build:esp32c3")
    first.dump()
    second = DurableSqliteDB(str(path), JSONCodec())
    assert second.get("build:esp32c3", "checker:") == "MD5Checker"
    second.set("build:esp32c3", "deps:", [])
    assert rows(path) == {"build:esp32c3": {**FINISHED, "deps:": []}}, "merged, not replaced"
    second.dump()


def test_remove(path: Path, db: DurableSqliteDB) -> None:
    finish(db, "build:esp32c3")
    finish(db, "build:esp32c6")
    db.set("tag:esp32c3", "checker:", "MD5Checker")
    db.remove("build:esp32c3")
    db.remove("tag:esp32c3")
    db.remove("never-ran")
    assert not db.in_("build:esp32c3")
    assert db.get("build:esp32c3", "deps:") is None
    assert rows(path) == {"build:esp32c6": FINISHED}, "committed at once (doit forget)"
    db.dump()
    assert rows(path) == {"build:esp32c6": FINISHED}, "a removed task is not written back"


def test_remove_all(path: Path, db: DurableSqliteDB) -> None:
    finish(db, "build:esp32c3")
    db.set("build:esp32c6", "checker:", "MD5Checker")
    db.remove_all()
    assert rows(path) == {}
    assert not db.in_("build:esp32c3")
    assert not db.in_("build:esp32c6")
    db.dump()
    assert rows(path) == {}


def test_doits_own_sqlite_backend_reads_the_file(path: Path, db: DurableSqliteDB) -> None:
    finish(db, "build:esp32c3")
    db.set("push:esp32c3", "ignore:", "1")
    db.set("index", "checker:", "MD5Checker")
    db.dump()
    theirs = SqliteDB(str(path), JSONCodec())
    try:
        assert theirs.in_("build:esp32c3")
        assert theirs.get("build:esp32c3", "deps:") == [FILE_DEP]
        assert theirs.get("build:esp32c3", FILE_DEP) == FINISHED[FILE_DEP]
        assert theirs.get("push:esp32c3", "ignore:") == "1"
        assert theirs.get("index", "checker:") == "MD5Checker"
    finally:
        theirs._conn.close()


def test_doits_finished_row_is_visible_to_doit_before_dump(path: Path,
                                                            db: DurableSqliteDB) -> None:
    finish(db, "build:esp32c3")
    theirs = SqliteDB(str(path), JSONCodec())
    try:
        assert theirs.get("build:esp32c3", "deps:") == [FILE_DEP]
    finally:
        theirs._conn.close()


def test_we_read_what_doits_own_backend_wrote(path: Path) -> None:
    path.parent.mkdir(parents=True)
    theirs = SqliteDB(str(path), JSONCodec())
    theirs.set("build:esp32c3", "deps:", [FILE_DEP])
    theirs.set("build:esp32c3", "checker:", "MD5Checker")
    theirs.dump()
    ours = DurableSqliteDB(str(path), JSONCodec())
    assert ours.get("build:esp32c3", "deps:") == [FILE_DEP]
    assert ours.get("build:esp32c3", "checker:") == "MD5Checker"
    ours.dump()


def test_a_corrupt_file_is_one_line_naming_the_file(
        path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a sqlite3 database, it is " * 200)
    with pytest.raises(SystemExit) as info:  # doit would print a traceback for anything else
        DurableSqliteDB(str(path), JSONCodec())
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {path}: not a doit state file (file is not a database); delete it and run "
        "doit again (every task then runs once)\n")
    DurableSqliteDB(str(path.with_name("other.sqlite3")), JSONCodec(), lock_wait=0).dump()


HOLDER = """
import sys
from pathlib import Path
from esp32tasks.tasks.state import _lock
_lock(Path(sys.argv[1]), 0)
print("locked", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def holder(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding this checkout's state lock until it reads a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, f"{path}.lock"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "locked\n"  # readiness, not a sleep
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_run_waits_a_bounded_time_then_names_the_holder(
        path: Path, holder: subprocess.Popen[str], capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    with pytest.raises(SystemExit) as info:
        DurableSqliteDB(str(path), JSONCodec(), lock_wait=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"error: another release is running in this checkout (pid {holder.pid}; it holds "
        f"{path}.lock); waited 0.3 s: let it finish, or stop it, then run doit again\n")


def test_a_second_run_goes_on_when_the_first_finishes(
        path: Path, holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.write("done\n")
    holder.stdin.flush()
    db = DurableSqliteDB(str(path), JSONCodec(), lock_wait=30)
    assert Path(f"{path}.lock").read_text() == f"{os.getpid()}\n"
    db.dump()


def test_the_lock_of_a_dead_run_is_taken_over_at_once(
        path: Path, holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait()
    DurableSqliteDB(str(path), JSONCodec(), lock_wait=0).dump()


def test_another_checkout_never_waits(path: Path, holder: subprocess.Popen[str],
                                      tmp_path: Path) -> None:
    other = tmp_path / "clone" / "build" / "doit-state.sqlite3"
    DurableSqliteDB(str(other), JSONCodec(), lock_wait=0).dump()


def test_the_lock_is_released_once(path: Path) -> None:
    db = DurableSqliteDB(str(path), JSONCodec(), lock_wait=0)
    db.dump()
    keep = os.open(path.parent / "another", os.O_RDWR | os.O_CREAT)  # may reuse the fd number
    try:
        db.unlock()
        os.fstat(keep)  # still ours: unlock() did not close it a second time
    finally:
        os.close(keep)


def test_dump_lets_the_next_run_in(path: Path) -> None:
    DurableSqliteDB(str(path), JSONCodec(), lock_wait=0).dump()
    DurableSqliteDB(str(path), JSONCodec(), lock_wait=0).dump()


def test_module_name_is_accepted_and_ignored(path: Path) -> None:
    backend = DurableSqliteDB(str(path), codec=JSONCodec(), module_name="dodo")
    backend.dump()
    assert rows(path) == {}


# -- the disk says no: one line, nothing recorded that was not done ------------------------

def full_line(path: Path) -> str:
    mount = boundary._mount_point(str(path))
    return (f"error: {path}: no space left on device; free space on the filesystem at {mount} "
            "and run `doit release` again\n")


def test_a_full_disk_at_commit_is_one_line_and_records_nothing(
        path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = DurableSqliteDB(str(path), JSONCodec())
    finish(db, "build:esp32c6")
    pages = db._conn.execute("pragma page_count").fetchone()[0]
    db._conn.execute(f"pragma max_page_count={pages}")  # sqlite's SQLITE_FULL, as on a full disk
    db.set("build:esp32c3", "result:", "x" * 20000)  # more than one page
    with pytest.raises(SystemExit) as stopped:  # doit would print a traceback
        finish(db, "build:esp32c3")
    assert stopped.value.code == 2
    assert capsys.readouterr().err == full_line(path)
    assert rows(path) == {"build:esp32c6": FINISHED}, "the failed task is not recorded done"
    db.set("build:esp32h2", "checker:", "MD5Checker")  # doit may go on to its end
    with pytest.raises(SystemExit) as again:
        db.dump()
    assert again.value.code == 2
    assert capsys.readouterr().err == "", "said once"
    rerun = DurableSqliteDB(str(path), JSONCodec(), lock_wait=0)  # the lock is free
    finish(rerun, "build:esp32c3")  # space is back: the rerun records it
    rerun.dump()
    assert rows(path)["build:esp32c3"]["deps:"] == [FILE_DEP]


class Refusing:
    """A connection whose writes sqlite refuses as on a full disk (reads still work)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith(("insert", "delete")):
            error = sqlite3.OperationalError("database or disk is full")
            error.sqlite_errorname = "SQLITE_FULL"
            raise error
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_a_full_disk_when_doit_forgets_a_failed_task_lets_doit_report_it_first(
        path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = DurableSqliteDB(str(path), JSONCodec())
    finish(db, "build:esp32c3")
    db._conn = Refusing(db._conn)  # type: ignore[assignment]
    db.remove("build:esp32c3")  # doit's runner, before it reports the task's own failure
    assert capsys.readouterr().err == full_line(path)
    with pytest.raises(SystemExit) as stopped:
        db.dump()
    assert stopped.value.code == 2
    assert capsys.readouterr().err == ""
    assert rows(path) == {"build:esp32c3": FINISHED}, "as it was: rolled back, not half done"


def test_a_bug_in_using_the_connection_is_not_the_disk(path: Path) -> None:
    db = DurableSqliteDB(str(path), JSONCodec())
    db._conn.close()
    with pytest.raises(sqlite3.ProgrammingError):
        db.set("build:esp32c3", "deps:", [])
    db.unlock()


def test_a_lock_file_that_is_a_directory_is_one_line(
        path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Path(f"{path}.lock").mkdir(parents=True)
    with pytest.raises(SystemExit) as stopped:
        DurableSqliteDB(str(path), JSONCodec())
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {path}.lock: is a directory; esp32tasks writes a file there: remove or rename "
        "the directory and run `doit release` again\n")


def test_a_state_path_that_is_a_directory_is_one_line_not_a_corrupt_file(
        path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path.mkdir(parents=True)  # `doit --db-file build`
    with pytest.raises(SystemExit) as stopped:
        DurableSqliteDB(str(path), JSONCodec())
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {path}: is a directory; esp32tasks writes a file there: remove or rename the "
        "directory and run `doit release` again\n")
    DurableSqliteDB(str(path.with_name("other.sqlite3")), JSONCodec(), lock_wait=0).dump()


def test_a_read_only_state_says_how_to_keep_it_elsewhere(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path.parent.mkdir(parents=True)
    error = sqlite3.OperationalError("attempt to write a readonly database")
    error.sqlite_errorname = "SQLITE_READONLY"
    real = os.statvfs(path.parent)

    class ReadOnly:
        f_flag = real.f_flag | os.ST_RDONLY
        f_bavail = real.f_bavail

    monkeypatch.setattr(os, "statvfs", lambda _: ReadOnly())
    mount = boundary._mount_point(str(path))
    assert state._sqlite_message(str(path), error) == (
        f"{path}: read-only file system; make the filesystem at {mount} writable and run "
        "`doit release` again; or keep doit's state on a writable disk: "
        "`doit --db-file <path> release`")
    monkeypatch.setattr(os, "statvfs", lambda _: real)
    assert state._sqlite_message(str(path), error) == (
        f"{path}: permission denied; give user {pwd.getpwuid(os.geteuid()).pw_name} write "
        "access to it and its directory (chown or chmod), then run `doit release` again; or "
        "keep doit's state on a writable disk: `doit --db-file <path> release`")


def test_a_full_disk_does_not_stop_the_lock(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    path.parent.mkdir(parents=True)
    monkeypatch.setattr(os, "pwrite", full)
    fd = state._lock(Path(f"{path}.lock"), 0)  # the pid is for messages only
    try:
        with pytest.raises(BlockingIOError):  # and the lock is held
            fcntl.flock(os.open(f"{path}.lock", os.O_RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
