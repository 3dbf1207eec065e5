"""doit's console reporter, printing our failures as one message instead of a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, ParamSpec

from doit.exceptions import TaskFailed
from doit.reporter import ConsoleReporter

from esp32tasks.errors import Esp32TasksError

_P = ParamSpec("_P")


def reported(func: Callable[_P, None]) -> Callable[_P, Any]:
    """Turn our errors into doit failures that print as one message, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Any:
        try:
            func(*args, **kwargs)
        except Esp32TasksError as exc:
            return TaskFailed(str(exc))
        return None

    return wrapper

__all__ = ["Reporter", "fail", "reported"]


def fail(message: str, code: int = 2) -> SystemExit:
    """For errors before any task runs (bad config, no git): one message, non-zero exit."""
    sys.stderr.write(f"error: {message}\n")
    return SystemExit(code)


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
