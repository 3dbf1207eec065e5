"""What a long command shows while it runs: its output, or a sign that it is alive.

The command writes its log itself (:func:`esp32tasks.build.runner.run` hands it the file)
and a thread here follows that file: the log is byte for byte what the command wrote
whatever becomes of the view, and a command that leaves a process behind holding its
output never keeps us waiting for an end of file. Where the view goes is read off the
streams doit lets through to the action (:func:`mode_of`):

- stdout reaches a file or terminal (``doit -v 2``): every line, as it comes, prefixed
  (``esp32c3 | ...``);
- else stderr is a terminal (doit's default verbosity, 1): after :data:`QUIET` seconds, one
  line rewritten in place (``  build:esp32c3  12s  <last line>``), cleared at the end;
- else stderr is a file or pipe (CI): a line at most every :data:`EVERY` seconds
  (``build:esp32c3: still building (1m30s): <last line>``);
- else (``doit -v 0``: doit keeps both to itself) nothing, and no thread.

The timings are module constants, read when a run starts; tests set them (internal).
Imported only by :func:`esp32tasks.build.runner.run` when a command starts: never on a
no-op release.
"""

from __future__ import annotations

import enum
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Final, TextIO, TypeGuard

__all__ = ["EVERY", "POLL", "QUIET", "REDRAW", "Mode", "Progress", "clean", "duration",
           "live_line", "mode_of", "plain_line", "show", "terminal_width", "watching"]

#: A run shorter than this shows nothing on a terminal (seconds).
QUIET: float = 3.0
#: Without a terminal, one "still building" line at most this often (seconds).
EVERY: float = 30.0
#: The live line is rewritten at most this often (seconds).
REDRAW: float = 0.5
#: How often the log is read for what the command wrote (seconds).
POLL: float = 0.1

#: Bytes of a line still unfinished kept for the view (a progress bar of dots, say).
_PARTIAL_KEPT: Final = 4096
#: Without a terminal there is no width: the last line is cut here.
_PLAIN_WIDTH: Final = 200
#: Streamed lines are written and flushed in chunks of whole lines, this many characters at
#: most: a pipe takes a write of up to PIPE_BUF (4096) bytes whole, so the lines of
#: parallel builds don't cut into each other (build output is nearly always ASCII).
_CHUNK: Final = 4000
#: A terminal's escape sequences (CSI, OSC, two-byte), then any other control character.
_ESCAPES: Final = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
                             r"|\x1b[@-_]?|[\x00-\x08\x0a-\x1f\x7f]")


class Mode(enum.Enum):
    STREAM = "stream"  # every line, prefixed, to stdout
    LIVE = "live"      # one line rewritten in place on the terminal (stderr)
    PLAIN = "plain"    # a "still building" line now and then (stderr)


def _reaches_a_file(stream: TextIO | None) -> TypeGuard[TextIO]:
    """Whether what is written to ``stream`` reaches a file descriptor (terminal, pipe,
    file). doit's capture (its ``Writer`` with no original stream, or a ``StringIO``)
    has none: ``fileno()`` raises ``io.UnsupportedOperation``."""
    try:
        return stream is not None and stream.fileno() >= 0
    except (OSError, ValueError, AttributeError):  # UnsupportedOperation is both, or closed
        return False


def mode_of(stdout: TextIO | None, stderr: TextIO | None) -> Mode | None:
    """The view for an action whose ``sys.stdout`` and ``sys.stderr`` are these.

    doit (``Stream._get_out_err``, ``PythonAction.execute``) hands a python-action a
    stdout that reaches the console only at verbosity 2, and a stderr that does at 1 and 2;
    a captured one has no file descriptor, and ``isatty()`` of one that reaches the console
    answers for the console.
    """
    if _reaches_a_file(stdout):
        return Mode.STREAM
    if _reaches_a_file(stderr):
        try:
            return Mode.LIVE if stderr.isatty() else Mode.PLAIN
        except (OSError, ValueError):
            return Mode.PLAIN
    return None


def duration(seconds: float) -> str:
    """``7s``, ``1m30s``, ``2h05m00s`` (whole seconds, rounded down)."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s"


def clean(line: bytes) -> str:
    """A line of output as one line of plain text: its last carriage-return segment with
    text in it (what a terminal would show), without escape sequences or control
    characters, tabs as spaces, stripped."""
    text = line.decode(errors="replace").replace("\t", " ")
    segments = [_ESCAPES.sub("", s).strip() for s in text.split("\r")]
    return next((s for s in reversed(segments) if s), "")


def live_line(task: str, elapsed: float, last: str, width: int) -> str:
    """``  build:esp32c3  12s  <last>``, cut to ``width - 1`` columns (writing the last
    column makes some terminals wrap)."""
    line = f"  {task}  {duration(elapsed)}"
    if last:
        line += f"  {last}"
    return line[:max(width - 1, 1)]


def plain_line(task: str, elapsed: float, last: str) -> str:
    """``build:esp32c3: still building (1m30s): <last>``."""
    line = f"{task}: still building ({duration(elapsed)})"
    if last:
        line += ": " + (last if len(last) <= _PLAIN_WIDTH else last[:_PLAIN_WIDTH - 3] + "...")
    return line


def terminal_width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError):
        return 80


class Progress:
    """The view of one run: fed the bytes the command wrote, ticked by the clock.

    Not thread-safe: one thread feeds and ticks it (:func:`watching`'s).
    """

    def __init__(self, task: str, mode: Mode, out: TextIO, *,
                 clock: Callable[[], float] = time.monotonic,
                 width: Callable[[], int] | None = None, quiet: float = QUIET,
                 every: float = EVERY, redraw: float = REDRAW) -> None:
        self.task = task
        self.mode = mode
        self._out = out
        self._clock = clock
        self._width = width or (lambda: terminal_width(out))
        self._every = every
        self._redraw = redraw
        self._prefix = (task.partition(":")[2] or task) + " | "
        self._start = clock()
        self._due = self._start + (quiet if mode is Mode.LIVE else every)
        self._partial = b""   # the line the command has not finished
        self._last = ""       # the last line with text in it
        self._shown = ""      # the live line on the terminal

    def feed(self, data: bytes) -> None:
        """What the command wrote next (any cut: lines may span calls)."""
        if not data:
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        if self.mode is Mode.STREAM:
            self._stream(lines)
            return
        if len(self._partial) > _PARTIAL_KEPT:
            self._partial = self._partial[-_PARTIAL_KEPT:]
        for line in reversed(lines):  # only the last line with text is ever shown
            text = clean(line)
            if text:
                self._last = text
                break

    def last(self) -> str:
        """The last line with text in it, the unfinished one included."""
        return clean(self._partial) or self._last

    def tick(self) -> None:
        """Show that the run is alive, if it is time to."""
        now = self._clock()
        if now < self._due or self.mode is Mode.STREAM:
            return
        elapsed = now - self._start
        if self.mode is Mode.PLAIN:
            self._write(plain_line(self.task, elapsed, self.last()) + "\n")
            self._due = now + self._every
            return
        line = live_line(self.task, elapsed, self.last(), self._width())
        if line != self._shown:
            self._write(f"\r{line}\x1b[K")  # erase what a longer line left
            self._shown = line
            self._due = now + self._redraw

    def finish(self) -> None:
        """The run is over: the unfinished line streamed, the live line erased."""
        if self.mode is Mode.STREAM and self._partial:
            self._stream([self._partial])
            self._partial = b""
        if self._shown:
            self._write("\r\x1b[K")
            self._shown = ""

    def _stream(self, lines: list[bytes]) -> None:
        chunk: list[str] = []
        size = 0
        for line in lines:
            text = self._prefix + line.removesuffix(b"\r").decode(errors="replace") + "\n"
            if chunk and size + len(text) > _CHUNK:
                self._write("".join(chunk))
                chunk, size = [], 0
            chunk.append(text)
            size += len(text)
        if chunk:
            self._write("".join(chunk))

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()


@contextmanager
def watching(log: Path, offset: int, progress: Progress, *,
             poll: float = POLL) -> Iterator[None]:
    """Follow ``log`` from ``offset`` into ``progress`` while the block runs, then read the
    rest and finish the view. The thread only reads the log: if the view cannot be
    written (a closed stream), it stops and the command goes on."""
    stop = threading.Event()
    thread = threading.Thread(target=_follow, args=(log, offset, progress, stop, poll),
                              name=f"progress of {progress.task}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _follow(log: Path, offset: int, progress: Progress, stop: threading.Event,
            poll: float) -> None:
    try:
        with log.open("rb") as f:
            f.seek(offset)
            while True:
                done = stop.is_set()  # before the read: what came before the stop is read
                while data := f.read(1 << 20):
                    progress.feed(data)
                if done:
                    break
                progress.tick()
                stop.wait(poll)
        progress.finish()
    except (OSError, ValueError):
        return  # only the view is lost: the command writes its log itself


def show(task: str, log: Path, offset: int, stdout: TextIO | None,
         stderr: TextIO | None) -> AbstractContextManager[None]:
    """The view of ``task``'s run, whose output goes to ``log`` from ``offset``, for an
    action with these streams (:func:`mode_of`); the timings as the constants are now."""
    mode = mode_of(stdout, stderr)
    out = stdout if mode is Mode.STREAM else stderr
    if mode is None or out is None:
        return nullcontext()
    return watching(log, offset, Progress(task, mode, out, quiet=QUIET, every=EVERY,
                                          redraw=REDRAW), poll=POLL)
