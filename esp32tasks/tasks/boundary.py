"""The one boundary between our errors and doit.

Domain code raises :class:`~esp32tasks.errors.Esp32TasksError` subclasses and knows
nothing of doit. Here, and only here, they become doit's: :class:`Action` wraps every
action and clean action a task dict holds (a failure is one ``error: <task>: <message>``
line from the reporter), and :func:`generating` turns an error while the tasks are made
(bad config, no git) into one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import Any

from doit.exceptions import TaskFailed

from esp32tasks.errors import Esp32TasksError
from esp32tasks.plan import Step

__all__ = ["Action", "generating"]


class Action:
    """A plain module-level function and its arguments, as a doit action.

    Picklable (``doit -n N`` sends actions to worker processes), and printed by doit as
    the function's dotted name with what it acts on, e.g.
    ``esp32tasks.build.action.build(esp32c3)``.
    """

    __slots__ = ("args", "function")

    def __init__(self, function: Callable[..., object], *args: Any) -> None:
        self.function = function
        self.args = args

    def __call__(self) -> TaskFailed | None:
        try:
            self.function(*self.args)
        except Esp32TasksError as exc:
            return TaskFailed(str(exc))
        return None

    @property
    def name(self) -> str:
        """``module.function(what)``."""
        shown = ", ".join(label for label in map(_label, self.args) if label)
        return f"{self.function.__module__}.{self.function.__qualname__}({shown})"

    def __str__(self) -> str:
        # doit prints str(callable)[1:] up to " at ": a leading "<" keeps the name whole
        return f"<{self.name}"

    def __repr__(self) -> str:
        return f"Action({self.name})"


def _label(arg: Any) -> str:
    """How an argument shows in ``doit info`` and ``doit clean``: paths and step names."""
    if isinstance(arg, Path):
        with contextlib.suppress(ValueError):
            return arg.relative_to(Path.cwd()).as_posix()
    if isinstance(arg, PurePath):
        return arg.as_posix()
    if isinstance(arg, str):
        return arg
    return arg.name if isinstance(arg, Step) else ""


@contextlib.contextmanager
def generating() -> Iterator[None]:
    """While tasks are made: one of our errors is one ``error:`` line and exit code 2."""
    try:
        yield
    except Esp32TasksError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
