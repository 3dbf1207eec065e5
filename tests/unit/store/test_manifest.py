"""release.json, offline: the document from receipts, and the immutability check."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from esp32tasks import receipts, runcache
from esp32tasks.config import apply_overrides, parse
from esp32tasks.errors import PublishError, StaleReceipt, StoreReleaseConflict
from esp32tasks.gitinfo import GitState
from esp32tasks.plan import Plan, expand
from esp32tasks.receipts import (
    Artifact,
    BuildReceipt,
    Child,
    Descriptor,
    Firmware,
    ImageReceipt,
    IndexReceipt,
    PushIndexReceipt,
    PushReceipt,
    StoredObject,
    UploadReceipt,
)
from esp32tasks.store import manifest
from esp32tasks.store.local import DirStore
from esp32tasks.store.manifest import Inputs, TargetInputs

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


def make_plan(root: Path, *, revision: str = REV, dirty: bool = False, store: str = "",
              environ: dict[str, str] | None = None) -> Plan:
    release = apply_overrides(parse(TOML + store, root / "targets.toml"),
                              {"HOME": str(root), **(environ or {})}, {})
    git = GitState(revision=revision, dirty=dirty, commit_time="2026-01-01T00:00:00Z",
                   files=())
    return expand(release, git)


def make_inputs(plan: Plan, *, pushed: bool = False) -> Inputs:
    targets = {}
    children = []
    for n, step in enumerate(plan.steps):
        artifacts = tuple(
            Artifact(kind=kind, name=name, path=f"build/{step.name}/{name}", size=10 + n,
                     sha256=f"{n}{i}" * 32)
            for i, (kind, name) in enumerate([("app", "hello.bin"), ("elf", "hello.elf")]))
        digest = f"sha256:{n}" + "a" * 63
        image = ImageReceipt(
            target=step.name, tag=step.tag,
            manifest=Descriptor(media_type="m", digest=digest, size=500 + n),
            config=Descriptor(media_type="c", digest="sha256:" + "c" * 64, size=2),
            layer=Descriptor(media_type="l", digest="sha256:" + "d" * 64, size=3),
            firmware=Firmware(name="hello.bin", sha256=f"{n}0" * 32, size=10 + n))
        targets[step.name] = TargetInputs(
            built=BuildReceipt(target=step.name, chip=step.target.chip, artifacts=artifacts),
            uploaded=UploadReceipt(
                target=step.name, store="s", endpoint="", build="e" * 64,
                objects=tuple(StoredObject(key=step.store_prefix + a.name, sha256=a.sha256,
                                           size=a.size) for a in artifacts)),
            image=image,
            pushed=PushReceipt(target=step.name, repository="r.example/hello", tag=step.tag,
                               digest=digest, pushed=(digest,)) if pushed else None)
        children.append(Child(target=step.name, tag=step.tag, digest=digest))
    index = IndexReceipt(tag=plan.variants[0].index_tag,
                         index=Descriptor(media_type="i", digest="sha256:" + "b" * 64, size=9),
                         targets=tuple(children))
    pushed_index = PushIndexReceipt(repository="r.example/hello", tag=plan.variants[0].index_tag,
                                    digest="sha256:" + "b" * 64, targets=tuple(children))
    return Inputs(targets=targets, local_indexes={"index": index},
                  pushed_indexes={"index": pushed_index} if pushed else None)


def test_document_lists_every_target_artifact_and_digest(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    doc = manifest.document(plan, make_inputs(plan))
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
    doc = manifest.document(plan, make_inputs(plan, pushed=True))
    assert doc["registry"] == {"repository": "r.example/hello",
                               "index": {"tag": "hello-1.0.0", "digest": "sha256:" + "b" * 64}}
    assert doc["targets"]["esp32c3"]["registry"] == {
        "repository": "r.example/hello", "tag": "esp32c3-hello-1.0.0-0123456",
        "digest": "sha256:0" + "a" * 63}
    assert set(map(str, manifest.inputs(plan, pushed=True))) >= {
        "build/receipts/push-esp32c3.json", "build/receipts/push-index.json"}
    assert not {"build/receipts/push-esp32c3.json", "build/receipts/push-index.json"} & set(
        map(str, manifest.inputs(plan, pushed=False)))


def test_encoding_is_stable(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    inputs = make_inputs(plan)
    one = manifest.encode(manifest.document(plan, inputs))
    reordered = inputs._replace(targets=dict(list(inputs.targets.items())[::-1]))
    two = manifest.encode(manifest.document(plan, reordered))
    assert one == two
    assert one.endswith(b"}\n")


def test_an_artifact_not_uploaded_as_built_is_an_error(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    inputs = make_inputs(plan)
    c3 = inputs.targets["esp32c3"]
    objects = list(c3.uploaded.objects)
    objects[1] = dataclasses.replace(objects[1], sha256="f" * 64)
    uploaded = dataclasses.replace(c3.uploaded, objects=tuple(objects))
    bad = inputs._replace(targets={**inputs.targets, "esp32c3": c3._replace(uploaded=uploaded)})
    with pytest.raises(PublishError, match=r"upload-esp32c3.json does not list hello.elf") \
            as info:
        manifest.document(plan, bad)
    assert str(info.value) == ("build/receipts/upload-esp32c3.json does not list hello.elf as "
                               "built in build/receipts/build-esp32c3.json; run `doit release`")


def test_an_image_the_index_does_not_list_is_an_error(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    inputs = make_inputs(plan)
    index = inputs.local_indexes["index"]
    bad = inputs._replace(local_indexes={
        "index": dataclasses.replace(index, targets=index.targets[1:])})
    with pytest.raises(PublishError) as info:
        manifest.document(plan, bad)
    assert str(info.value) == ("build/receipts/image-esp32c3.json does not match "
                               "build/receipts/index.json; run `doit release`")


def put_manifest(store: DirStore, plan: Plan, **git: Any) -> None:
    doc = manifest.document(plan, make_inputs(plan))
    doc["git"].update(git)
    store.put_bytes(manifest.manifest_key(plan), manifest.encode(doc))


def test_the_refusal_names_who_released_from_which_commit_and_when(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    store = DirStore(tmp_path / "store")
    doc = manifest.document(plan, make_inputs(plan), "octocat (GitHub Actions)")
    doc["git"].update(revision=OTHER, commit_time="2026-02-03T04:05:06Z")
    store.put_bytes(manifest.manifest_key(plan), manifest.encode(doc))
    with pytest.raises(StoreReleaseConflict) as info:
        manifest.check_release(store, plan, force=False)
    assert "release.json was released by octocat (GitHub Actions) from commit fedcba9 " \
        "(committed 2026-02-03T04:05:06Z, clean), not from 0123456" in str(info.value)


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
        "fedcba9 (committed 2026-01-01T00:00:00Z, clean), not from 0123456; released "
        "versions are immutable: bump [project] version (or tag a new v<version> with "
        'version = "git"), or overwrite with ESP32TASKS_FORCE=1')
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
    with pytest.raises(StoreReleaseConflict, match="not an esp32tasks release manifest") \
            as info:
        manifest.check_release(store, plan, force=False)
    assert str(info.value) == (
        f"{tmp_path / 'store'}/hello/hello-1.0.0/release.json exists but is not an esp32tasks "
        "release manifest; remove it, or overwrite it with ESP32TASKS_FORCE=1")


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("true", True), ("YES", True), ("on", True),
    ("", False), ("0", False), ("no", False), ("false", False)])
def test_force_flag(tmp_path: Path, value: str, expected: bool) -> None:
    """ESP32TASKS_FORCE reaches the store's check as ``StoreConfig.force``, through config."""
    assert make_plan(tmp_path, environ={"ESP32TASKS_FORCE": value}).release.store.force \
        is expected
    assert make_plan(tmp_path).release.store.force is False


def test_only_s3_releases_are_immutable(tmp_path: Path) -> None:
    assert not manifest.guards(make_plan(tmp_path))
    s3 = make_plan(tmp_path, store='\n[store]\nurl = "s3://bucket/x"\n')
    assert manifest.guards(s3)


def write_receipts(plan: Plan, inputs: Inputs) -> None:
    root = plan.release.root
    for step in plan.steps:
        facts = inputs.targets[step.name]
        receipts.write(root / step.build_receipt, facts.built)
        receipts.write(root / step.upload_receipt, facts.uploaded)
        receipts.write(root / step.image_receipt, facts.image)
        if facts.pushed is not None:
            receipts.write(root / step.push_receipt, facts.pushed)
    variant = plan.variants[0]
    receipts.write(root / variant.index_receipt, inputs.local_indexes["index"])
    if inputs.pushed_indexes is not None:
        receipts.write(root / variant.push_index_receipt, inputs.pushed_indexes["index"])


def test_publish_writes_the_manifest_last_into_a_local_store(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    inputs = make_inputs(plan)
    write_receipts(plan, inputs)
    assert manifest.publish(plan, False) is None  # type: ignore[func-returns-value]
    published = (tmp_path / "build/store/hello/hello-1.0.0/release.json").read_bytes()
    assert published == (tmp_path / manifest.RECEIPT).read_bytes()
    assert published == manifest.encode(manifest.document(plan, inputs,
                                                          manifest.publisher(plan)))
    assert json.loads(published)["published_by"] == manifest.publisher(plan) != ""
    assert json.loads(published)["git"]["revision"] == REV


def test_publish_with_a_stale_receipt_says_the_fix_and_writes_nothing(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    write_receipts(plan, make_inputs(plan))
    stale = tmp_path / plan.steps[1].upload_receipt
    stale.write_text('{"kind": "upload", "schema": 0}')
    with pytest.raises(StaleReceipt) as info:
        manifest.publish(plan, False)
    assert str(info.value) == (
        "build/receipts/upload-esp32s3.json is missing or was written by another esp32tasks "
        "version; run `doit release` again (the task that makes it runs first)")
    assert not stale.exists()
    assert not (tmp_path / manifest.RECEIPT).exists()
    assert not (tmp_path / "build/store/hello/hello-1.0.0/release.json").exists()


class CountingStore(DirStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets = 0

    def get_bytes(self, key: str) -> bytes | None:
        self.gets += 1
        return super().get_bytes(key)


def test_check_release_once_reads_release_json_once_per_run_and_revision(
        tmp_path: Path) -> None:
    plan = make_plan(tmp_path, revision="1" * 40)
    store = CountingStore(tmp_path / "store")
    manifest.check_release_once(store, plan)
    manifest.check_release_once(store, plan)
    assert store.gets == 1
    manifest.check_release_once(store, make_plan(tmp_path, revision="2" * 40))
    assert store.gets == 2
    forced = make_plan(tmp_path, revision="3" * 40, environ={"ESP32TASKS_FORCE": "1"})
    manifest.check_release_once(store, forced)
    assert store.gets == 2  # forced: nothing to check
    runcache.reset()  # the next doit run
    manifest.check_release_once(store, plan)
    assert store.gets == 3


def test_check_release_once_refuses_until_the_conflict_is_gone(tmp_path: Path) -> None:
    plan = make_plan(tmp_path, revision="4" * 40)
    store = CountingStore(tmp_path / "store")
    put_manifest(store, plan, revision=OTHER)
    for _ in range(2):  # a refusal is not remembered
        with pytest.raises(StoreReleaseConflict):
            manifest.check_release_once(store, plan)
    assert store.gets == 2
    forced = make_plan(tmp_path, revision="4" * 40, environ={"ESP32TASKS_FORCE": "1"})
    manifest.check_release_once(store, forced)  # forced: no refusal, and no GET
    assert store.gets == 2
