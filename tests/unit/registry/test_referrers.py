"""The referrers API path (distribution spec 1.1), on loopback: a registry that has it
answers the index itself, and no fallback tag is read; one without it answers 404."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path

from esp32tasks import oci
from esp32tasks.config import RegistryConfig
from esp32tasks.registry.client import Client
from esp32tasks.registry.referrers import referrers
from tests.support.loopback import Answer, Server, serve

__all__ = ["serve"]  # a fixture, used by name

SUBJECT = "sha256:" + "a" * 64
OURS = {"mediaType": oci.MANIFEST_MEDIA_TYPE, "digest": "sha256:" + "b" * 64, "size": 400,
        "artifactType": oci.DELTA_ARTIFACT_TYPE,
        "annotations": {"dev.esp32tasks.delta.base-version": "1.0.0"}}
COSIGN = {"mediaType": oci.MANIFEST_MEDIA_TYPE, "digest": "sha256:" + "c" * 64, "size": 300,
          "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"}


def answer(status: str, body: bytes, kind: str) -> Answer:
    def send(conn: socket.socket) -> None:
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: "
                     f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    return send


def client(server: Server, tmp_path: Path) -> Client:
    config = RegistryConfig(repository=f"{server.host}/cloud-iot/hello", insecure=True,
                            docker_config=str(tmp_path / "config.json"))
    return Client(config, tmp_path, push=False)


def test_a_registry_with_the_api_lists_the_patches_itself(
        serve: Callable[[Answer], Server], tmp_path: Path) -> None:
    index = json.dumps({"schemaVersion": 2, "mediaType": oci.INDEX_MEDIA_TYPE,
                        "manifests": [COSIGN, OURS]}).encode()
    server = serve(answer("200 OK", index, oci.INDEX_MEDIA_TYPE))
    found = client(server, tmp_path)
    assert found.referrers(SUBJECT) == index
    assert referrers(found, SUBJECT) == [OURS]  # only our artifact type


def test_a_registry_without_it_answers_404_and_the_fallback_is_used(
        serve: Callable[[Answer], Server], tmp_path: Path) -> None:
    server = serve(answer("404 Not Found", b"404 page not found\n", "text/plain"))
    found = client(server, tmp_path)
    assert found.referrers(SUBJECT) is None
    assert referrers(found, SUBJECT) == []  # and the fallback tag is not there either
