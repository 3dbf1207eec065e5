"""release.json, offline: the document from receipts, and the immutability check."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from esp32tasks import manifest
from esp32tasks.config import parse
from esp32tasks.errors import PublishError, StoreReleaseConflict
from esp32tasks.gitinfo import GitState
from esp32tasks.plan import Plan, expand
from esp32tasks.store import DirStore

REV = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"

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


def make_plan(root: Path, *, revision: str = REV, dirty: bool = False, store: str = "") -> Plan:
    release = parse(TOML + store, root / "targets.toml")
    git = GitState(revision=revision, dirty=dirty, commit_time="2026-01-01T00:00:00Z",
                   files=())
    return expand(release, git)


def receipts(plan: Plan, *, pushed: bool = False) -> dict[PurePosixPath, Any]:
    result: dict[PurePosixPath, Any] = {}
    index_targets = {}
    for n, step in enumerate(plan.steps):
        artifacts: list[dict[str, Any]] = [
            {"kind": kind, "name": name, "path": f"build/{step.name}/{name}",
             "size": 10 + n, "sha256": f"{n}{i}" * 32}
            for i, (kind, name) in enumerate([("app", "hello.bin"), ("elf", "hello.elf")])]
        result[step.build_receipt] = {"target": step.name, "artifacts": artifacts}
        result[step.upload_receipt] = {"target": step.name, "store": "s", "objects": [
            {"key": step.store_prefix + a["name"], "sha256": a["sha256"], "size": a["size"]}
            for a in artifacts]}
        digest = f"sha256:{n}" + "a" * 63
        result[step.image_receipt] = {"tag": step.tag,
                                      "manifest": {"digest": digest, "size": 500 + n}}
        index_targets[step.name] = {"tag": step.tag, "digest": digest}
        if pushed:
            result[PurePosixPath(f"build/receipts/push-{step.name}.json")] = {
                "repository": "r.example/hello", "tag": step.tag, "digest": digest}
    result[plan.index_receipt] = {"tag": plan.index_tag, "targets": index_targets,
                                  "index": {"digest": "sha256:" + "b" * 64}}
    if pushed:
        result[PurePosixPath("build/receipts/push-index.json")] = {
            "repository": "r.example/hello", "tag": plan.index_tag,
            "digest": "sha256:" + "b" * 64}
    return result


def test_document_lists_every_target_artifact_and_digest(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    doc = manifest.document(plan, receipts(plan), pushed=False)
    assert doc["format"] == "esp32tasks.release/v1"
    assert doc["git"] == {"revision": REV, "commit_time": "2026-01-01T00:00:00Z",
                          "dirty": False}
    assert doc["project"] == {"name": "hello", "app_type": "hello", "version": "1.0.0"}
    assert list(doc["targets"]) == ["esp32c3", "esp32s3"]
    assert doc["targets"]["esp32s3"] == {
        "chip": "esp32s3",
        "artifacts": [
            {"name": "hello.bin", "kind": "app", "path": "esp32s3/artifacts/hello.bin",
             "size": 11, "sha256": "10" * 32},
            {"name": "hello.elf", "kind": "elf", "path": "esp32s3/artifacts/hello.elf",
             "size": 11, "sha256": "11" * 32}],
        "image": {"tag": "esp32s3-hello-1.0.0-0123456", "digest": "sha256:1" + "a" * 63,
                  "size": 501},
    }
    assert doc["index"] == {"tag": "hello-1.0.0", "digest": "sha256:" + "b" * 64}
    assert "registry" not in doc
    assert manifest.manifest_key(plan) == "hello/hello-1.0.0/release.json"


def test_document_with_a_registry_names_every_pushed_tag(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    doc = manifest.document(plan, receipts(plan, pushed=True), pushed=True)
    assert doc["registry"] == {"repository": "r.example/hello",
                               "index": {"tag": "hello-1.0.0", "digest": "sha256:" + "b" * 64}}
    assert doc["targets"]["esp32c3"]["registry"] == {
        "repository": "r.example/hello", "tag": "esp32c3-hello-1.0.0-0123456",
        "digest": "sha256:0" + "a" * 63}
    assert set(map(str, manifest.inputs(plan, pushed=True))) >= {
        "build/receipts/push-esp32c3.json", "build/receipts/push-index.json"}


def test_encoding_is_stable(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    one = manifest.encode(manifest.document(plan, receipts(plan), pushed=False))
    two = manifest.encode(manifest.document(plan, dict(reversed(receipts(plan).items())),
                                            pushed=False))
    assert one == two
    assert one.endswith(b"}\n")


def test_an_artifact_not_uploaded_as_built_is_an_error(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    r = receipts(plan)
    r[plan.steps[0].upload_receipt]["objects"][1]["sha256"] = "f" * 64
    with pytest.raises(PublishError, match=r"upload-esp32c3.json does not list hello.elf"):
        manifest.document(plan, r, pushed=False)


def put_manifest(store: DirStore, plan: Plan, **git: Any) -> None:
    doc = manifest.document(plan, receipts(plan), pushed=False)
    doc["git"].update(git)
    store.put_bytes(manifest.manifest_key(plan), manifest.encode(doc))


def test_check_release_allows_a_new_version_and_the_same_revision(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    store = DirStore(tmp_path / "store")
    assert manifest.check_release(store, plan, force=False) is None
    put_manifest(store, plan)
    assert manifest.check_release(store, plan, force=False) is not None


def test_check_release_refuses_another_revision_unless_forced(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    store = DirStore(tmp_path / "store")
    put_manifest(store, plan, revision=OTHER)
    with pytest.raises(StoreReleaseConflict) as info:
        manifest.check_release(store, plan, force=False)
    assert str(info.value) == (
        f"{tmp_path / 'store'}/hello/hello-1.0.0/release.json was released from commit "
        "fedcba9, not 0123456; released versions are immutable: bump [project] version, or "
        "overwrite with ESP32TASKS_FORCE=1")
    assert manifest.check_release(store, plan, force=True) is not None


def test_check_release_replaces_a_dirty_release(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    store = DirStore(tmp_path / "store")
    put_manifest(store, plan, revision=OTHER, dirty=True)
    assert manifest.check_release(store, plan, force=False) is not None


def test_check_release_refuses_a_foreign_file(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    store = DirStore(tmp_path / "store")
    store.put_bytes(manifest.manifest_key(plan), b"<html>")
    with pytest.raises(StoreReleaseConflict, match="not an esp32tasks release manifest"):
        manifest.check_release(store, plan, force=False)


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("true", True), ("YES", True), ("on", True),
    ("", False), ("0", False), ("no", False), ("false", False)])
def test_force_flag(value: str, expected: bool) -> None:
    assert manifest.forced({"ESP32TASKS_FORCE": value}) is expected
    assert manifest.forced({}) is False


def test_only_s3_releases_are_immutable(tmp_path: Path) -> None:
    assert not manifest.guards(make_plan(tmp_path))
    s3 = make_plan(tmp_path, store='\n[store]\nurl = "s3://bucket/x"\n')
    assert manifest.guards(s3)


def test_publish_writes_the_manifest_last_into_a_local_store(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    for path, value in receipts(plan).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(value))
    assert manifest.publish(plan, False) is None
    published = (tmp_path / "build/store/hello/hello-1.0.0/release.json").read_bytes()
    assert published == (tmp_path / manifest.RECEIPT).read_bytes()
    assert json.loads(published)["git"]["revision"] == REV


class CountingStore(DirStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets = 0

    def get_bytes(self, key: str) -> bytes | None:
        self.gets += 1
        return super().get_bytes(key)


def test_check_release_once_reads_release_json_once_per_process_and_revision(
        tmp_path: Path) -> None:
    plan = make_plan(tmp_path, revision="1" * 40)
    store = CountingStore(tmp_path / "store")
    manifest.check_release_once(store, plan, force=False)
    manifest.check_release_once(store, plan, force=False)
    assert store.gets == 1
    manifest.check_release_once(store, make_plan(tmp_path, revision="2" * 40), force=False)
    assert store.gets == 2
    manifest.check_release_once(store, make_plan(tmp_path, revision="3" * 40), force=True)
    assert store.gets == 2  # forced: nothing to check


def test_check_release_once_refuses_until_the_conflict_is_gone(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, revision="4" * 40)
    store = CountingStore(tmp_path / "store")
    put_manifest(store, plan, revision=OTHER)
    for _ in range(2):  # a refusal is not remembered
        with pytest.raises(StoreReleaseConflict):
            manifest.check_release_once(store, plan, force=False)
    assert store.gets == 2
