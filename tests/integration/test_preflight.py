"""Preflight, then publish: a release that will be refused writes nothing remote.

Against the real registry and S3 server, counting write requests (PUT, POST, PATCH,
DELETE) at both: a refused release sends none.
"""

from __future__ import annotations

import json

import pytest

from esp32tasks.receipts import IndexReceipt
from tests.servers.registry import RegistryServer, configure
from tests.servers.s3 import RecordingProxy, Seaweed
from tests.support.repo import Repo, receipt
from tests.support.s3_release import PREFIX, new_bucket, use_s3

pytestmark = pytest.mark.integration

APP = "examples/hello"
WRITES = ("PUT", "POST", "PATCH", "DELETE")


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def registry_writes(registry: RegistryServer, since: int) -> list[str]:
    return [f"{r.method} {r.path}" for r in registry.requests()[since:] if r.method in WRITES]


def published(repo: Repo, registry: RegistryServer, s3_server: Seaweed,
              s3_proxy: RecordingProxy) -> str:
    """Registry and S3 for the repo, committed; the bucket's name."""
    bucket = s3_server.bucket(new_bucket())
    configure(repo, registry)
    use_s3(repo, s3_proxy.endpoint, bucket)
    return bucket


def test_a_second_commit_at_a_released_version_writes_nothing(
        repo: Repo, registry: RegistryServer, s3_server: Seaweed,
        s3_proxy: RecordingProxy) -> None:
    published(repo, registry, s3_server, s3_proxy)
    first = repo.git("rev-parse", "HEAD").strip()
    repo.doit("release")
    index = receipt(repo, "index", IndexReceipt)
    repo.edit(f"{APP}/sdkconfig.defaults.esp32c6", '"Hello from', '"Hello again from')
    repo.commit("esp32c6 greets differently")
    before = len(registry.requests())
    s3_proxy.clear()

    run = repo.doit("release", check=False)

    assert run.code != 0
    assert registry_writes(registry, before) == []
    assert [f"{r.method} {r.key}" for r in s3_proxy.writes()] == []
    [error] = errors(run.stderr)  # the registry's and the store's refusal, in one report
    after = run.stderr.splitlines()[run.stderr.splitlines().index(error) + 1:]
    lines = [error, after[0].strip()]
    assert lines[0].startswith("error: preflight: ")
    assert f":hello-1.0.0 already points at {index.index.digest} (released from commit " \
        f"{first[:7]}, committed " in lines[0]
    assert ", clean), not at this build's" in lines[0]
    assert "bump [project] version, or overwrite with ESP32TASKS_FORCE=1" in lines[0]
    assert lines[1].startswith("s3://")
    assert f"/{PREFIX}/hello/hello-1.0.0/release.json was " \
        "released by " in lines[1]
    assert f" from commit {first[:7]} (committed " in lines[1]
    # nothing ran that writes: the builds and images did, the publishing did not
    assert not any(t.startswith(("upload:", "push:", "push-index", "manifest"))
                   for t in run.executed), run.executed
    # forced, the same release goes through (and the refusal left nothing to distrust)
    repo.env["ESP32TASKS_FORCE"] = "1"
    assert "push-index" in repo.doit("release").executed


def test_a_dirty_tree_is_refused_before_any_write_and_allowed_under_dirty_names(
        repo: Repo, registry: RegistryServer, s3_server: Seaweed,
        s3_proxy: RecordingProxy) -> None:
    bucket = published(repo, registry, s3_server, s3_proxy)
    repo.edit(f"{APP}/sdkconfig.defaults.esp32c6", '"Hello from', '"Hello, uncommitted, from')
    s3_proxy.clear()
    run = repo.doit("release", check=False)
    assert run.code != 0
    assert errors(run.stderr) == [
        "error: preflight: refusing to publish this release from a working tree with "
        "uncommitted changes; commit them, or allow it with ESP32TASKS_ALLOW_DIRTY=1 (or "
        "[project] allow_dirty = true): every name then ends in -dirty, and no channel moves"]
    assert registry_writes(registry, 0) == []
    assert s3_proxy.writes() == []

    repo.env["ESP32TASKS_ALLOW_DIRTY"] = "1"
    repo.doit("release")
    assert receipt(repo, "index", IndexReceipt).tag == "hello-1.0.0-dirty"
    registry.manifest("cloud-iot/hello", "hello-1.0.0-dirty")  # there
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"{PREFIX}/hello/hello-1.0.0-dirty/release.json" in keys
    assert not any(k.startswith(f"{PREFIX}/hello/hello-1.0.0/") for k in keys)
    doc = json.loads(s3_server.client().get_object(
        Bucket=bucket, Key=f"{PREFIX}/hello/hello-1.0.0-dirty/release.json")["Body"].read())
    assert doc["git"]["dirty"] is True

    # the clean commit of that version is not refused: a dirty release took no release name
    del repo.env["ESP32TASKS_ALLOW_DIRTY"]
    repo.commit("the greeting, committed")
    run = repo.doit("release")
    assert receipt(repo, "index", IndexReceipt).tag == "hello-1.0.0"
    assert "push-index" in run.executed


def test_no_op_runs_no_preflight_and_sends_nothing(
        repo: Repo, registry: RegistryServer, s3_server: Seaweed,
        s3_proxy: RecordingProxy) -> None:
    published(repo, registry, s3_server, s3_proxy)
    first = repo.doit("release")
    assert "preflight" in first.ran
    before = len(registry.requests())
    s3_proxy.clear()
    assert repo.doit("release").ran == []
    assert len(registry.requests()) == before
    assert s3_proxy.snapshot() == []
