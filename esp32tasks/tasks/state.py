"""doit's state in doit's sqlite3 file format, committed as soon as each task succeeds.

doit writes its state once, at the end of a run: a CI job cancelled with SIGTERM or
SIGKILL forgets every build and publish it finished. This backend commits the row of a
task the moment doit records its last field (``deps:``, or ``ignore:``), so a killed run
keeps what it finished.

It implements doit's backend interface (``get``, ``set``, ``in_``, ``remove``,
``remove_all``, ``dump``) on the standard library's sqlite3, not on doit's ``SqliteDB``
internals: the table is doit's own (``doit(task_id text primary key, task_data json)``),
so ``--backend sqlite3`` reads the same file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from doit.dependency import DatabaseException

__all__ = ["DurableSqliteDB"]

#: The keys after which doit has recorded all of a task's state (``save_success`` sets
#: ``deps:`` last; ``doit ignore`` sets ``ignore:``).
_LAST_KEYS = frozenset({"deps:", "ignore:"})


class DurableSqliteDB:
    desc = "sqlite3, committed after every task (survives SIGTERM and SIGKILL)"

    def __init__(self, name: str, codec: Any, *, module_name: str | None = None) -> None:
        del module_name  # doit passes it to every backend; sqlite needs none
        self.name = name
        self.codec = codec
        Path(name).parent.mkdir(parents=True, exist_ok=True)  # it lives in build/
        self._cache: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()
        try:
            self._conn = sqlite3.connect(name, isolation_level="DEFERRED")
            self._conn.execute("create table if not exists doit "
                               "(task_id text not null primary key, task_data json)")
        except sqlite3.DatabaseError as exc:
            raise DatabaseException(f"{name}: not a doit state file ({exc}); delete it and "
                                    "run doit again (every task then runs once)") from None

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
