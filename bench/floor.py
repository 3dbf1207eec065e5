"""doit's floor: a ``dodo.py`` with our tasks' names, ``file_dep`` and ``targets`` and no work.

``export`` (run inside the synthetic repo, as ``python -m bench.floor <out.json>``) loads
our tasks through doit's own loader and writes what the floor needs; :func:`write_dodo`
writes ``dodo_floor.py``, whose tasks read that file and whose actions do nothing. It uses
plain doit: the sqlite3 backend and the MD5 checker, like ours.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["DODO", "STATE", "TASKS", "export", "write_dodo"]

TASKS = ".floor-tasks.json"
# inside build/, which our git cache does not watch: a journal in the root would change
# the root directory's mtime on every floor run and make our next no-op ask git again
STATE = "build/floor.sqlite3"
DODO = "dodo_floor.py"

_DODO_TEXT = f'''"""doit's floor for the benchmark: our tasks and file_dep, no work."""

import json

DOIT_CONFIG = {{"default_tasks": ["release"], "dep_file": "{STATE}", "backend": "sqlite3",
               "check_file_uptodate": "md5"}}


def nothing():
    return True


def task_floor():
    with open("{TASKS}") as f:
        tasks = json.load(f)
    for t in tasks:
        yield {{"basename": t["name"], "actions": [(nothing,)] if t["file_dep"] else None,
               "file_dep": t["file_dep"], "targets": t["targets"], "task_dep": t["task_dep"]}}
'''


def export(out: Path) -> int:
    """Write our tasks (name, file_dep, targets, task_dep) as JSON; run in the repo root."""
    from doit.loader import load_tasks

    sys.path.insert(0, str(Path.cwd()))
    import dodo  # the repo's dodo.py

    tasks = load_tasks(vars(dodo))
    data = [{"name": t.name, "file_dep": sorted(t.file_dep), "targets": list(t.targets),
             "task_dep": list(t.task_dep)}
            for t in tasks]
    out.write_text(json.dumps(data))
    return len(data)


def write_dodo(root: Path) -> None:
    (root / DODO).write_text(_DODO_TEXT)


if __name__ == "__main__":
    print(export(Path(sys.argv[1])))
