"""A long build shows it is alive, through a real ``doit``: its lines prefixed with
``-v 2``, a "still building" line without a terminal, one live line on a terminal, and
its log whole either way.

The build is a script that prints, then waits for a file the test writes when it has seen
what it waits for: the test decides when the build ends, nothing is timed. The repository's
``dodo.py`` sets the view's intervals (module constants, internal) to a fraction of a second.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.repo import GIT_ENV, Repo

pytestmark = pytest.mark.integration

GUARD = 120  # seconds: only a guard against a hung run, never a timing guess
EVERY = 0.3  # the view's intervals in this repository

WAITING = "waiting for the test " + "." * 100  # the last line, unfinished, while it waits
#: What the build prints before it waits: both streams, raw bytes, CRLF, colour, and a burst.
BEFORE = (b"configuring esp32c3\n" + b"warning: on stderr\n" + b"\xff\xfe raw bytes\r\n"
          + b"\x1b[1;32mcoloured\x1b[0m\n"
          + b"".join(b"[%d/2000] cc file%d.c\n" % (i, i) for i in range(1, 2001))
          + WAITING.encode())

SLOW = '''\
import os, subprocess, sys, time
out = sys.stdout.buffer
out.write(b"configuring esp32c3\\n"); out.flush()
sys.stderr.buffer.write(b"warning: on stderr\\n"); sys.stderr.flush()
out.write(b"\\xff\\xfe raw bytes\\r\\n\\x1b[1;32mcoloured\\x1b[0m\\n")
for i in range(1, 2001):
    out.write(b"[%d/2000] cc file%d.c\\n" % (i, i))
out.write({waiting!r}); out.flush()
while not os.path.exists({release!r}):  # the test writes it when it has seen enough
    time.sleep(0.02)
out.write(b"\\n"); out.flush()
subprocess.run([sys.executable, "tools/build.py", *sys.argv[1:]], check=True)
'''

DODO = f'''\
from esp32tasks.tasks import *  # noqa: F403

import esp32tasks.build.progress as _progress  # tests only: the intervals, shortened

_progress.QUIET = _progress.EVERY = {EVERY}
_progress.REDRAW = 0.1
'''


@pytest.fixture
def slow(repo: Repo) -> Path:
    """One target, built by a script that waits for the returned path to exist."""
    release = repo.path.parent / "release-the-build"
    repo.write("examples/hello/tools/slow.py",
               SLOW.format(waiting=WAITING.encode(), release=str(release)))
    repo.edit("targets.toml", '"tools/build.py"', '"tools/slow.py"')
    text = repo.read("targets.toml")
    repo.write("targets.toml", text[:text.index('[[targets]]\nname = "esp32c6"')])
    repo.write("dodo.py", DODO)
    repo.commit("a slow build of esp32c3")
    return release


class Doit:
    """``doit`` running in the background, its output read as it comes.

    Run in its own session (as the kill trials do), so what is left of it at the end is
    stopped as one group.
    """

    def __init__(self, repo: Repo, *args: str, terminal: bool = False, cols: int = 60) -> None:
        env = {**os.environ, **GIT_ENV, "HOME": str(repo.path.parent / "home"), **repo.env}
        self.text = {"stdout": "", "stderr": "", "terminal": ""}
        self.changed = threading.Condition()
        argv = [sys.executable, "-m", "doit", *args]
        if terminal:
            leader, follower = pty.openpty()
            fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
            self.proc = subprocess.Popen(argv, cwd=repo.path, env=env, stdin=subprocess.DEVNULL,
                                         stdout=follower, stderr=follower,
                                         start_new_session=True)
            os.close(follower)
            self.readers = [self._read(leader, "terminal", lambda: os.close(leader))]
        else:
            self.proc = subprocess.Popen(argv, cwd=repo.path, env=env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         start_new_session=True)
            assert self.proc.stdout is not None
            assert self.proc.stderr is not None
            self.readers = [self._read(self.proc.stdout.fileno(), "stdout", self.proc.stdout.close),
                            self._read(self.proc.stderr.fileno(), "stderr", self.proc.stderr.close)]

    def _read(self, fd: int, name: str, close: Callable[[], None]) -> threading.Thread:
        def loop() -> None:
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the last holder of the terminal is gone
                    data = b""
                if not data:
                    break
                with self.changed:
                    self.text[name] += data.decode(errors="replace")
                    self.changed.notify_all()
            close()
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        return thread

    def wait_for(self, name: str, pattern: str) -> re.Match[str]:
        """The first match of ``pattern`` in what ``name`` printed, once it is there."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            match = re.search(pattern, self.text[name], re.MULTILINE)
            found[:] = [match] if match else []
            return bool(found) or self.proc.poll() is not None

        with self.changed:
            assert self.changed.wait_for(seen, timeout=GUARD), \
                f"{pattern!r} not printed within {GUARD} s:\n{self.text}"
        assert found, f"doit ended without printing {pattern!r}:\n{self.text}"
        return found[0]

    def end(self) -> int:
        code = self.proc.wait(timeout=GUARD)
        for reader in self.readers:
            reader.join(timeout=GUARD)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


Start = Callable[..., Doit]


@pytest.fixture
def start(repo: Repo, slow: Path) -> Iterator[Start]:
    """``start(*doit_args, terminal=False, cols=60)``: doit in the slow repository."""
    runs: list[Doit] = []

    def started(*args: str, terminal: bool = False, cols: int = 60) -> Doit:
        runs.append(Doit(repo, *args, terminal=terminal, cols=cols))
        return runs[-1]

    yield started
    slow.touch()  # a failed test lets its build end too
    for run in runs:
        run.stop()


def log_of(repo: Repo) -> bytes:
    return (repo.path / "build/esp32c3/build.log").read_bytes()


def assert_log_whole(repo: Repo) -> bytes:
    """The log: the argv line runner writes, then every byte the build printed."""
    log = log_of(repo)
    first, _, rest = log.partition(b"\n")
    assert first.startswith(b"$ python3 tools/slow.py --target esp32c3 ")
    assert rest.startswith(BEFORE + b"\n"), "the log holds what the build printed, as it was"
    assert b"Successfully created ESP32-C3 image." in rest, "and to its end"
    return rest


def test_with_v2_every_line_streams_prefixed_as_it_comes(start: Start, slow: Path,
                                                         repo: Repo) -> None:
    run = start("-v", "2", "release")
    run.wait_for("stdout", r"^esp32c3 \| \[2000/2000\] cc file2000\.c$")
    assert not slow.exists(), "streamed while the build still runs"
    slow.touch()
    assert run.end() == 0, run.text
    rest = assert_log_whole(repo)
    streamed = [line.removeprefix("esp32c3 | ") for line in run.text["stdout"].splitlines()
                if line.startswith("esp32c3 | ")]
    assert streamed == [line.removesuffix("\r") for line in
                        rest.decode(errors="replace").splitlines()], \
        "every line of the log, in order"
    assert "still building" not in run.text["stderr"]
    assert "\x1b[K" not in run.text["stderr"]


def test_without_a_terminal_a_still_building_line_now_and_then(start: Start, slow: Path,
                                                               repo: Repo) -> None:
    run = start("release")
    line = run.wait_for(
        "stderr", r"^build:esp32c3: still building \((\d+)s\): waiting for the test \.+$")
    assert line[0].endswith(": " + WAITING), "the last line, the unfinished one"
    slow.touch()
    assert run.end() == 0, run.text
    assert_log_whole(repo)
    lines = run.text["stderr"].splitlines()
    assert lines, run.text
    assert all(re.fullmatch(r"build:esp32c3: still building \(\d+s\)(: .*)?", x)
               for x in lines), run.text["stderr"]
    assert "\r" not in run.text["stderr"]
    assert "\x1b" not in run.text["stderr"]
    assert "esp32c3 | " not in run.text["stdout"], "nothing streams at doit's verbosity 1"


def test_on_a_terminal_one_live_line_fitted_then_erased(start: Start, slow: Path,
                                                        repo: Repo) -> None:
    run = start("release", terminal=True, cols=60)
    live = run.wait_for("terminal",
                        r"\r(  build:esp32c3  \d+s  waiting for the test \.+)\x1b\[K")
    assert len(live[1]) == 59, "cut to the terminal's width, less its last column"
    slow.touch()
    assert run.end() == 0, run.text
    assert_log_whole(repo)
    shown = run.text["terminal"]
    after = shown[shown.rindex("  build:esp32c3  "):]
    assert "\r\x1b[K" in after, "the live line is erased when the build ends"
    assert re.match(r"\.  (tag|upload):esp32c3\r\n", after[after.index("\r\x1b[K") + 4:]), \
        "and doit's next line starts on a clean line"
    assert "still building" not in shown
