"""Our reporter: an expected failure is one ``error:`` line; doit's reporter does the rest."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import pytest
from doit.exceptions import DependencyError, TaskError, TaskFailed
from doit.reporter import ConsoleReporter
from doit.task import Task

from esp32tasks.tasks import DOIT_CONFIG
from esp32tasks.tasks.reporter import Reporter

MESSAGE = ("registry registry.test:5000 refused PUT of manifest esp32c3-hello-1.0.0-0123456: "
           "400 Bad Request")


def reporter(failure_verbosity: int = 0) -> tuple[Reporter, io.StringIO]:
    """As doit's run command makes it: the output stream, and its options."""
    out = io.StringIO()
    return Reporter(out, {"failure_verbosity": failure_verbosity}), out


def task(name: str) -> Task:
    made = Task(name, [(lambda: None)], verbosity=0)  # 0: doit would show its output
    made.executed = True
    return made


def fail(message: str) -> None:
    raise RuntimeError(message)


def caught(message: str) -> TaskFailed:
    """A failure as doit records it for an exception an action raised (with its traceback)."""
    try:
        fail(message)
    except RuntimeError as exc:
        return TaskFailed("unexpected", exc)
    raise AssertionError("unreachable")


def test_it_is_doits_reporter_and_the_one_we_configure() -> None:
    assert issubclass(Reporter, ConsoleReporter)
    assert DOIT_CONFIG["reporter"] is Reporter


def test_our_failure_is_one_error_line_without_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    report, out = reporter()
    push = task("push:esp32c3")
    report.add_failure(push, TaskFailed(MESSAGE))
    assert capsys.readouterr().err == f"error: push:esp32c3: {MESSAGE}\n"
    report.complete_run()
    assert out.getvalue() == ""
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")


def test_a_message_of_several_lines_is_kept_whole(capsys: pytest.CaptureFixture[str]) -> None:
    report, out = reporter()
    message = "registry.test/x:hello-1.0.0 differs from this build:\n  esp32c3: ok"
    report.add_failure(task("verify"), TaskFailed(message))
    report.complete_run()
    assert capsys.readouterr().err == f"error: verify: {message}\n"
    assert out.getvalue() == ""


def test_other_failures_are_doits(capsys: pytest.CaptureFixture[str]) -> None:
    ours, out = reporter()
    theirs_out = io.StringIO()
    theirs = ConsoleReporter(theirs_out, {"failure_verbosity": 0})
    for report in (ours, theirs):
        report.add_failure(task("build:esp32c3"), caught("boom"))
        report.add_failure(task("tag:esp32c3"), TaskError("dependency missing"))
        report.complete_run()
    assert out.getvalue() == theirs_out.getvalue()
    assert "TaskFailed - taskid:build:esp32c3\nunexpected\nTraceback" in out.getvalue()
    assert "RuntimeError: boom" in out.getvalue()
    assert "TaskError - taskid:tag:esp32c3\ndependency missing\n" in out.getvalue()
    assert "error:" not in capsys.readouterr().err


def test_only_our_failures_leave_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    report, out = reporter(failure_verbosity=2)
    report.add_failure(task("push:esp32c3"), TaskFailed(MESSAGE))
    report.add_failure(task("build:esp32c6"), caught("boom"))
    assert [f["task"].name for f in report.failures] == ["push:esp32c3", "build:esp32c6"]
    before = out.getvalue()
    report.complete_run()
    summary = out.getvalue()[len(before):]
    assert [f["task"].name for f in report.failures] == ["build:esp32c6"]
    assert summary.startswith("#" * 40 + "\nTaskFailed - taskid:build:esp32c6\n")
    assert "push:esp32c3" not in out.getvalue()
    assert MESSAGE not in out.getvalue()
    assert capsys.readouterr().err == f"error: push:esp32c3: {MESSAGE}\n"


def test_a_failure_doit_does_not_report_is_not_reported(
        capsys: pytest.CaptureFixture[str]) -> None:
    report, out = reporter()
    report.add_failure(task("build:esp32c3"), TaskError("skipped", report=False))
    report.complete_run()
    assert out.getvalue() == ""
    assert capsys.readouterr().err == ""


def dependency_error(exc: OSError) -> DependencyError:
    """As doit makes one: it keeps the traceback's text, not the exception."""
    try:
        raise exc
    except OSError as raised:
        return DependencyError("ERROR: Task 'build:esp32c3' checking dependencies", raised)


def test_a_file_doit_may_not_read_while_checking_is_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """doit hashes file_dep itself: a source it may not read fails there, not in an action."""
    source = tmp_path / "main.c"
    report, out = reporter()
    report.add_failure(task("build:esp32c3"), dependency_error(
        PermissionError(errno.EACCES, "Permission denied", str(source))))
    report.complete_run()
    err = capsys.readouterr().err
    assert err.startswith(f"error: build:esp32c3: {source}: permission denied; give user ")
    assert err.count("\n") == 1
    assert out.getvalue() == ""
    # an OSError that is no refusal of the filesystem stays doit's report, traceback and all
    report, out = reporter()
    report.add_failure(task("build:esp32c3"), dependency_error(
        FileNotFoundError(errno.ENOENT, "No such file or directory", str(source))))
    assert "DependencyError - taskid:build:esp32c3" in out.getvalue()
