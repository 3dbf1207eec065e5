"""doit's console reporter, printing our failures as one message instead of a traceback.

Also doit's own: an ``OSError`` the filesystem raised while doit checked a task's
dependencies (a source it may not read, say) is one line too, through
:func:`esp32tasks.tasks.boundary.explain`.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Final

from doit.exceptions import DependencyError, TaskFailed
from doit.reporter import ConsoleReporter

from esp32tasks.tasks.boundary import explain

__all__ = ["Reporter"]


class Reporter(ConsoleReporter):  # type: ignore[misc]  # doit ships no type hints
    """Like doit's, but an expected failure (``TaskFailed``) is one ``error:`` block."""

    def add_failure(self, task: Any, fail: Any) -> None:
        message = fail.message if isinstance(fail, TaskFailed) and not fail.traceback else None
        if message is None and isinstance(fail, DependencyError):
            message = _filesystem(fail)  # doit's own check of the task's files
        if message is not None:
            sys.stderr.write(f"error: {task.name}: {message}\n")
            self.failures.append({"task": task, "exception": fail, "reported": True})
            return
        super().add_failure(task, fail)

    def complete_run(self) -> None:
        # the message was printed when it happened; don't repeat it in a summary block
        self.failures: list[dict[str, Any]] = [f for f in self.failures if not f.get("reported")]
        super().complete_run()


#: The last line of an ``OSError``'s traceback: ``PermissionError: [Errno 13] Permission
#: denied: '/path'`` (doit keeps the text of a failure's exception, not the exception).
_OS_ERROR: Final = re.compile(r"(?:\w+\.)*\w+Error: \[Errno (\d+)\] ([^:]+): '(.*)'\n?")


def _filesystem(fail: Any) -> str | None:
    lines = fail.traceback or []
    found = _OS_ERROR.fullmatch(lines[-1]) if lines else None
    if found is None:
        return None
    code, reason, filename = found.groups()
    return explain(OSError(int(code), reason, filename))
