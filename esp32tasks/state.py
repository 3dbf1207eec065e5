"""doit's sqlite3 backend, committing each task's state as soon as the task succeeds.

doit writes its state once, at the end of a run: a CI job cancelled with SIGTERM or
SIGKILL forgets every build and publish it finished. This backend commits the row of a
task the moment doit records its last field (``deps:``), so a killed run keeps what it
finished. The file format is doit's own sqlite3 one; ``--backend sqlite3`` reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doit.dependency import SqliteDB

__all__ = ["DurableSqliteDB"]

#: The last key :meth:`doit.dependency.Dependency.save_success` sets for a task.
_LAST_KEY = "deps:"


class DurableSqliteDB(SqliteDB):  # type: ignore[misc]  # doit ships no type hints
    desc = "sqlite3, committed after every task (survives SIGTERM and SIGKILL)"

    def __init__(self, name: str, codec: Any, *, module_name: str | None = None) -> None:
        Path(name).parent.mkdir(parents=True, exist_ok=True)  # it lives in build/
        super().__init__(name, codec, module_name=module_name)

    def set(self, task_id: str, dependency: str, value: Any) -> None:
        super().set(task_id, dependency, value)
        if dependency in (_LAST_KEY, "ignore:"):
            self._commit(task_id)

    def remove(self, task_id: str) -> None:
        super().remove(task_id)
        self._conn.commit()

    def _commit(self, task_id: str) -> None:
        self._conn.execute("insert or replace into doit values (?,?)",
                           (task_id, self.codec.encode(self._cache[task_id])))
        self._conn.commit()
        self._dirty.discard(task_id)
