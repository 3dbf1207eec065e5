"""The build cache's entries (store/cache.py): what a reader trusts, and what it refuses."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

import pytest

from esp32tasks import runcache
from esp32tasks.config import CacheConfig, StoreConfig
from esp32tasks.store import cache as build_cache
from esp32tasks.store.local import DirStore

DIGEST = build_cache.input_digest({"step": "esp32c3", "sources": [["main.c", "ab" * 32]]})


@pytest.fixture(autouse=True)
def _fresh_run() -> None:
    runcache.reset()  # the once-per-run notices


def cache(where: Path, *, key: bytes = b"k", write: bool = True) -> build_cache.Cache:
    config = CacheConfig(store=StoreConfig(url=str(where)), write=write, key=key)
    return build_cache.Cache(config, DirStore(where))


def built(root: Path) -> dict[str, Path]:
    out = root / "build" / "esp32c3"
    out.mkdir(parents=True)
    (out / "hello.bin").write_bytes(b"\xe9app")
    (out / "bootloader.bin").write_bytes(b"\xe9boot")
    (root / "build" / "receipts").mkdir()
    receipt = root / "build" / "receipts" / "build-esp32c3.json"
    receipt.write_text('{"kind": "build"}')
    return {"build": receipt}


FILES = ["build/esp32c3/hello.bin", "build/esp32c3/bootloader.bin"]
OWN = PurePosixPath("build/esp32c3")


def test_the_input_digest_is_canonical_json() -> None:
    one = build_cache.input_digest({"a": 1, "b": [1, 2]})
    assert one == build_cache.input_digest({"b": [1, 2], "a": 1})
    assert one != build_cache.input_digest({"a": 1, "b": [2, 1]})
    assert one == "sha256:" + hashlib.sha256(b'{"a":1,"b":[1,2]}').hexdigest()


def test_a_saved_entry_restores_into_another_checkout(tmp_path: Path) -> None:
    writer = tmp_path / "a"
    c = cache(tmp_path / "cache")
    c.save(DIGEST, "build:esp32c3", writer, FILES, built(writer))
    entry = cache(tmp_path / "cache", write=False).lookup(DIGEST, "build:esp32c3")
    assert entry is not None
    assert entry.receipts == {"build": b'{"kind": "build"}'}
    reader = tmp_path / "b"
    assert cache(tmp_path / "cache").restore(entry, reader, OWN)
    for f in FILES:
        assert (reader / f).read_bytes() == (writer / f).read_bytes()


def test_identical_files_are_one_blob(tmp_path: Path) -> None:
    root = tmp_path / "a"
    receipts = built(root)
    c = cache(tmp_path / "cache")
    c.save(DIGEST, "build:esp32c3", root, FILES, receipts)
    other = build_cache.input_digest({"step": "esp32c6"})
    c.save(other, "build:esp32c6", root, FILES[1:], receipts)
    assert len(list((tmp_path / "cache" / "blobs" / "sha256").iterdir())) == 2
    assert len(list((tmp_path / "cache" / "entries").iterdir())) == 2


def test_nothing_is_written_without_write(tmp_path: Path) -> None:
    root = tmp_path / "a"
    cache(tmp_path / "cache", write=False).save(DIGEST, "build:esp32c3", root, FILES,
                                                built(root))
    assert not (tmp_path / "cache").exists()


def test_a_keyed_reader_refuses_an_entry_without_its_hmac(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "a"
    cache(tmp_path / "cache", key=b"").save(DIGEST, "build:esp32c3", root, FILES, built(root))
    assert cache(tmp_path / "cache", key=b"k").lookup(DIGEST, "build:esp32c3") is None
    assert "no valid HMAC" in capsys.readouterr().err
    assert cache(tmp_path / "cache", key=b"").lookup(DIGEST, "build:esp32c3") is not None
    assert "ESP32TASKS_CACHE_KEY is not set" in capsys.readouterr().err


def test_another_key_or_an_edited_entry_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "a"
    cache(tmp_path / "cache", key=b"k").save(DIGEST, "build:esp32c3", root, FILES, built(root))
    assert cache(tmp_path / "cache", key=b"other").lookup(DIGEST, "build:esp32c3") is None
    [path] = (tmp_path / "cache" / "entries").iterdir()
    doc = json.loads(path.read_text())
    doc["files"][0]["size"] += 1
    path.write_text(json.dumps(doc))
    assert cache(tmp_path / "cache", key=b"k").lookup(DIGEST, "build:esp32c3") is None


def test_an_entry_under_another_input_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "a"
    c = cache(tmp_path / "cache", key=b"")
    c.save(DIGEST, "build:esp32c3", root, FILES, built(root))
    other = build_cache.input_digest({"step": "esp32c6"})
    [path] = (tmp_path / "cache" / "entries").iterdir()
    path.rename(path.with_name(other.removeprefix("sha256:") + ".json"))
    assert c.lookup(other, "build:esp32c6") is None


@pytest.mark.parametrize("bad", ["../escape.bin", "/etc/passwd", "build/./x", "a\\b", ""])
def test_a_path_outside_the_checkout_is_refused(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "a"
    c = cache(tmp_path / "cache", key=b"")
    c.save(DIGEST, "build:esp32c3", root, FILES, built(root))
    [path] = (tmp_path / "cache" / "entries").iterdir()
    doc = json.loads(path.read_text())
    doc["files"][0]["path"] = bad
    path.write_text(json.dumps(doc))
    assert c.lookup(DIGEST, "build:esp32c3") is None


def test_a_file_outside_the_own_directory_is_never_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    writer = tmp_path / "a"
    c = cache(tmp_path / "cache")
    receipts = built(writer)
    (writer / "main.c").write_text("int main;")
    c.save(DIGEST, "build:esp32c3", writer, [*FILES, "main.c"], receipts)
    entry = c.lookup(DIGEST, "build:esp32c3")
    assert entry is not None
    reader = tmp_path / "b"
    reader.mkdir()
    (reader / "main.c").write_text("int main = 1;")  # this checkout's own source
    assert not c.restore(entry, reader, OWN)
    assert "other bytes than this checkout's" in capsys.readouterr().err
    assert (reader / "main.c").read_text() == "int main = 1;"
    assert not (reader / "build").exists(), "nothing restored when one file fails"
    (reader / "main.c").write_text("int main;")
    assert c.restore(entry, reader, OWN)


def test_a_corrupt_blob_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    writer = tmp_path / "a"
    c = cache(tmp_path / "cache")
    c.save(DIGEST, "build:esp32c3", writer, FILES, built(writer))
    entry = c.lookup(DIGEST, "build:esp32c3")
    assert entry is not None
    blob = hashlib.sha256(b"\xe9boot").hexdigest()
    (tmp_path / "cache" / "blobs" / "sha256" / blob).write_bytes(b"\xe9b00t")
    reader = tmp_path / "b"
    assert not c.restore(entry, reader, OWN)
    assert "does not hash to its name" in capsys.readouterr().err
    assert not (reader / "build" / "esp32c3" / "hello.bin").exists()
