"""The local directory store: what ``[delta] latest`` lists."""

from __future__ import annotations

from pathlib import Path

from esp32tasks.store.local import DirStore


def test_directories_are_the_names_under_a_prefix(tmp_path: Path) -> None:
    store = DirStore(tmp_path / "store")
    assert store.directories("hello/") == []  # nothing there yet
    store.put_bytes("hello/hello-1.0.1/release.json", b"{}")
    store.put_bytes("hello/hello-1.0.0/esp32c3/artifacts/hello.bin", b"app")
    store.put_bytes("hello/channels.json", b"{}")  # a file, not a directory
    assert store.directories("hello/") == ["hello-1.0.0", "hello-1.0.1"]
    assert store.directories("hello/channels.json/") == []
