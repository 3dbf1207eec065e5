"""The one command runner: argv and output in the log, one error type with the log's tail."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from esp32tasks.build.runner import TAIL_LINES, run, tail
from esp32tasks.errors import CommandFailed

LABEL = "build/esp32c3/build.log"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "UNIT_VALUE": "from-env"}


def test_the_log_holds_the_argv_line_then_stdout_and_stderr(tmp_path: Path) -> None:
    log = tmp_path / "build" / "esp32c3" / "build.log"
    argv = python("import os, sys; print('out', os.environ['UNIT_VALUE']); "
                  "sys.stdout.flush(); print('err', file=sys.stderr)")
    run(argv, cwd=tmp_path, env=env(), log=log, log_label=LABEL)
    assert log.read_text() == "$ " + " ".join(argv) + "\nout from-env\nerr\n"


def test_the_command_runs_in_cwd_with_no_stdin(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    log = tmp_path / "build.log"
    run(python("import os, sys; print(os.getcwd()); print(repr(sys.stdin.read()))"),
        cwd=tmp_path / "app", env=env(), log=log, log_label=LABEL)
    assert log.read_text().splitlines()[1:] == [str(tmp_path / "app"), "''"]


def test_the_log_is_replaced_not_appended(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("an earlier build\n")
    run(python("print('now')"), cwd=tmp_path, env=env(), log=log, log_label=LABEL)
    assert "an earlier build" not in log.read_text()


def test_a_non_zero_exit_raises_with_the_last_lines_of_the_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    argv = python("import sys\nfor i in range(30): print(f'line {i}')\nsys.exit(3)")
    with pytest.raises(CommandFailed) as info:
        run(argv, cwd=tmp_path, env=env(), log=log, log_label=LABEL)
    last = "\n".join(f"    line {i}" for i in range(30 - TAIL_LINES, 30))
    assert str(info.value) == (f"'{sys.executable}' exited with code 3; last lines of "
                               f"{LABEL}:\n{last}")
    assert TAIL_LINES == 20
    assert log.read_text().splitlines()[-1] == "line 29", "the whole output stays in the log"


def test_a_short_log_is_shown_whole_with_the_argv_line(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    argv = python("import sys; print('boom', file=sys.stderr); sys.exit(1)")
    with pytest.raises(CommandFailed) as info:
        run(argv, cwd=tmp_path, env=env(), log=log, log_label=LABEL)
    assert str(info.value) == (f"'{sys.executable}' exited with code 1; last lines of "
                               f"{LABEL}:\n    $ {' '.join(argv)}\n    boom")


def test_command_not_found(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed) as info:
        run(["no-such-program-esp32tasks"], cwd=tmp_path, env={"PATH": str(tmp_path)},
            log=tmp_path / "build.log", log_label=LABEL)
    assert str(info.value) == ("command not found: 'no-such-program-esp32tasks'; install it or "
                               "fix the command in targets.toml ([builder] command)")
    assert info.value.__suppress_context__
    assert (tmp_path / "build.log").read_text() == "$ no-such-program-esp32tasks\n"


def test_the_program_is_looked_up_on_the_builds_path(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "unit-build"
    script.write_text(f"#!{sys.executable}\nprint('found on PATH')\n")
    script.chmod(0o755)
    log = tmp_path / "build.log"
    run(["unit-build"], cwd=tmp_path, env={"PATH": str(bin_dir)}, log=log, log_label=LABEL)
    assert log.read_text() == "$ unit-build\nfound on PATH\n"


def test_not_executable(tmp_path: Path) -> None:
    script = tmp_path / "build.sh"
    script.write_text("#!/bin/sh\necho never\n")
    script.chmod(0o644)
    with pytest.raises(CommandFailed) as info:
        run([str(script), "--fast"], cwd=tmp_path, env=env(), log=tmp_path / "build.log",
            log_label=LABEL)
    assert str(info.value) == (f"'{script}' is not executable; chmod +x it or fix the command "
                               "in targets.toml ([builder] command)")


def test_tail_decodes_what_it_can(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_bytes(b"ok\n\xff\xfebad\n\n\n")
    assert tail(log) == "    ok\n    \ufffd\ufffdbad"
    assert tail(log, lines=1) == "    \ufffd\ufffdbad"


def test_a_missing_working_directory_is_not_a_missing_command(tmp_path: Path) -> None:
    with pytest.raises(CommandFailed) as info:
        run(python("print('never')"), cwd=tmp_path / "gone", env=env(),
            log=tmp_path / "build.log", log_label=LABEL)
    assert "command not found" not in str(info.value)
    assert str(tmp_path / "gone") in str(info.value)
