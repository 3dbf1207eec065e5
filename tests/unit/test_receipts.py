"""Typed receipts: the one writer and reader, and what makes a receipt stale."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esp32tasks import receiptfile
from esp32tasks.errors import StaleReceipt
from esp32tasks.receipts import (
    AppDesc,
    AppReceipt,
    Artifact,
    BuildReceipt,
    Child,
    DeltaReceipt,
    Descriptor,
    Firmware,
    ImageReceipt,
    IndexReceipt,
    PatchRecord,
    PushDeltaReceipt,
    PushIndexReceipt,
    PushReceipt,
    Receipt,
    StoredObject,
    UploadReceipt,
    load,
    read,
    write,
)

SHA = "ab" * 32
DIGEST = "sha256:" + SHA
APP = Artifact(kind="app", name="hello.bin", path="build/esp32c3/hello.bin", size=4096,
               sha256=SHA)
ELF = Artifact(kind="elf", name="hello.elf", path="build/esp32c3/hello.elf", size=9000,
               sha256="cd" * 32)
MANIFEST = Descriptor(media_type="application/vnd.oci.image.manifest.v1+json", digest=DIGEST,
                      size=512)
CHILDREN = (Child(target="esp32c3", tag="esp32c3-hello-1.0.0-0123456", digest=DIGEST),
            Child(target="esp32c6", tag="esp32c6-hello-1.0.0-0123456", digest="sha256:" + "1" * 64))

BUILD = BuildReceipt(target="esp32c3", chip="esp32c3", artifacts=(APP, ELF))
IMAGE = ImageReceipt(
    target="esp32c3", tag="esp32c3-hello-1.0.0-0123456", manifest=MANIFEST,
    config=Descriptor(media_type="application/vnd.oci.image.config.v1+json",
                      digest="sha256:" + "2" * 64, size=200),
    layer=Descriptor(media_type="application/vnd.oci.image.layer.v1.tar+gzip",
                     digest="sha256:" + "3" * 64, size=4000),
    firmware=Firmware(name="hello.bin", sha256=SHA, size=4096))
PUSH = PushReceipt(target="esp32c3", repository="registry.test:5000/cloud-iot/hello",
                   tag="esp32c3-hello-1.0.0-0123456", digest=DIGEST,
                   pushed=(DIGEST, "sha256:" + "2" * 64))

#: One receipt of every kind, with every part.
EVERY_KIND: tuple[Receipt, ...] = (
    BUILD,
    AppReceipt(target="esp32c3", chip="esp32c3", app=APP,
               app_desc=AppDesc(version="1.0.0", project_name="hello", elf_sha256="ef" * 32)),
    IMAGE,
    IndexReceipt(tag="hello-1.0.0", index=MANIFEST, targets=CHILDREN),
    UploadReceipt(target="esp32c3", store="s3://bucket/prefix", endpoint="http://s3.test:8333",
                  build="9" * 64,
                  objects=(StoredObject(key="hello/hello-1.0.0/esp32c3/artifacts/hello.bin",
                                        sha256=SHA, size=4096),)),
    PUSH,
    PushIndexReceipt(repository="registry.test:5000/cloud-iot/hello", tag="hello-1.0.0",
                     digest=DIGEST, targets=CHILDREN),
    DeltaReceipt(target="esp32c3@prod", app_sha256=SHA, patches=(PatchRecord(
        base="1.0.0", base_app_sha256=SHA, base_hash="ab" * 32, base_manifest=DIGEST,
        name="from-1.0.0.patch", path="build/delta/esp32c3@prod/from-1.0.0.patch", size=412,
        sha256=SHA, ratio=0.0761),), skipped=(("0.9.0", "the patch is 95% of the app"),)),
    PushDeltaReceipt(target="esp32c3", repository="registry.test:5000/cloud-iot/hello",
                     subject=DIGEST, artifacts=(DIGEST,), fallback=True),
)
KINDS = {type(r) for r in EVERY_KIND}


def test_every_kind_is_covered_and_has_a_schema() -> None:
    assert {k.KIND for k in KINDS} == set(receiptfile.SCHEMAS)
    assert len(KINDS) == len(EVERY_KIND)


@pytest.mark.parametrize("receipt", EVERY_KIND, ids=lambda r: r.KIND)
def test_round_trip(tmp_path: Path, receipt: Receipt) -> None:
    path = tmp_path / "receipts" / f"{receipt.KIND}.json"
    write(path, receipt)
    assert read(path, type(receipt)) == receipt
    assert load(path, type(receipt), "label") == receipt
    data = json.loads(path.read_bytes())
    assert (data["kind"], data["schema"]) == (receipt.KIND, receiptfile.SCHEMAS[receipt.KIND])
    assert receiptfile.is_current(path, receipt.KIND)


def test_the_file_is_plain_json_with_sorted_keys(tmp_path: Path) -> None:
    path = tmp_path / "push.json"
    write(path, PUSH)
    assert path.read_text() == """\
{
  "digest": "sha256:abababababababababababababababababababababababababababababababab",
  "kind": "push",
  "pushed": [
    "sha256:abababababababababababababababababababababababababababababababab",
    "sha256:2222222222222222222222222222222222222222222222222222222222222222"
  ],
  "repository": "registry.test:5000/cloud-iot/hello",
  "schema": 1,
  "tag": "esp32c3-hello-1.0.0-0123456",
  "target": "esp32c3"
}
"""
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["push.json"], "no temp file is left"


@pytest.mark.parametrize("receipt", EVERY_KIND, ids=lambda r: r.KIND)
def test_write_is_byte_stable(tmp_path: Path, receipt: Receipt) -> None:
    write(tmp_path / "a.json", receipt)
    # an equal receipt, built again field by field
    again = type(receipt)(**{f.name: getattr(receipt, f.name)
                             for f in reversed(dataclasses.fields(receipt))})  # type: ignore[arg-type]
    write(tmp_path / "b.json", again)
    first = (tmp_path / "a.json").read_bytes()
    assert first == (tmp_path / "b.json").read_bytes()
    write(tmp_path / "a.json", receipt)
    assert (tmp_path / "a.json").read_bytes() == first


def raw(receipt: Receipt) -> dict[str, Any]:
    """The JSON object ``write`` makes of ``receipt``."""
    return {"kind": receipt.KIND, "schema": receiptfile.SCHEMAS[receipt.KIND],
            **json.loads(json.dumps(dataclasses.asdict(receipt)))}  # type: ignore[call-overload]


def write_raw(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_missing_file_is_stale(tmp_path: Path) -> None:
    assert read(tmp_path / "none.json", PushReceipt) is None


@pytest.mark.parametrize("text", ["", "{", "not json", "\xff\xfe", '{"kind": "push",'])
def test_invalid_json_is_stale(tmp_path: Path, text: str) -> None:
    path = tmp_path / "push.json"
    path.write_bytes(text.encode("latin-1"))
    assert read(path, PushReceipt) is None


@pytest.mark.parametrize("data", [[], "push", 1, None, [raw(PUSH)]])
def test_json_that_is_not_an_object_is_stale(tmp_path: Path, data: object) -> None:
    assert read(write_raw(tmp_path / "push.json", data), PushReceipt) is None


def test_a_directory_is_stale(tmp_path: Path) -> None:
    (tmp_path / "push.json").mkdir()
    assert read(tmp_path / "push.json", PushReceipt) is None


def test_another_kind_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write(path, PUSH)
    assert read(path, PushReceipt) == PUSH
    assert read(path, ImageReceipt) is None
    assert read(path, PushIndexReceipt) is None
    # the same body under another kind's name
    assert read(write_raw(path, {**raw(PUSH), "kind": "push-index"}), PushReceipt) is None


@pytest.mark.parametrize("frame", [{"schema": 2}, {"schema": 0}, {"schema": "1"},
                                   {"schema": None}, {"kind": None}, {"kind": "PUSH"}])
def test_another_schema_or_frame_is_stale(tmp_path: Path, frame: dict[str, Any]) -> None:
    path = write_raw(tmp_path / "push.json", {**raw(PUSH), **frame})
    assert read(path, PushReceipt) is None
    assert not receiptfile.is_current(path, "push")


@pytest.mark.parametrize("key", ["kind", "schema"])
def test_a_missing_frame_key_is_stale(tmp_path: Path, key: str) -> None:
    data = raw(PUSH)
    del data[key]
    path = write_raw(tmp_path / "push.json", data)
    assert read(path, PushReceipt) is None
    assert not receiptfile.is_current(path, "push")


@pytest.mark.parametrize("schema", [True, 1.0])
def test_a_schema_that_only_equals_the_version_is_stale(tmp_path: Path, schema: object) -> None:
    path = write_raw(tmp_path / "push.json", {**raw(PUSH), "schema": schema})
    assert not receiptfile.is_current(path, "push")
    assert read(path, PushReceipt) is None


@pytest.mark.parametrize("field", ["target", "repository", "tag", "digest", "pushed"])
def test_a_missing_field_is_stale(tmp_path: Path, field: str) -> None:
    data = raw(PUSH)
    del data[field]
    assert read(write_raw(tmp_path / "push.json", data), PushReceipt) is None


def test_an_extra_field_is_stale(tmp_path: Path) -> None:
    assert read(write_raw(tmp_path / "push.json", {**raw(PUSH), "extra": 1}),
                PushReceipt) is None


def test_a_missing_or_extra_field_of_a_part_is_stale(tmp_path: Path) -> None:
    data = raw(IMAGE)
    del data["manifest"]["size"]
    assert read(write_raw(tmp_path / "image.json", data), ImageReceipt) is None
    data = raw(IMAGE)
    data["firmware"]["extra"] = "x"
    assert read(write_raw(tmp_path / "image.json", data), ImageReceipt) is None
    data = raw(BUILD)
    del data["artifacts"][1]["sha256"]
    assert read(write_raw(tmp_path / "build.json", data), BuildReceipt) is None


@pytest.mark.parametrize(("where", "value"), [
    (("manifest", "size"), True),  # bool is an int in Python, not in a receipt
    (("manifest", "size"), False),
    (("manifest", "size"), 512.0),
    (("manifest", "size"), "512"),
    (("manifest", "size"), None),
    (("manifest", "digest"), 7),
    (("manifest",), "sha256:..."),
    (("manifest",), [MANIFEST.media_type, MANIFEST.digest, MANIFEST.size]),
    (("tag",), ["esp32c3"]),
    (("tag",), None),
    (("firmware", "name"), {"name": "hello.bin"}),
])
def test_a_wrong_field_type_is_stale(tmp_path: Path, where: tuple[str, ...],
                                     value: object) -> None:
    data = raw(IMAGE)
    parent = data
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    assert read(write_raw(tmp_path / "image.json", data), ImageReceipt) is None


@pytest.mark.parametrize("pushed", ["sha256:a", [DIGEST, 3], [DIGEST, None], [[DIGEST]],
                                    {"0": DIGEST}, [True]])
def test_a_wrong_tuple_is_stale(tmp_path: Path, pushed: object) -> None:
    assert read(write_raw(tmp_path / "push.json", {**raw(PUSH), "pushed": pushed}),
                PushReceipt) is None


def test_a_wrong_part_in_a_tuple_is_stale(tmp_path: Path) -> None:
    data = raw(BUILD)
    data["artifacts"][0]["size"] = True
    assert read(write_raw(tmp_path / "build.json", data), BuildReceipt) is None
    data["artifacts"] = [APP.name]
    assert read(write_raw(tmp_path / "build.json", data), BuildReceipt) is None


def test_an_empty_tuple_is_fine(tmp_path: Path) -> None:
    empty = dataclasses.replace(PUSH, pushed=())
    write(tmp_path / "push.json", empty)
    assert read(tmp_path / "push.json", PushReceipt) == empty


def test_reading_does_not_touch_the_file(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "push.json", {**raw(PUSH), "extra": 1})
    before = path.read_bytes()
    assert read(path, PushReceipt) is None
    assert path.read_bytes() == before


LABEL = "build/receipts/push-esp32c3.json"
STALE = (f"{LABEL} is missing or was written by another esp32tasks version; run `doit "
         "release` again (the task that makes it runs first)")


@pytest.mark.parametrize("content", [None, "{", '{"kind": "push", "schema": 0}',
                                     json.dumps({**raw(PUSH), "pushed": [1]})])
def test_load_names_the_label_and_the_fix_and_removes_the_file(
        tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "push-esp32c3.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(StaleReceipt) as info:
        load(path, PushReceipt, LABEL)
    assert str(info.value) == STALE
    assert not path.exists()
    assert info.value.__cause__ is None


def test_load_keeps_a_current_receipt(tmp_path: Path) -> None:
    path = tmp_path / "push-esp32c3.json"
    write(path, PUSH)
    assert load(path, PushReceipt, LABEL) == PUSH
    assert path.exists()


def test_load_of_another_kind_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "push-esp32c3.json"
    write(path, IMAGE)
    with pytest.raises(StaleReceipt) as info:
        load(path, PushReceipt, LABEL)
    assert str(info.value) == STALE
    assert not path.exists()


def test_is_current_checks_the_frame_only(tmp_path: Path) -> None:
    path = tmp_path / "push.json"
    write(path, PUSH)
    assert receiptfile.is_current(path, "push")
    assert not receiptfile.is_current(path, "image")
    assert not receiptfile.is_current(tmp_path / "none.json", "push")
    # the body is load's business: a frame alone is current
    assert receiptfile.is_current(write_raw(tmp_path / "frame.json",
                                            {"kind": "push", "schema": 1}), "push")
    assert not receiptfile.is_current(write_raw(tmp_path / "list.json", [raw(PUSH)]), "push")
    (tmp_path / "bad.json").write_text("{")
    assert not receiptfile.is_current(tmp_path / "bad.json", "push")


def test_all_current(tmp_path: Path) -> None:
    write(tmp_path / "push.json", PUSH)
    write(tmp_path / "image.json", IMAGE)
    assert receiptfile.all_current([(tmp_path / "push.json", "push"),
                                    (tmp_path / "image.json", "image")])
    assert receiptfile.all_current([])
    assert not receiptfile.all_current([(tmp_path / "push.json", "push"),
                                        (tmp_path / "image.json", "push")])
    assert not receiptfile.all_current([(tmp_path / "push.json", "push"),
                                        (tmp_path / "none.json", "image")])


def test_receiptfile_does_not_import_the_dataclasses() -> None:
    """The no-op release checks frames without paying for the receipt classes."""
    import subprocess
    import sys

    code = ("import sys, esp32tasks.receiptfile; "
            "print('esp32tasks.receipts' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


# -- property: write then read is the identity ---------------------------------------------

TEXT = st.text(max_size=40)
NUMBER = st.integers(min_value=-(2**63), max_value=2**63)


def parts(kind: type) -> st.SearchStrategy[Any]:
    return st.builds(kind, **{f.name: TEXT if f.type == "str" else NUMBER
                              for f in dataclasses.fields(kind)})


RECEIPTS: st.SearchStrategy[Receipt] = st.one_of(
    st.builds(BuildReceipt, target=TEXT, chip=TEXT,
              artifacts=st.lists(parts(Artifact), max_size=4).map(tuple)),
    st.builds(AppReceipt, target=TEXT, chip=TEXT, app=parts(Artifact),
              app_desc=parts(AppDesc)),
    st.builds(ImageReceipt, target=TEXT, tag=TEXT, manifest=parts(Descriptor),
              config=parts(Descriptor), layer=parts(Descriptor), firmware=parts(Firmware)),
    st.builds(IndexReceipt, tag=TEXT, index=parts(Descriptor),
              targets=st.lists(parts(Child), max_size=4).map(tuple)),
    st.builds(UploadReceipt, target=TEXT, store=TEXT, endpoint=TEXT, build=TEXT,
              objects=st.lists(parts(StoredObject), max_size=4).map(tuple)),
    st.builds(PushReceipt, target=TEXT, repository=TEXT, tag=TEXT, digest=TEXT,
              pushed=st.lists(TEXT, max_size=6).map(tuple)),
    st.builds(PushIndexReceipt, repository=TEXT, tag=TEXT, digest=TEXT,
              targets=st.lists(parts(Child), max_size=4).map(tuple)),
)


@settings(max_examples=50, deadline=None)
@given(RECEIPTS)
def test_write_then_read_is_the_identity(tmp_path_factory: pytest.TempPathFactory,
                                         receipt: Receipt) -> None:
    path = tmp_path_factory.mktemp("receipt") / "r.json"
    write(path, receipt)
    assert read(path, type(receipt)) == receipt
    data = path.read_bytes()
    write(path, read(path, type(receipt)))  # type: ignore[arg-type]
    assert path.read_bytes() == data
