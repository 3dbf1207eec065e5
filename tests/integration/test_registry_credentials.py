"""Registry credentials go to the registry alone, whatever its answers point at."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers.registry import FlakyProxy, RegistryServer, configure
from tests.support.registry_wire import INDEX_TAG, PATH
from tests.support.repo import Repo

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-never-elsewhere"


@pytest.fixture
def front_and_capture(registry: RegistryServer) -> Iterator[tuple[FlakyProxy, FlakyProxy]]:
    """``front`` is the registry as configured; it points every ``Location`` at ``capture``,
    another host:port that forwards to the same registry and records what it is sent."""
    capture = FlakyProxy(registry)
    front = FlakyProxy(registry)
    front.rewrite_location = capture.host
    yield front, capture
    front.close()
    capture.close()


def test_an_upload_location_on_another_host_gets_no_credentials(
        repo: Repo, registry: RegistryServer,
        front_and_capture: tuple[FlakyProxy, FlakyProxy]) -> None:
    front, capture = front_and_capture
    configure(repo, front)
    repo.env.update(ESP32TASKS_REGISTRY_USER="ci", ESP32TASKS_REGISTRY_PASSWORD=PASSWORD)
    run = repo.doit("release")
    assert "push-index" in run.executed
    uploads = [(m, p) for m, p, _ in capture.received]
    assert uploads
    assert all(m == "PUT" and "/blobs/uploads/" in p for m, p in uploads)
    assert [h for _, _, h in capture.received if "authorization" in h] == []
    # credentials were in play: every request to the registry itself carried them
    assert all("authorization" in h for _, _, h in front.received)
    assert registry.manifest(PATH, INDEX_TAG)[0]  # and the release landed
