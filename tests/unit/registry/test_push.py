"""What a push sends, decided from our push receipt, with a recording fake client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar, cast

import pytest

from esp32tasks import oci, receipts
from esp32tasks.config import RegistryConfig
from esp32tasks.errors import ReleaseRefused
from esp32tasks.receipts import Descriptor, Firmware, ImageReceipt, PushReceipt
from esp32tasks.registry.client import BlobsMissing, Client
from esp32tasks.registry.push import REMEMBERED, _known, _remembered, send_image

T = TypeVar("T")
R = TypeVar("R")
REPOSITORY = "registry.test:5000/cloud-iot/hello"
TAG = "esp32c3-hello-1.0.0-abcdef1"


class FakeClient:
    """Records each call as one string; the registry holds ``present`` blobs and tags."""

    def __init__(self, *, present: Iterable[str] = (), tags: dict[str, str] | None = None,
                 blobs_missing_once: bool = False, force: bool = False) -> None:
        self.config = RegistryConfig(repository=REPOSITORY, force=force)
        self.present = set(present)
        self.tags = dict(tags or {})
        self.blobs_missing_once = blobs_missing_once
        self.calls: list[str] = []

    def parallel(self, function: Callable[[T], R], items: Iterable[T]) -> list[R]:
        return [function(item) for item in items]

    def manifest_digest(self, reference: str) -> str | None:
        self.calls.append(f"HEAD manifest {reference}")
        return self.tags.get(reference)

    def has_blob(self, descriptor: Descriptor) -> bool:
        self.calls.append(f"HEAD blob {descriptor.digest}")
        return descriptor.digest in self.present

    def upload_blob(self, path: Path, descriptor: Descriptor) -> None:
        assert path.read_bytes()
        self.calls.append(f"upload {descriptor.digest}")
        self.present.add(descriptor.digest)

    def put_manifest(self, reference: str, blob: oci.Blob) -> None:
        self.calls.append(f"PUT manifest {reference}")
        if self.blobs_missing_once:
            self.blobs_missing_once = False
            raise BlobsMissing("registry refused PUT (MANIFEST_BLOB_UNKNOWN)")
        self.tags[reference] = blob.digest


def send(client: FakeClient, layout: oci.Layout, image: ImageReceipt,
         previous: PushReceipt | None) -> None:
    send_image(cast("Client", client), layout, image, previous)


def descriptor(blob: oci.Blob) -> Descriptor:
    return Descriptor(media_type=blob.media_type, digest=blob.digest, size=len(blob.data))


@pytest.fixture
def image(tmp_path: Path) -> tuple[oci.Layout, ImageReceipt]:
    layout = oci.Layout(tmp_path / "oci")
    layer = oci.Blob("application/vnd.oci.image.layer.v1.tar+gzip", b"layer bytes")
    config = oci.Blob("application/vnd.oci.image.config.v1+json", b"{}")
    manifest = oci.Blob(oci.MANIFEST_MEDIA_TYPE, b'{"manifest": 1}')
    for blob in (layer, config, manifest):
        layout.write_blob(blob)
    return layout, ImageReceipt(target="esp32c3", tag=TAG, manifest=descriptor(manifest),
                                config=descriptor(config), layer=descriptor(layer),
                                firmware=Firmware(name="hello.bin", sha256="0" * 64, size=1))


def digests(image: ImageReceipt) -> tuple[str, str, str]:
    return image.manifest.digest, image.layer.digest, image.config.digest


def receipt(pushed: list[str], *, tag: str = "esp32c3-hello-1.0.0-0000000",
            repository: str = REPOSITORY) -> PushReceipt:
    return PushReceipt(target="esp32c3", repository=repository, tag=tag, digest=pushed[0],
                       pushed=tuple(pushed))


def stale_push_receipt(tmp_path: Path) -> PushReceipt | None:
    """What push_image reads back from a push receipt that is not one (hand-edited)."""
    path = tmp_path / "push-esp32c3.json"
    path.write_text('{"kind": "push", "schema": 1, "repository": "x", "pushed": "not a list"}')
    return receipts.read(path, PushReceipt)


def test_known_manifest_is_one_put(image: tuple[oci.Layout, ImageReceipt]) -> None:
    layout, img = image
    client = FakeClient()
    send(client, layout, img, receipt(list(digests(img))))
    assert client.calls == [f"PUT manifest {TAG}"]


def test_new_blobs_go_up_without_a_head(image: tuple[oci.Layout, ImageReceipt]) -> None:
    layout, img = image
    _, layer, config = digests(img)
    client = FakeClient()
    send(client, layout, img, receipt(["sha256:" + "0" * 64]))
    assert client.calls == [f"upload {layer}", f"upload {config}", f"PUT manifest {TAG}"]


def test_known_blob_is_not_sent(image: tuple[oci.Layout, ImageReceipt]) -> None:
    layout, img = image
    _, layer, config = digests(img)
    client = FakeClient()
    send(client, layout, img, receipt(["sha256:" + "0" * 64, config]))
    assert client.calls == [f"upload {layer}", f"PUT manifest {TAG}"]


def test_blobs_deleted_behind_our_back(image: tuple[oci.Layout, ImageReceipt]) -> None:
    layout, img = image
    _, layer, config = digests(img)
    client = FakeClient(present=[config], blobs_missing_once=True)
    send(client, layout, img, receipt(list(digests(img))))
    assert client.calls == [f"PUT manifest {TAG}", f"HEAD blob {layer}", f"upload {layer}",
                            f"HEAD blob {config}", f"PUT manifest {TAG}"]


@pytest.mark.parametrize("previous", ["none", "other-repository", "not-a-receipt"])
def test_unknown_repository_checks_the_tag_and_each_blob(
        image: tuple[oci.Layout, ImageReceipt], tmp_path: Path, previous: str) -> None:
    layout, img = image
    _, layer, config = digests(img)
    last = {"none": None,
            "other-repository": receipt(["sha256:" + "0" * 64],
                                        repository="elsewhere.test/cloud-iot/hello"),
            "not-a-receipt": stale_push_receipt(tmp_path)}[previous]
    client = FakeClient(present=[layer])
    send(client, layout, img, last)
    assert client.calls == [f"HEAD manifest {TAG}", f"HEAD blob {layer}", f"HEAD blob {config}",
                            f"upload {config}", f"PUT manifest {TAG}"]


def test_unknown_repository_tag_already_ours_sends_nothing(
        image: tuple[oci.Layout, ImageReceipt]) -> None:
    layout, img = image
    client = FakeClient(tags={TAG: img.manifest.digest})
    send(client, layout, img, None)
    assert client.calls == [f"HEAD manifest {TAG}"]


def test_our_last_push_of_this_tag_had_other_bytes(
        image: tuple[oci.Layout, ImageReceipt]) -> None:
    layout, img = image
    other = "sha256:" + "1" * 64
    client = FakeClient()
    with pytest.raises(ReleaseRefused, match=r"already points at sha256:1+ \(our last push\)") \
            as info:
        send(client, layout, img, receipt([other], tag=TAG))
    assert str(info.value) == (
        f"{REPOSITORY}:{TAG} already points at {other} (our last push), not at this build's "
        f"{img.manifest.digest}; released versions are immutable: bump [project] version, or "
        "overwrite with ESP32TASKS_FORCE=1 (or [registry] force = true)")
    assert client.calls == []
    forced = FakeClient(force=True)
    send(forced, layout, img, receipt([other], tag=TAG))
    assert forced.calls[-1] == f"PUT manifest {TAG}"


def test_receipt_memory(tmp_path: Path) -> None:
    assert _known(receipt(["sha256:a"]), REPOSITORY) == ("sha256:a",)
    assert _known(receipt(["sha256:b", "sha256:a"]), REPOSITORY) == ("sha256:b", "sha256:a")
    # a receipt whose "pushed" is not a list of digests is stale: nothing is known
    bad = tmp_path / "push-esp32c3.json"
    bad.write_text(json.dumps({"kind": "push", "schema": 1, "target": "esp32c3",
                               "repository": REPOSITORY, "tag": TAG, "digest": "sha256:a",
                               "pushed": ["sha256:a", 3]}))
    assert receipts.read(bad, PushReceipt) is None
    assert _known(receipts.read(bad, PushReceipt), REPOSITORY) is None
    assert _known(receipt(["sha256:a"]), "other.test/x") is None
    assert _known(None, REPOSITORY) is None

    def d(digest: str) -> Descriptor:
        return Descriptor(media_type="x", digest=digest, size=1)

    image = ImageReceipt(target="esp32c3", tag=TAG, manifest=d("m"), layer=d("l"),
                         config=d("c"), firmware=Firmware(name="a.bin", sha256="0" * 64, size=1))
    old = [f"d{i}" for i in range(2 * REMEMBERED)]
    assert _remembered(image, ("c", *old)) == ("m", "l", "c", *old)[:REMEMBERED]
    assert _remembered(image, None) == ("m", "l", "c")
