"""The one boundary between our errors and doit.

Domain code raises :class:`~esp32tasks.errors.Esp32TasksError` subclasses and knows
nothing of doit. Here, and only here, they become doit's: :class:`Action` wraps every
action and clean action a task dict holds (a failure is one ``error: <task>: <message>``
line from the reporter), and :func:`generating` turns an error while the tasks are made
(bad config, no git) into one ``error:`` line and exit code 2.

The filesystem's refusals are not bugs either: :func:`explain` turns an :class:`OSError`
of a disk that is full, read-only or not ours to write, or a directory where a file belongs
(or the reverse), into one line naming the file, the errno's meaning and the fix. Both
wrappers and the state backend use it; any other ``OSError`` (``ENOENT`` included: our
code expects every file it reads, or checks first) is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import Any, Final, NoReturn

from doit.exceptions import TaskFailed

from esp32tasks.errors import Esp32TasksError
from esp32tasks.plan import Step

__all__ = ["FILESYSTEM_ERRNOS", "Action", "explain", "generating"]


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

    def __call__(self) -> TaskFailed | dict[str, Any] | None:
        """The function's failure as doit's ``TaskFailed``; a dict it returns is doit's
        task values (the bytes a publishing task sent, for the summary)."""
        try:
            result = self.function(*self.args)
        except Esp32TasksError as exc:
            return TaskFailed(str(exc))
        except OSError as exc:
            message = explain(exc)
            if message is None:
                raise  # not the filesystem's refusal: a bug, with its traceback
            return TaskFailed(message)
        return result if isinstance(result, dict) else None

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
        _fail(str(exc))
    except OSError as exc:
        message = explain(exc)
        if message is None:
            raise
        _fail(message)


def _fail(message: str) -> NoReturn:
    """Outside any task: print one ``error:`` line and exit with code 2."""
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(2) from None


#: What the filesystem says about the machine, not about our code: the disk is full (or
#: the quota), read-only, not ours to write, failing, or holds a directory where we write a
#: file (or a file where we need a directory). Not ENOENT: a file we read and did not check
#: for is a path bug, and its traceback is what finds it.
FILESYSTEM_ERRNOS: Final = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR,
    errno.ENOTDIR, errno.EIO})

_AGAIN: Final = "run `doit release` again"


def explain(exc: OSError, *, elsewhere: str = "") -> str | None:
    """One line for the filesystem's refusal: the file, the errno's meaning, the fix.

    None when ``exc`` is not one of :data:`FILESYSTEM_ERRNOS` (a bug: let it through).
    ``elsewhere`` is a second way out for a file that can live elsewhere (doit's state),
    offered when the disk cannot be written at all.
    """
    code = exc.errno
    path = None if exc.filename is None else os.fsdecode(exc.filename)
    if code == errno.EEXIST and path and os.path.lexists(path) \
            and not Path(path).is_dir():
        # mkdir's answer when a file is where a directory belongs (build/oci a file, say)
        return (f"{_shown(path)}: is a file where esp32tasks needs a directory: remove or "
                f"rename it and {_AGAIN}")
    if code not in FILESYSTEM_ERRNOS:
        return None
    if path is None and code in (errno.EACCES, errno.EPERM):
        return None  # a socket, a signal, a capability: not a file's, so not ours to say
    meaning = os.strerror(code)
    meaning = meaning[0].lower() + meaning[1:]
    shown = f"{_shown(path)}: {meaning}" if path else meaning
    where = f"the filesystem at {_mount_point(path)}" if path else "the disk esp32tasks writes to"
    if code == errno.ENOSPC:
        fix = f"free space on {where} and {_AGAIN}"
    elif code == errno.EDQUOT:
        fix = f"free space within your quota on {where} and {_AGAIN}"
    elif code == errno.EROFS:
        fix = f"make {where} writable and {_AGAIN}"
    elif code in (errno.EACCES, errno.EPERM):
        fix = (f"give user {_user()} write access to it and its directory (chown or chmod), "
               f"then {_AGAIN}")
    elif code == errno.EISDIR:
        fix = f"esp32tasks writes a file there: remove or rename the directory and {_AGAIN}"
    elif code == errno.ENOTDIR:
        blocker = _file_in_the_way(path) if path else None
        fix = (f"{_shown(blocker) if blocker else 'a file on its path'} is a file where "
               f"esp32tasks needs a directory: remove or rename it and {_AGAIN}")
    else:  # EIO
        fix = f"check the disk behind {where} (the kernel log says more), then {_AGAIN}"
    if elsewhere and code in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = f"{fix}; or {elsewhere}"
    return f"{shown}; {fix}"


def _shown(path: str) -> str:
    """A path as the user typed it: relative to the working directory when inside it."""
    absolute = os.path.abspath(path)  # noqa: PTH100  # lexical, like the path we were given
    cwd = os.getcwd()  # noqa: PTH109
    if cwd != "/" and absolute.startswith(cwd + "/"):
        return absolute[len(cwd) + 1:]
    return path


def _mount_point(path: str) -> str:
    """Where the filesystem holding ``path`` (or its nearest existing parent) is mounted.

    From ``/proc/self/mountinfo`` where there is one: a bind mount (read-only over a
    read-write disk) shares its device number with the disk, so ``st_dev`` cannot tell it.
    """
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as table:  # noqa: PTH123
            points = [_unescape(line.split(" ", 5)[4]) for line in table]
    except (OSError, IndexError):
        points = []
    inside = [p for p in points if real == p or real.startswith(p.rstrip("/") + "/")]
    if inside:
        return max(inside, key=len)
    here = real  # elsewhere: climb while the device stays the same
    while not os.path.exists(here):  # noqa: PTH110
        here = os.path.dirname(here)  # noqa: PTH120
    with contextlib.suppress(OSError):
        device = os.stat(here).st_dev  # noqa: PTH116
        while here != "/" and os.stat(os.path.dirname(here)).st_dev == device:  # noqa: PTH116, PTH120
            here = os.path.dirname(here)  # noqa: PTH120
    return here


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in a path as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def _file_in_the_way(path: str) -> str | None:
    """The first part of ``path`` that exists and is not a directory."""
    parts = Path(path)
    for parent in reversed(parts.parents):
        if parent.exists() and not parent.is_dir():
            return str(parent)
    return None


def _user() -> str:
    import pwd  # only on this error's path

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"
