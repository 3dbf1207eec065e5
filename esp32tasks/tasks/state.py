"""doit's state in doit's sqlite3 file format, committed as soon as each task succeeds.

doit writes its state once, at the end of a run: a CI job cancelled with SIGTERM or
SIGKILL forgets every build and publish it finished. This backend commits the row of a
task the moment doit records its last field (``deps:``, or ``ignore:``), so a killed run
keeps what it finished.

It implements doit's backend interface (``get``, ``set``, ``in_``, ``remove``,
``remove_all``, ``dump``) on the standard library's sqlite3, not on doit's ``SqliteDB``
internals: the table is doit's own (``doit(task_id text primary key, task_data json)``),
so ``--backend sqlite3`` reads the same file.

One run at a time per checkout: the backend holds an exclusive ``flock`` on
``<state file>.lock`` (beside the state file) from the moment doit opens the state until
it closes it. A second run waits up to :data:`LOCK_WAIT` seconds, then stops with one
line naming the holder's pid. The kernel drops the lock of a process that dies (killed CI
job), so a stale lock is taken over at once; separate clones have separate state files
and never wait for each other.

The disk's refusals are one ``error:`` line naming the file, never a traceback (doit
prints one for anything a backend raises): a full disk, a read-only or foreign
directory, a directory where the file belongs. A commit that fails leaves the previous
row (sqlite rolls the transaction back), so no task is recorded done that was not; the run
stops, and reruns once the disk is fixed. When the state cannot be written at all, the
message says how to keep it elsewhere (``doit --db-file <path>``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

from esp32tasks.errors import StateError
from esp32tasks.tasks.boundary import explain, generating

__all__ = ["LOCK_WAIT", "DurableSqliteDB"]

T = TypeVar("T")

#: Seconds a run waits for another run of the same checkout before it gives up.
LOCK_WAIT: Final = 60.0
_POLL: Final = 0.1

#: The keys after which doit has recorded all of a task's state (``save_success`` sets
#: ``deps:`` last; ``doit ignore`` sets ``ignore:``).
_LAST_KEYS = frozenset({"deps:", "ignore:"})

#: The way out when doit's state cannot be written where it is.
_ELSEWHERE: Final = "keep doit's state on a writable disk: `doit --db-file <path> release`"


class DurableSqliteDB:
    desc = "sqlite3, committed after every task (survives SIGTERM and SIGKILL)"

    def __init__(self, name: str, codec: Any, *, module_name: str | None = None,
                 lock_wait: float = LOCK_WAIT) -> None:
        del module_name  # doit passes it to every backend; sqlite needs none
        self.name = name
        self.codec = codec
        self._cache: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        self._failed: str | None = None
        with generating():  # doit would print a traceback for anything raised here
            try:
                Path(name).parent.mkdir(parents=True, exist_ok=True)  # it lives in build/
                self._lock = _lock(Path(f"{name}.lock"), lock_wait)
            except OSError as exc:
                raise StateError(_explain(exc)) from None
            try:
                self._conn = sqlite3.connect(name, isolation_level="DEFERRED")
                self._conn.execute("create table if not exists doit "
                                   "(task_id text not null primary key, task_data json)")
            except sqlite3.Error as exc:
                os.close(self._lock)
                message = _sqlite_message(name, exc)
                if message is None:
                    raise
                raise StateError(message) from None

    def get(self, task_id: str, dependency: str) -> Any:
        return self._task(task_id).get(dependency)

    def set(self, task_id: str, dependency: str, value: Any) -> None:
        self._task(task_id)[dependency] = value
        self._dirty.add(task_id)
        if dependency in _LAST_KEYS:
            self._guarded(lambda: self._commit(task_id))

    def in_(self, task_id: str) -> bool:
        return bool(self._task(task_id))

    def remove(self, task_id: str) -> None:
        self._cache.pop(task_id, None)
        self._dirty.discard(task_id)
        # doit removes a failed task's row before it reports the failure: let it report
        # (its message may say why the disk refused); dump() ends the run
        self._guarded(lambda: self._delete(task_id), stop=False)

    def remove_all(self) -> None:
        self._cache.clear()
        self._dirty.clear()
        self._guarded(lambda: self._delete(None))

    def dump(self) -> None:
        if self._failed is None:
            self._guarded(lambda: self._commit(*self._dirty), stop=False)
        self._conn.close()
        self.unlock()  # the next run of this checkout may start
        if self._failed is not None:
            raise SystemExit(2)  # the message was printed when the disk refused

    def unlock(self) -> None:
        """Release the checkout's lock, once: a second close could hit a reused fd."""
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def _task(self, task_id: str) -> dict[str, Any]:
        data = self._cache.get(task_id)
        if data is None:
            row = self._guarded(lambda: self._conn.execute(
                "select task_data from doit where task_id=?", (task_id,)).fetchone(),
                writes=False)
            data = self._cache[task_id] = self.codec.decode(row[0]) if row else {}
        return data

    def _commit(self, *task_ids: str) -> None:
        for task_id in list(task_ids):
            self._conn.execute("insert or replace into doit values (?,?)",
                               (task_id, self.codec.encode(self._cache[task_id])))
            self._dirty.discard(task_id)
        self._conn.commit()

    def _delete(self, task_id: str | None) -> None:
        if task_id is None:
            self._conn.execute("delete from doit")
        else:
            self._conn.execute("delete from doit where task_id=?", (task_id,))
        self._conn.commit()

    def _guarded(self, work: Callable[[], T], *, stop: bool = True,
                 writes: bool = True) -> T | None:
        """``work`` on the file; the disk's refusal is one ``error:`` line, printed once.

        The transaction is rolled back (nothing half-recorded), nothing more is written
        (reads go on), and the run stops (``stop``, with exit code 2) or goes on to its
        end, where :meth:`dump` exits with code 2.
        """
        if self._failed is None or not writes:
            try:
                return work()
            except sqlite3.Error as exc:
                message = _sqlite_message(self.name, exc)
                if message is None:
                    raise  # misuse (a closed connection): a bug
                with contextlib.suppress(sqlite3.Error):  # sqlite's own, after some errors
                    self._conn.rollback()
                if self._failed is None:
                    sys.stderr.write(f"error: {message}\n")
                    self._failed = message
        if stop:
            raise SystemExit(2)
        return None


def _explain(exc: OSError) -> str:
    """The one line for an OSError on the state's files; a bug's OSError goes on as is."""
    message = explain(exc, elsewhere=_ELSEWHERE)
    if message is None:
        raise exc
    return message


def _sqlite_message(name: str, exc: sqlite3.Error) -> str | None:
    """One line for sqlite's refusal of the state file; None for misuse (a bug)."""
    code = getattr(exc, "sqlite_errorname", None) or ""
    if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return (f"{name}: not a doit state file ({exc}); delete it and run doit again "
                "(every task then runs once)")
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return (f"{name}: another program holds doit's state ({exc}); let it finish, then "
                "run doit again")
    if code.startswith("SQLITE_FULL"):
        cause = errno.ENOSPC
    elif code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_IOERR")):
        cause = _why_not_written(Path(name), io=code.startswith("SQLITE_IOERR"))
    else:
        return None
    return _explain(OSError(cause, os.strerror(cause), name))


def _why_not_written(path: Path, *, io: bool) -> int:
    """sqlite says only that it could not open or write: which errno the disk gave."""
    if path.is_dir():
        return errno.EISDIR
    here = path if path.exists() else path.parent
    try:
        disk = os.statvfs(here)
    except OSError:
        return errno.EIO if io else errno.EACCES
    if disk.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if io:  # sqlite says SQLITE_FULL for ENOSPC, mostly; an I/O error may be one too
        return errno.EIO if disk.f_bavail else errno.ENOSPC
    return errno.EACCES


def _lock(path: Path, wait: float) -> int:
    """An exclusive lock on ``path``, holding our pid; :class:`StateError` after ``wait``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise StateError(
                    f"another release is running in this checkout (pid {holder}; it holds "
                    f"{path}); waited {wait:g} s: let it finish, or stop it, then run doit "
                    "again") from None
            time.sleep(_POLL)  # a lock has no readiness to wait on; poll it, bounded
    try:  # who holds it, for the message of the run that waits; a full disk keeps none
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            os.close(fd)
            raise
    return fd

