"""doit's console reporter, printing our failures as one message instead of a traceback."""

from __future__ import annotations

import sys
from typing import Any

from doit.exceptions import TaskFailed
from doit.reporter import ConsoleReporter

__all__ = ["Reporter"]


class Reporter(ConsoleReporter):  # type: ignore[misc]  # doit ships no type hints
    """Like doit's, but an expected failure (``TaskFailed``) is one ``error:`` block."""

    def add_failure(self, task: Any, fail: Any) -> None:
        if isinstance(fail, TaskFailed) and not fail.traceback:
            sys.stderr.write(f"error: {task.name}: {fail.message}\n")
            self.failures.append({"task": task, "exception": fail, "reported": True})
            return
        super().add_failure(task, fail)

    def complete_run(self) -> None:
        # the message was printed when it happened; don't repeat it in a summary block
        self.failures: list[dict[str, Any]] = [f for f in self.failures if not f.get("reported")]
        super().complete_run()
