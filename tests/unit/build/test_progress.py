"""The view of a long command: its lines, the live line and the plain one, on a clock the
tests move; which view doit's streams ask for; the thread that follows the log."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from doit.task import Stream, Task

from esp32tasks.build import progress
from esp32tasks.build.progress import (
    Mode,
    Progress,
    clean,
    duration,
    live_line,
    mode_of,
    plain_line,
    watching,
)
from esp32tasks.build.runner import run
from esp32tasks.errors import CommandFailed

TASK = "build:esp32c3"
EVENT_TIMEOUT = 30  # a guard against a hang, never a timing guess


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder(io.StringIO):
    """A stream that keeps each write apart, and sets ``seen`` once ``wanted`` was written."""

    def __init__(self, wanted: str = "") -> None:
        super().__init__()
        self.writes: list[str] = []
        self.wanted = wanted
        self.seen = threading.Event()

    def write(self, text: str) -> int:
        self.writes.append(text)
        n = super().write(text)
        if self.wanted and self.wanted in self.getvalue():
            self.seen.set()
        return n


def view(mode: Mode, **kwargs: Any) -> tuple[Progress, Recorder, Clock]:
    clock, out = Clock(), Recorder()
    return Progress(TASK, mode, out, clock=clock, width=lambda: 60, **kwargs), out, clock


# -- the lines ------------------------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (2.99, "2s"), (59.9, "59s"), (60, "1m00s"), (90, "1m30s"), (3599, "59m59s"),
    (3600, "1h00m00s"), (7505, "2h05m05s"), (-1, "0s")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(("line", "text"), [
    (b"  [3/40] Building C object main.c.o  ", "[3/40] Building C object main.c.o"),
    (b"\x1b[1;31merror:\x1b[0m boom\r", "error: boom"),
    (b"Writing 10%\rWriting 20%\r", "Writing 20%"),  # what a terminal would show
    (b"a\tb\x07c\x1b]0;title\x07", "a bc"),
    (b"\xff\xfe raw", "\ufffd\ufffd raw"),
    (b"\r \r", ""),
])
def test_clean_makes_one_line_of_plain_text(line: bytes, text: str) -> None:
    assert clean(line) == text


def test_live_line_is_cut_to_the_terminal_width_less_one() -> None:
    assert live_line(TASK, 12.5, "compiling main.c", 80) == "  build:esp32c3  12s  compiling main.c"
    assert live_line(TASK, 12.5, "", 80) == "  build:esp32c3  12s"
    line = live_line(TASK, 75, "x" * 200, 40)
    assert line == "  build:esp32c3  1m15s  " + "x" * 15
    assert len(line) == 39


def test_plain_line_names_the_task_the_time_and_the_last_line() -> None:
    assert plain_line(TASK, 90, "linking hello.elf") == \
        "build:esp32c3: still building (1m30s): linking hello.elf"
    assert plain_line(TASK, 30, "") == "build:esp32c3: still building (30s)"
    long = plain_line(TASK, 30, "y" * 500)
    assert long.endswith("y" * 197 + "...")
    assert len(long) == len("build:esp32c3: still building (30s): ") + 200


# -- the three views on a clock the test moves ---------------------------------------------

def test_live_shows_nothing_before_quiet_then_one_line_rewritten_then_erased() -> None:
    p, out, clock = view(Mode.LIVE, quiet=3, redraw=0.5)
    start = clock.now
    p.feed(b"configuring\n[1/9] cc a.c\n")
    clock.now = start + 2.9
    p.tick()
    assert out.writes == []  # a short build shows nothing
    clock.now = start + 3
    p.tick()
    assert out.writes == ["\r  build:esp32c3  3s  [1/9] cc a.c\x1b[K"]
    p.feed(b"[2/9] cc b.c\n")
    clock.now = start + 3.4
    p.tick()
    assert len(out.writes) == 1, "rewritten at most every REDRAW seconds"
    clock.now = start + 3.5
    p.tick()
    assert out.writes[-1] == "\r  build:esp32c3  3s  [2/9] cc b.c\x1b[K"
    clock.now = start + 4.25
    p.tick()
    assert out.writes[-1] == "\r  build:esp32c3  4s  [2/9] cc b.c\x1b[K"
    clock.now = start + 4.9
    p.tick()
    assert len(out.writes) == 3, "the same text is not written again"
    clock.now = start + 5
    p.tick()
    assert out.writes[-1] == "\r  build:esp32c3  5s  [2/9] cc b.c\x1b[K"
    p.finish()
    assert out.writes[-1] == "\r\x1b[K"
    p.finish()
    assert out.writes.count("\r\x1b[K") == 1


def test_live_line_fits_the_terminal() -> None:
    p, out, _ = view(Mode.LIVE, quiet=0)
    p.feed(b"z" * 300 + b"\n")
    p.tick()
    assert out.writes == ["\r" + ("  build:esp32c3  0s  " + "z" * 300)[:59] + "\x1b[K"]


def test_a_short_live_build_leaves_the_terminal_alone() -> None:
    p, out, clock = view(Mode.LIVE, quiet=3)
    p.feed(b"done\n")
    clock.now += 1
    p.tick()
    p.finish()
    assert out.writes == []


def test_plain_writes_a_line_at_most_every_interval() -> None:
    p, out, clock = view(Mode.PLAIN, every=30)
    start = clock.now
    p.feed(b"[1/9] cc a.c\n")
    clock.now = start + 29.9
    p.tick()
    assert out.writes == []
    clock.now = start + 30
    p.tick()
    p.tick()
    assert out.writes == ["build:esp32c3: still building (30s): [1/9] cc a.c\n"]
    p.feed(b"[9/9] link hello.elf\n")
    clock.now = start + 59.9
    p.tick()
    assert len(out.writes) == 1
    clock.now = start + 90
    p.tick()
    assert out.writes[-1] == "build:esp32c3: still building (1m30s): [9/9] link hello.elf\n"
    p.finish()
    assert len(out.writes) == 2, "nothing to erase without a terminal"
    assert "\r" not in out.getvalue()
    assert "\x1b" not in out.getvalue()


def test_the_last_line_is_the_last_with_text_the_unfinished_one_included() -> None:
    p, _, _ = view(Mode.PLAIN)
    p.feed(b"one\ntw")
    assert p.last() == "tw"
    p.feed(b"o\n\n   \n")
    assert p.last() == "two", "blank lines don't hide the last one"
    p.feed(b"\x1b[32m\x1b[0m")
    assert p.last() == "two"
    p.feed(b"." * 10_000)
    assert p.last() == "." * 4096, "an endless unfinished line is kept to its end"


def test_stream_writes_every_line_prefixed_as_it_comes() -> None:
    p, out, clock = view(Mode.STREAM)
    p.feed(b"first\nsec")
    assert out.getvalue() == "esp32c3 | first\n"
    p.feed(b"ond\r\n\n\xffraw\nunfinished")
    clock.now += 100
    p.tick()  # no "still building" when every line is shown
    assert out.getvalue() == ("esp32c3 | first\nesp32c3 | second\nesp32c3 | \n"
                              "esp32c3 | \ufffdraw\n")
    p.finish()
    assert out.getvalue().endswith("esp32c3 | \ufffdraw\nesp32c3 | unfinished\n")


def test_stream_writes_whole_lines_in_chunks_a_pipe_takes_whole() -> None:
    p, out, _ = view(Mode.STREAM)
    lines = [f"line {i} ".encode() + b"x" * (i % 97) for i in range(3000)]
    p.feed(b"\n".join(lines) + b"\n")
    assert len(out.writes) > 1
    assert all(w.endswith("\n") and len(w.encode()) <= 4096 for w in out.writes)
    assert out.getvalue().splitlines() == [f"esp32c3 | {line.decode()}" for line in lines]


# -- which view: doit's own streams at each verbosity ----------------------------------------

@contextmanager
def console(tmp_path: Path, kind: str) -> Iterator[None]:
    """sys.stdout and sys.stderr as doit would find them: files, or a terminal (a pty).

    Set in the test's body: pytest puts its own capture back between a fixture and the test.
    """
    leader = None
    if kind == "terminal":  # nothing is read back: only isatty() matters
        leader, follower = pty.openpty()  # the leader stays open: a pty without one is no tty
        streams = [os.fdopen(follower, "w"), os.fdopen(os.dup(follower), "w")]
    else:
        streams = [(tmp_path / n).open("w") for n in ("stdout", "stderr")]
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = streams
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
        for stream in streams:
            with suppress(OSError):
                stream.close()
        if leader is not None:
            os.close(leader)


def doit_sees(verbosity: int) -> Mode | None:
    """The view an action picks inside doit's own PythonAction, at ``verbosity``."""
    seen: list[Mode | None] = []
    task = Task("probe", [(lambda: seen.append(mode_of(sys.stdout, sys.stderr)),)],
                verbosity=verbosity)
    assert task.execute(Stream(verbosity)) is None
    return seen[0]


def test_doit_lets_stdout_through_at_2_and_stderr_at_1(tmp_path: Path) -> None:
    with console(tmp_path, "files"):
        seen = [doit_sees(v) for v in (2, 1, 0)]
    assert seen == [Mode.STREAM, Mode.PLAIN, None]


def test_on_a_terminal_doits_default_verbosity_is_the_live_line(tmp_path: Path) -> None:
    assert Task.DEFAULT_VERBOSITY == 1
    with console(tmp_path, "terminal"):
        seen = [doit_sees(v) for v in (2, 1, 0)]
    assert seen == [Mode.STREAM, Mode.LIVE, None]


def test_a_capture_is_no_console() -> None:
    assert mode_of(io.StringIO(), io.StringIO()) is None
    assert mode_of(None, None) is None


# -- the thread that follows the log ---------------------------------------------------------

def test_watching_follows_the_log_as_it_grows_and_reads_it_to_the_end(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_bytes(b"$ make\n")
    out = Recorder(wanted="esp32c3 | compiling\n")
    p = Progress(TASK, Mode.STREAM, out)
    with log.open("ab") as cmd, watching(log, len(b"$ make\n"), p, poll=0.01):
        cmd.write(b"compiling\n")
        cmd.flush()
        assert out.seen.wait(EVENT_TIMEOUT), "a line written while it runs is shown"
        cmd.write(b"linking\nno newline")
        cmd.flush()
    # all that was written before the block ended, the unfinished line too
    assert out.getvalue() == "esp32c3 | compiling\nesp32c3 | linking\nesp32c3 | no newline\n"


def test_a_view_that_cannot_be_written_is_dropped_quietly(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_bytes(b"")
    out = Recorder()
    out.close()
    with watching(log, 0, Progress(TASK, Mode.STREAM, out), poll=0.01) as done:
        log.write_bytes(b"a line\n")
    assert done is None


# -- through the runner ------------------------------------------------------------------------

def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


ENV = {"PATH": os.environ.get("PATH", "")}


def test_run_streams_prefixed_and_the_log_stays_the_commands(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    argv = python("import sys; print('out'); sys.stdout.flush(); "
                  "sys.stderr.write('err\\n'); sys.stderr.flush(); "
                  "sys.stdout.buffer.write(b'\\xff\\r\\nlast')")
    with console(tmp_path, "files"):
        run(argv, cwd=tmp_path, env=ENV, log=log, log_label="build.log", task=TASK)
    assert log.read_bytes() == ("$ " + " ".join(argv) + "\n").encode() + \
        b"out\nerr\n\xff\r\nlast"
    assert (tmp_path / "stdout").read_text() == \
        "esp32c3 | out\nesp32c3 | err\nesp32c3 | \ufffd\nesp32c3 | last\n"


def test_run_fails_as_before_with_a_view(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    argv = python("import sys; print('boom'); sys.exit(4)")
    threads = threading.active_count()
    with console(tmp_path, "files"), pytest.raises(CommandFailed) as info:
        run(argv, cwd=tmp_path, env=ENV, log=log, log_label="build.log", task=TASK)
    assert str(info.value) == (f"'{sys.executable}' exited with code 4; last lines of "
                               f"build.log:\n    $ {' '.join(argv)}\n    boom")
    with console(tmp_path, "files"), pytest.raises(CommandFailed, match="command not found"):
        run(["no-such-program-esp32tasks"], cwd=tmp_path, env={"PATH": str(tmp_path)},
            log=log, log_label="build.log", task=TASK)
    assert threading.active_count() == threads, "no thread outlives its run"


def test_run_without_a_console_starts_no_thread(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()  # doit's capture at -v 0
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    started = []
    monkeypatch.setattr(progress, "watching", lambda *a, **k: started.append(a))
    run(python("print('quiet')"), cwd=tmp_path, env=ENV, log=tmp_path / "build.log",
        log_label="build.log", task=TASK)
    assert started == []
    assert stdout.getvalue() == stderr.getvalue() == ""


# -- the no-op budget -------------------------------------------------------------------------

def test_making_the_tasks_does_not_import_the_view() -> None:
    """A no-op release imports the runner (the build action does) but never the view."""
    code = ("import sys, esp32tasks.tasks, esp32tasks.build.runner; "
            "print('esp32tasks.build.progress' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
