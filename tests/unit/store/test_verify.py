"""The store half of `doit verify` and the upload's read-back, offline (a local store and a
recording fake)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from pathlib import Path

import pytest

from esp32tasks import receipts
from esp32tasks.config import apply_overrides, parse
from esp32tasks.errors import PublishError, VerifyFailed
from esp32tasks.gitinfo import GitState
from esp32tasks.plan import Plan, expand
from esp32tasks.receipts import Artifact, BuildReceipt, StoredObject, UploadReceipt
from esp32tasks.store import manifest, upload
from esp32tasks.store import verify as store_verify

REV = "0123456789abcdef0123456789abcdef01234567"
TOML = """
[project]
name = "hello"
app_type = "hello"
version = "1.0.0"

[builder]
kind = "command"
command = ["make"]

[[targets]]
name = "esp32c3"

[[targets]]
name = "esp32s3"
"""
FILES = {"hello.bin": b"app bytes", "hello.elf": b"elf bytes"}


def make_plan(root: Path, revision: str = REV) -> Plan:
    release = apply_overrides(parse(TOML, root / "targets.toml"), {"HOME": str(root)}, {})
    git = GitState(revision=revision, dirty=False, commit_time="2026-01-01T00:00:00Z",
                   files=())
    return expand(release, git)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def released(root: Path, plan: Plan) -> Path:
    """A release of FILES for every target: the local release.json and the store's copy."""
    store = root / "build/store"
    doc = {"git": {"revision": plan.git.revision, "commit_time": "", "dirty": False},
           "project": {"name": "hello", "app_type": "hello", "version": "1.0.0"},
           "targets": {step.name: {"artifacts": [
               {"name": name, "path": f"{step.name}/artifacts/{name}", "sha256": sha(data),
                "size": len(data), "kind": "x"} for name, data in FILES.items()]}
               for step in plan.steps}}
    data = manifest.encode(doc)
    (root / manifest.RECEIPT).parent.mkdir(parents=True)
    (root / manifest.RECEIPT).write_bytes(data)
    for step in plan.steps:
        for name, content in FILES.items():
            path = store / step.store_prefix / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    (store / manifest.manifest_key(plan)).write_bytes(data)
    return store / plan.release_prefix


def test_every_object_as_released_is_one_ok_line_per_target(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = make_plan(tmp_path)
    where = released(tmp_path, plan)
    store_verify.verify(plan)
    assert capsys.readouterr().out.splitlines() == [
        f"{where} holds this release, every object read back:",
        "  release.json: ok", "  esp32c3: ok (2 objects)", "  esp32s3: ok (2 objects)"]


def test_missing_and_other_bytes_are_named_with_the_command_that_sends_them(
        tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    where = released(tmp_path, plan)
    (where / "esp32c3/artifacts/hello.elf").unlink()
    (where / "esp32s3/artifacts/hello.bin").write_bytes(b"app byteZ")  # same size
    (where / "release.json").write_bytes(b"{}")
    with pytest.raises(VerifyFailed) as info:
        store_verify.verify(plan)
    assert str(info.value).splitlines() == [
        f"{where} differs from this release:",
        "  release.json: other bytes than build/receipts/release.json",
        "  esp32c3: hello.elf is missing",
        f"  esp32s3: hello.bin has other bytes (sha256 {sha(b'app byteZ')[:12]}…, "
        f"release.json says {sha(b'app bytes')[:12]}…)",
        "  to send it again: `doit forget upload:esp32c3 upload:esp32s3 manifest && "
        "doit release`"]
    (where / "release.json").unlink()
    with pytest.raises(VerifyFailed, match=r"\n  release\.json: missing\n"):
        store_verify.verify(plan)


def test_without_a_local_release_there_is_nothing_to_compare(tmp_path: Path) -> None:
    with pytest.raises(VerifyFailed) as info:
        store_verify.verify(make_plan(tmp_path))
    assert str(info.value) == ("build/receipts/release.json is missing: nothing was released "
                               "from here yet; run `doit release` first")


def test_a_release_of_another_commit_is_not_compared(tmp_path: Path) -> None:
    released(tmp_path, make_plan(tmp_path, revision="f" * 40))
    with pytest.raises(VerifyFailed) as info:
        store_verify.verify(make_plan(tmp_path))
    assert str(info.value) == ("build/receipts/release.json is the release of 1.0.0 at commit "
                               "fffffff, not of 1.0.0 at 0123456; run `doit release` first")


def test_a_broken_local_release_is_removed_so_the_advice_holds(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    released(tmp_path, plan)
    (tmp_path / manifest.RECEIPT).write_text('{"targets": []}')
    with pytest.raises(VerifyFailed) as info:
        store_verify.verify(plan)
    assert str(info.value) == ("build/receipts/release.json is not a release manifest; run "
                               "`doit release` again (it is written anew)")
    assert not (tmp_path / manifest.RECEIPT).exists()


class Recording:
    """A store in memory that records what it is asked."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.asked: list[tuple[str, str]] = []

    def describe(self, key: str = "") -> str:
        return "mem://" + key

    def get_bytes(self, key: str) -> bytes | None:
        self.asked.append(("GET", key))
        return self.objects.get(key)

    def put_files(self, files: Sequence[tuple[str, Path, str]], *,
                  overwrite: Collection[str] = ()) -> list[bool]:
        for key, path, _ in files:
            self.asked.append(("PUT" if key in overwrite else "HEAD+PUT", key))
            self.objects[key] = path.read_bytes()
        return [True] * len(files)

    def put_file(self, key: str, path: Path, sha256: str, *, check: bool = True) -> bool:
        return self.put_files([(key, path, sha256)], overwrite=() if check else {key})[0]

    def put_bytes(self, key: str, data: bytes, *, check: bool = True) -> bool:
        raise AssertionError("an upload sends files")

    def directories(self, prefix: str) -> list[str]:
        raise AssertionError("an upload lists nothing")


def test_read_back_hashes_what_the_store_holds() -> None:
    store = Recording({f"k{i}": bytes([i]) for i in range(20)})
    keys = [f"k{i}" for i in range(25)]
    held = store_verify.read_back(store, keys)
    assert held == {k: (sha(store.objects[k]) if k in store.objects else None) for k in keys}
    assert sorted(store.asked) == sorted(("GET", k) for k in keys)


def uploaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             store: Recording) -> tuple[Plan, Path]:
    """esp32c3 built (FILES), its upload receipt as the upload wrote it to ``store``."""
    plan = make_plan(tmp_path)
    step = plan.steps[0]
    artifacts = []
    for name, data in FILES.items():
        path = tmp_path / "build" / step.name / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        artifacts.append(Artifact(kind="x", name=name, path=f"build/{step.name}/{name}",
                                  size=len(data), sha256=sha(data)))
    build = tmp_path / step.build_receipt
    build.parent.mkdir(parents=True, exist_ok=True)
    receipts.write(build, BuildReceipt(target=step.name, chip="esp32c3",
                                       artifacts=tuple(artifacts)))
    receipts.write(tmp_path / step.upload_receipt, UploadReceipt(
        target=step.name, store=store.describe(), endpoint="",
        build=sha(build.read_bytes()),
        objects=tuple(StoredObject(key=step.store_prefix + a.name, sha256=a.sha256,
                                   size=a.size) for a in artifacts)))
    monkeypatch.setattr(upload, "open_store", lambda config, root: store)
    return plan, tmp_path / "build" / step.name


def test_asked_again_the_upload_reads_every_object_back_and_sends_what_differs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`doit forget upload:<t>`: the same build again. Metadata is no proof: each object is
    downloaded and hashed, and what differs is sent without asking again."""
    store = Recording({})
    plan, _ = uploaded(tmp_path, monkeypatch, store)
    step = plan.steps[0]
    store.objects = {step.store_prefix + "hello.bin": b"app bytes",
                     step.store_prefix + "hello.elf": b"elf byteZ"}
    upload.upload(plan, step)
    assert sorted(store.asked) == [("GET", step.store_prefix + "hello.bin"),
                                   ("GET", step.store_prefix + "hello.elf"),
                                   ("PUT", step.store_prefix + "hello.elf")]
    assert store.objects[step.store_prefix + "hello.elf"] == b"elf bytes"


def test_with_no_receipt_the_upload_asks_the_store_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Recording({})
    plan, _ = uploaded(tmp_path, monkeypatch, store)
    step = plan.steps[0]
    (tmp_path / step.upload_receipt).unlink()
    upload.upload(plan, step)
    assert sorted(store.asked) == [("HEAD+PUT", step.store_prefix + name) for name in FILES]


def test_an_artifact_changed_after_its_build_makes_the_build_run_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Recording({})
    plan, build_dir = uploaded(tmp_path, monkeypatch, store)
    step = plan.steps[0]
    app = tmp_path / step.app_receipt
    app.write_text("{}")  # build:<t>'s target: removed, so that build:<t> runs again
    (build_dir / "hello.elf").write_bytes(b"elf byteZ")
    with pytest.raises(PublishError, match=r"^build/esp32c3/hello.elf changed after its build; "
                       r"run `doit release` again: build:esp32c3 runs first$"):
        upload.upload(plan, step)
    assert not app.exists()
    assert (tmp_path / step.build_receipt).exists()  # what the build made: it reads it
    assert store.asked == []
    assert json.loads((tmp_path / step.build_receipt).read_text())["kind"] == "build"
