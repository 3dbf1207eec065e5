"""The no-op's checks of lost outputs (a stat each), and the actions that make them again."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from esp32tasks import images, receipts
from esp32tasks.build import action as build_action
from esp32tasks.config import parse
from esp32tasks.errors import PublishError
from esp32tasks.gitinfo import GitState
from esp32tasks.plan import Plan, expand
from esp32tasks.receipts import AppDesc, AppReceipt, Artifact, BuildReceipt, ImageReceipt
from esp32tasks.store import manifest, upload

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
"""


def make_plan(root: Path) -> Plan:
    git = GitState(revision="0123456789abcdef0123456789abcdef01234567", dirty=False,
                   commit_time="2026-01-01T00:00:00Z", files=())
    return expand(parse(TOML, root / "targets.toml"), git)


def built(root: Path, plan: Plan) -> Path:
    """esp32c3's app, as build:esp32c3 leaves it: the file and both receipts."""
    step = plan.steps[0]
    data = b"\xe9firmware" * 100
    app = root / step.build_dir / "hello.bin"
    app.parent.mkdir(parents=True)
    app.write_bytes(data)
    artifact = Artifact(kind="app", name="hello.bin", path=f"{step.build_dir}/hello.bin",
                        size=len(data), sha256=hashlib.sha256(data).hexdigest())
    receipts.write(root / step.build_receipt,
                   BuildReceipt(target="esp32c3", chip="esp32c3", artifacts=(artifact,)))
    receipts.write(root / step.app_receipt, AppReceipt(
        target="esp32c3", chip="esp32c3", app=artifact,
        app_desc=AppDesc(version="1.0.0", project_name="hello", elf_sha256="e" * 64)))
    return app


def test_build_outputs_present_is_existence_and_size(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    step = plan.steps[0]
    assert not build_action.outputs_present(tmp_path, step)  # no receipt
    app = built(tmp_path, plan)
    assert build_action.outputs_present(tmp_path, step)
    data = app.read_bytes()
    app.write_bytes(data[:-1] + b"X")  # same size: not seen here (the consumers hash)
    assert build_action.outputs_present(tmp_path, step)
    app.write_bytes(data + b"X")
    assert not build_action.outputs_present(tmp_path, step)
    app.unlink()
    assert not build_action.outputs_present(tmp_path, step)
    (tmp_path / step.build_receipt).write_text('{"kind": "build", "artifacts": 3}')
    assert not build_action.outputs_present(tmp_path, step)


def test_a_lost_or_torn_layout_is_seen_and_tag_makes_it_again(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    step = plan.steps[0]
    built(tmp_path, plan)
    assert not images.image_present(plan, step)
    images.tag(plan, step)
    images.index(plan, plan.variants[0])
    assert images.image_present(plan, step)
    assert images.index_present(plan, plan.variants[0])
    image = receipts.read(tmp_path / step.image_receipt, ImageReceipt)
    assert image is not None
    layout = tmp_path / plan.oci_dir
    layer = layout / "blobs/sha256" / image.layer.digest.removeprefix("sha256:")
    good = layer.read_bytes()

    layer.write_bytes(good[:-1])  # torn
    assert not images.image_present(plan, step)
    assert images.index_present(plan, plan.variants[0])
    images.tag(plan, step)
    assert layer.read_bytes() == good

    layer.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # other bytes, same size
    assert images.image_present(plan, step)  # a stat cannot tell; the action can
    images.tag(plan, step)
    assert layer.read_bytes() == good

    index = json.loads((layout / "index.json").read_text())
    index["manifests"] = [d for d in index["manifests"]
                          if d["annotations"]["org.opencontainers.image.ref.name"] != step.tag]
    (layout / "index.json").write_text(json.dumps(index))
    assert not images.image_present(plan, step)
    assert images.index_present(plan, plan.variants[0])

    shutil.rmtree(layout)
    assert not images.image_present(plan, step)
    assert not images.index_present(plan, plan.variants[0])
    images.tag(plan, step)
    images.index(plan, plan.variants[0])
    assert images.image_present(plan, step)
    assert images.index_present(plan, plan.variants[0])


def test_a_changed_app_takes_the_app_receipt_with_it(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    step = plan.steps[0]
    app = built(tmp_path, plan)
    data = app.read_bytes()
    app.write_bytes(data[:-1] + b"X")
    with pytest.raises(PublishError) as info:
        images.tag(plan, step)
    assert str(info.value) == ("build/esp32c3/hello.bin changed after its build; run "
                               "`doit release` again: build:esp32c3 runs first")
    assert not (tmp_path / step.app_receipt).exists()  # so build:esp32c3 runs again
    assert (tmp_path / step.build_receipt).exists()


def test_a_local_store_copy_lost_is_seen(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    step = plan.steps[0]
    built(tmp_path, plan)
    assert not upload.objects_present(plan, step)
    assert not manifest.published_present(plan)
    upload.upload(plan, step)
    assert upload.objects_present(plan, step)
    copy = tmp_path / "build/store" / step.store_prefix / "hello.bin"
    copy.write_bytes(b"short")
    assert not upload.objects_present(plan, step)
    copy.unlink()
    assert not upload.objects_present(plan, step)
    published = tmp_path / "build/store" / manifest.manifest_key(plan)
    published.parent.mkdir(parents=True, exist_ok=True)
    published.write_bytes(b"{}\n")
    (tmp_path / manifest.RECEIPT).write_bytes(b"{}\n")
    assert manifest.published_present(plan)
    published.unlink()
    assert not manifest.published_present(plan)


def test_receipts_that_disagree_take_the_later_one_with_them(tmp_path: Path) -> None:
    """release.json's advice holds: the receipt made from the other is removed, so its task
    runs again on `doit release`."""
    plan = make_plan(tmp_path)
    step = plan.steps[0]
    built(tmp_path, plan)
    upload.upload(plan, step)
    images.tag(plan, step)
    images.index(plan, plan.variants[0])
    image = receipts.read(tmp_path / step.image_receipt, ImageReceipt)
    assert image is not None
    receipts.write(tmp_path / step.image_receipt, dataclasses.replace(
        image, manifest=dataclasses.replace(image.manifest, digest="sha256:" + "0" * 64)))
    with pytest.raises(PublishError) as info:
        manifest.publish(plan, False)
    assert str(info.value) == ("build/receipts/image-esp32c3.json does not match "
                               "build/receipts/index.json; run `doit release`")
    assert not (tmp_path / plan.variants[0].index_receipt).exists()
    assert (tmp_path / step.image_receipt).exists()
