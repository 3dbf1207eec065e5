"""The boundary and the filesystem: its refusals are one line naming the file and the fix.

An OSError an action lets out (a full disk, a read-only one, no permission, a directory
where a file belongs) is the machine's state, not a bug: :class:`Action` makes it one
``TaskFailed`` line, :func:`generating` one ``error:`` line and exit code 2. Other
OSErrors (ENOENT among them) stay bugs, with their tracebacks.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest
from doit.exceptions import TaskFailed

from esp32tasks.files import copy_atomic, remove, write_atomic
from esp32tasks.store.local import DirStore
from esp32tasks.tasks import boundary
from esp32tasks.tasks.boundary import Action, explain, generating

AGAIN = "run `doit release` again"
USER = pwd.getpwuid(os.geteuid()).pw_name


def _raises(exc: BaseException) -> None:
    raise exc


def failure(action: Action) -> str:
    failed = action()
    assert isinstance(failed, TaskFailed), failed
    assert not failed.traceback
    return str(failed.message)


def refused(code: int, path: Path) -> OSError:
    return OSError(code, os.strerror(code), str(path))


@pytest.mark.parametrize(("code", "said"), [
    (errno.ENOSPC, "no space left on device; free space on the filesystem at {mount} and "
                   f"{AGAIN}"),
    (errno.EDQUOT, "disk quota exceeded; free space within your quota on the filesystem at "
                   f"{{mount}} and {AGAIN}"),
    (errno.EROFS, f"read-only file system; make the filesystem at {{mount}} writable and {AGAIN}"),
    (errno.EACCES, f"permission denied; give user {USER} write access to it and its directory "
                   f"(chown or chmod), then {AGAIN}"),
    (errno.EPERM, f"operation not permitted; give user {USER} write access to it and its "
                  f"directory (chown or chmod), then {AGAIN}"),
    (errno.EISDIR, "is a directory; esp32tasks writes a file there: remove or rename the "
                   f"directory and {AGAIN}"),
    (errno.EIO, "input/output error; check the disk behind the filesystem at {mount} (the "
                f"kernel log says more), then {AGAIN}"),
], ids=["ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EISDIR", "EIO"])
def test_a_refusal_of_the_filesystem_is_one_line_naming_the_file_and_the_fix(
        tmp_path: Path, code: int, said: str) -> None:
    path = tmp_path / "build" / "receipts" / "build-esp32c3.json"
    mount = boundary._mount_point(str(path))
    assert failure(Action(_raises, refused(code, path))) == \
        f"{path}: {said.format(mount=mount)}"


def test_a_path_inside_the_working_directory_is_shown_relative(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    message = failure(Action(_raises, refused(errno.EISDIR, tmp_path / "build" / "x.json")))
    assert message.startswith("build/x.json: is a directory; ")


def test_without_a_file_name_it_still_says_what_and_how(tmp_path: Path) -> None:
    assert failure(Action(_raises, OSError(errno.ENOSPC, "No space left on device"))) == (
        f"no space left on device; free space on the disk esp32tasks writes to and {AGAIN}")


@pytest.mark.parametrize("exc", [
    FileNotFoundError(errno.ENOENT, "No such file or directory", "build/receipts/x.json"),
    OSError(errno.EBADF, "Bad file descriptor"),
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    PermissionError(errno.EPERM, "Operation not permitted"),  # os.kill, a socket: no file
    OSError("no errno at all"),
], ids=["ENOENT", "EBADF", "ECONNREFUSED", "EPERM-without-a-file", "none"])
def test_any_other_oserror_is_a_bug_and_keeps_its_traceback(exc: OSError) -> None:
    assert explain(exc) is None
    with pytest.raises(type(exc)):
        Action(_raises, exc)()
    with pytest.raises(type(exc)), generating():
        raise exc


def test_while_tasks_are_made_it_is_one_error_line_and_exit_code_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "build" / "gitstate.json"
    with pytest.raises(SystemExit) as stopped, generating():
        raise refused(errno.EISDIR, path)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {path}: is a directory; esp32tasks writes a file there: remove or rename the "
        f"directory and {AGAIN}\n")


def test_a_directory_where_a_receipt_belongs(tmp_path: Path) -> None:
    receipt = tmp_path / "receipts" / "app-esp32c3.json"
    receipt.mkdir(parents=True)
    expected = (f"{receipt}: is a directory; esp32tasks writes a file there: remove or rename "
                f"the directory and {AGAIN}")
    assert failure(Action(remove, receipt)) == expected
    assert failure(Action(write_atomic, receipt, b"{}")) == expected, "not the temp file's name"
    assert [p.name for p in receipt.parent.iterdir()] == ["app-esp32c3.json"], "no temp file"


def test_a_file_where_a_directory_belongs(tmp_path: Path) -> None:
    receipts = tmp_path / "receipts"
    receipts.write_text("not a directory")
    assert failure(Action(write_atomic, receipts / "app-esp32c3.json", b"{}")) == (
        f"{receipts}/app-esp32c3.json: not a directory; {receipts} is a file where esp32tasks "
        f"needs a directory: remove or rename it and {AGAIN}")
    assert failure(Action(write_atomic, receipts / "deeper" / "x.json", b"{}")).startswith(
        f"{receipts}/deeper: not a directory; {receipts} is a file ")  # mkdir's own path
    # a file that is itself where mkdir makes a directory (build/oci, build/<target>)
    assert failure(Action(os.makedirs, receipts, 0o777, True)) == (
        f"{receipts}: is a file where esp32tasks needs a directory: remove or rename it and "
        f"{AGAIN}")


def test_a_store_object_that_is_a_directory_leaves_no_temp_file(tmp_path: Path) -> None:
    source = tmp_path / "hello.bin"
    source.write_bytes(b"app")
    store = DirStore(tmp_path / "store")
    key = "hello/hello-1.0.0/esp32c3/artifacts/hello.bin"
    (store.root / key).mkdir(parents=True)
    sha = hashlib.sha256(b"app").hexdigest()
    assert failure(Action(store.put_file, key, source, sha)) == (
        f"{store.root / key}: is a directory; esp32tasks writes a file there: remove or rename "
        f"the directory and {AGAIN}")
    assert [p.name for p in (store.root / key).parent.iterdir()] == ["hello.bin"]


def test_a_full_disk_while_copying_to_the_store_names_the_object_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "hello.bin"
    source.write_bytes(b"app" * 1000)
    store = DirStore(tmp_path / "store")
    key = "hello/hello-1.0.0/esp32c3/artifacts/hello.bin"

    def full(fd: int) -> None:
        del fd
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as the kernel says it

    monkeypatch.setattr(os, "fsync", full)
    message = failure(Action(store.put_file, key, source, "0" * 64))
    assert message.startswith(f"{store.root / key}: no space left on device; free space on ")
    assert not [p for p in store.root.rglob("*") if p.is_file()], "no object, no temp file"
    monkeypatch.undo()
    assert store.put_file(key, source, "0" * 64)
    assert (store.root / key).read_bytes() == source.read_bytes()


def test_a_copys_read_error_names_the_source(tmp_path: Path) -> None:
    source = tmp_path / "build-output"
    source.mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        copy_atomic(source, tmp_path / "copy")
    assert caught.value.filename == str(source)
    assert not list(tmp_path.glob(".copy*"))


def test_the_filesystem_named_is_the_one_holding_the_path(tmp_path: Path) -> None:
    named = boundary._mount_point(str(tmp_path / "not" / "there" / "yet.json"))
    assert str(tmp_path).startswith(named.rstrip("/") + "/")
    assert os.path.ismount(named)
    df = shutil.which("df")
    if df is not None:
        shown = subprocess.run([df, "--output=target", str(tmp_path)], capture_output=True,
                               text=True, check=False)
        if shown.returncode == 0:
            assert shown.stdout.splitlines()[-1].strip() == named


def test_mountinfo_escapes_are_read_back() -> None:
    assert boundary._unescape(r"/mnt/with\040space\011tab\134slash") == \
        "/mnt/with space\ttab\\slash"
