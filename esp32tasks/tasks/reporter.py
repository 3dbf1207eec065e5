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
    """Like doit's, but an expected failure (``TaskFailed``) is one ``error:`` block, and a
    run of ``release`` ends with its summary (:mod:`esp32tasks.summary`)."""

    def __init__(self, outstream: Any, options: Any) -> None:
        super().__init__(outstream, options)
        self.ran: set[str] = set()
        self.sent: dict[str, int] = {}
        self.before: dict[str, str | None] | None = None
        self.released = False

    def execute_task(self, task: Any) -> None:
        if self.before is None and task.actions:  # what the images were, before any work
            from esp32tasks import summary
            from esp32tasks.tasks.session import current

            self.before = summary.digests(current().plan)
        super().execute_task(task)

    def add_success(self, task: Any) -> None:
        if task.name in _RELEASES:
            self.released = True
        if task.actions:
            self.ran.add(task.name)
        sent = (task.values or {}).get("sent")
        if isinstance(sent, int):
            self.sent[task.name] = sent
        super().add_success(task)

    def skip_uptodate(self, task: Any) -> None:
        if task.name in _RELEASES:
            self.released = True
        super().skip_uptodate(task)

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
        if self.released and not self.failures and not self.runtime_errors:
            self._summary()
        # the message was printed when it happened; don't repeat it in a summary block
        self.failures: list[dict[str, Any]] = [f for f in self.failures if not f.get("reported")]
        super().complete_run()

    def _summary(self) -> None:
        from esp32tasks import summary
        from esp32tasks.tasks.session import current

        plan = current().plan
        if not self.ran - {"preflight"}:
            self.write(summary.nothing_changed(plan))  # and nothing is written
            return
        facts = summary.collect(plan, self.before or {}, self.ran, self.sent)
        self.write("\n" + summary.text(facts))
        summary.write(plan, facts, plan.release.step_summary)


#: The tasks whose run ends with the summary.
_RELEASES: Final = frozenset({"release", "publish-index"})

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
