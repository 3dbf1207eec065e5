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
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Final

from esp32tasks.errors import StateError
from esp32tasks.tasks.boundary import generating

__all__ = ["LOCK_WAIT", "DurableSqliteDB"]

#: Seconds a run waits for another run of the same checkout before it gives up.
LOCK_WAIT: Final = 60.0
_POLL: Final = 0.1

#: The keys after which doit has recorded all of a task's state (``save_success`` sets
#: ``deps:`` last; ``doit ignore`` sets ``ignore:``).
_LAST_KEYS = frozenset({"deps:", "ignore:"})


class DurableSqliteDB:
    desc = "sqlite3, committed after every task (survives SIGTERM and SIGKILL)"

    def __init__(self, name: str, codec: Any, *, module_name: str | None = None,
                 lock_wait: float = LOCK_WAIT) -> None:
        del module_name  # doit passes it to every backend; sqlite needs none
        self.name = name
        self.codec = codec
        self._cache: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        with generating():  # doit would print a traceback for anything raised here
            Path(name).parent.mkdir(parents=True, exist_ok=True)  # it lives in build/
            self._lock = _lock(Path(f"{name}.lock"), lock_wait)
            try:
                self._conn = sqlite3.connect(name, isolation_level="DEFERRED")
                self._conn.execute("create table if not exists doit "
                                   "(task_id text not null primary key, task_data json)")
            except sqlite3.DatabaseError as exc:
                os.close(self._lock)
                raise StateError(f"{name}: not a doit state file ({exc}); delete it and run "
                                 "doit again (every task then runs once)") from None

    def get(self, task_id: str, dependency: str) -> Any:
        return self._task(task_id).get(dependency)

    def set(self, task_id: str, dependency: str, value: Any) -> None:
        self._task(task_id)[dependency] = value
        self._dirty.add(task_id)
        if dependency in _LAST_KEYS:
            self._write(task_id)
            self._conn.commit()

    def in_(self, task_id: str) -> bool:
        return bool(self._task(task_id))

    def remove(self, task_id: str) -> None:
        self._cache.pop(task_id, None)
        self._dirty.discard(task_id)
        self._conn.execute("delete from doit where task_id=?", (task_id,))
        self._conn.commit()

    def remove_all(self) -> None:
        self._cache.clear()
        self._dirty.clear()
        self._conn.execute("delete from doit")
        self._conn.commit()

    def dump(self) -> None:
        for task_id in list(self._dirty):
            self._write(task_id)
        self._conn.commit()
        self._conn.close()
        self.unlock()  # the next run of this checkout may start

    def unlock(self) -> None:
        """Release the checkout's lock, once: a second close could hit a reused fd."""
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def _task(self, task_id: str) -> dict[str, Any]:
        data = self._cache.get(task_id)
        if data is None:
            row = self._conn.execute("select task_data from doit where task_id=?",
                                     (task_id,)).fetchone()
            data = self._cache[task_id] = self.codec.decode(row[0]) if row else {}
        return data

    def _write(self, task_id: str) -> None:
        self._conn.execute("insert or replace into doit values (?,?)",
                           (task_id, self.codec.encode(self._cache[task_id])))
        self._dirty.discard(task_id)


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
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd

