"""Channels against the real registry and S3 server: forward, refused backward, forced
backward, beta follows stable, a snapshot to dev, a dirty tree refused, and a move to
what a channel already names sends no write."""

from __future__ import annotations

import json
from typing import Any

import pytest

from esp32tasks.receipts import IndexReceipt
from tests.servers.registry import RegistryServer, configure
from tests.servers.s3 import RecordingProxy, Seaweed
from tests.support.repo import Repo, receipt
from tests.support.s3_release import PREFIX, new_bucket, use_s3

pytestmark = pytest.mark.integration

PATH = "cloud-iot/hello"
WRITES = ("PUT", "POST", "PATCH", "DELETE")


class Fleet:
    """The registry and bucket a repo releases to, and what a device would see there."""

    def __init__(self, repo: Repo, registry: RegistryServer, s3: Seaweed,
                 proxy: RecordingProxy) -> None:
        self.repo, self.registry, self.s3, self.proxy = repo, registry, s3, proxy
        self.bucket = s3.bucket(new_bucket())
        configure(repo, registry)
        use_s3(repo, proxy.endpoint, self.bucket)

    def release(self, *args: str, check: bool = True) -> Any:
        return self.repo.doit("release", *args, check=check)

    def tag(self, channel: str) -> str | None:
        """The digest ``hello-<channel>`` points at in the registry."""
        try:
            return self.registry.manifest(PATH, f"hello-{channel}")[0]
        except AssertionError:  # the fixture's way of saying it is not there
            return None

    def pointer(self, channel: str) -> dict[str, Any] | None:
        key = f"{PREFIX}/hello/channels/hello-{channel}.json"
        try:
            body = self.s3.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.s3.client().exceptions.NoSuchKey:
            return None
        return dict(json.loads(body))

    def names(self, channel: str) -> tuple[str | None, str | None]:
        """(version in the store's pointer, whether the registry tag is that index)."""
        pointer = self.pointer(channel)
        if pointer is None:
            return None, self.tag(channel)
        same = self.tag(channel) == pointer["index"]["digest"]
        return pointer["version"], "same index" if same else self.tag(channel)

    def writes(self, since: int) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.registry.requests()[since:]
                if r.method in WRITES] + [f"{r.method} {r.key}" for r in self.proxy.writes()]


@pytest.fixture
def fleet(repo: Repo, registry: RegistryServer, s3_server: Seaweed,
          s3_proxy: RecordingProxy) -> Fleet:
    return Fleet(repo, registry, s3_server, s3_proxy)


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_channels_move_forward_only_unless_forced_and_beta_follows_stable(
        fleet: Fleet) -> None:
    fleet.release("channel=beta")
    index = receipt(fleet.repo, "index", IndexReceipt)
    assert fleet.names("beta") == ("1.0.0", "same index")
    assert fleet.tag("beta") == index.index.digest
    pointer = fleet.pointer("beta")
    assert pointer is not None
    assert pointer["release"] == "hello/hello-1.0.0/release.json"
    assert pointer["registry"] == {"repository": f"{fleet.registry.host}/{PATH}",
                                   "tag": "hello-beta"}
    assert (fleet.repo.path / "build/receipts/channel-beta.json").read_bytes() == \
        json.dumps(pointer, indent=2, sort_keys=True).encode() + b"\n"

    # forward: 1.1.0 to stable; beta (1.0.0) is behind it, so it moves too
    fleet.release("version=1.1.0", "channel=stable")
    assert fleet.names("stable") == ("1.1.0", "same index")
    assert fleet.names("beta") == ("1.1.0", "same index")

    # backward: 1.0.1 is behind stable's 1.1.0; refused before anything is written
    before = len(fleet.registry.requests())
    fleet.proxy.clear()
    refused = fleet.release("version=1.0.1", "channel=stable", check=False)
    assert refused.code != 0
    assert errors(refused.stderr) == [
        f"error: preflight: {fleet.registry.host}/{PATH}:hello-stable names 1.1.0, ahead of "
        "this release's 1.0.1; a channel only moves forward: release a later version to "
        "stable, or move it back with ESP32TASKS_FORCE_CHANNEL=1 (or [project] "
        "force_channel = true)"]
    assert fleet.writes(before) == []
    assert fleet.names("stable") == ("1.1.0", "same index")

    # forced backward (ESP32TASKS_FORCE is not enough: it overwrites releases, not channels)
    fleet.repo.env["ESP32TASKS_FORCE"] = "1"
    assert fleet.release("version=1.0.1", "channel=stable", check=False).code != 0
    del fleet.repo.env["ESP32TASKS_FORCE"]
    fleet.repo.env["ESP32TASKS_FORCE_CHANNEL"] = "1"
    fleet.release("version=1.0.1", "channel=stable")
    assert fleet.names("stable") == ("1.0.1", "same index")
    assert fleet.names("beta") == ("1.1.0", "same index")  # not behind: left alone
    del fleet.repo.env["ESP32TASKS_FORCE_CHANNEL"]

    # the same move again: the channel task runs, and sends no write
    fleet.repo.doit("forget", "channel:stable", "version=1.0.1", "channel=stable")
    before = len(fleet.registry.requests())
    fleet.proxy.clear()
    again = fleet.release("version=1.0.1", "channel=stable")
    assert "channel:stable" in again.executed
    assert fleet.writes(before) == []


def test_a_snapshot_goes_to_dev_and_a_dirty_tree_to_no_channel(fleet: Fleet) -> None:
    repo = fleet.repo
    repo.git("tag", "v1.2.0")
    repo.write("NOTES.md", "after the tag\n")
    sha7 = repo.commit("one commit after v1.2.0")[:7]
    snapshot = f"1.2.0-1-g{sha7}"
    run = fleet.release("version=git", "channel=dev")
    assert receipt(repo, "index", IndexReceipt).tag == f"hello-{snapshot}"
    assert "channel:dev" in run.executed
    assert fleet.names("dev") == (snapshot, "same index")

    # the release 1.2.0 sorts before its snapshots: dev does not go back to it
    refused = fleet.release("version=1.2.0", "channel=dev", check=False)
    assert f"hello-dev names {snapshot}, ahead of this release's 1.2.0" in refused.stderr

    # a dirty tree never moves a channel, even allowed to publish
    repo.env["ESP32TASKS_ALLOW_DIRTY"] = "1"
    repo.write("NOTES.md", "uncommitted\n")
    before = len(fleet.registry.requests())
    fleet.proxy.clear()
    refused = fleet.release("version=git", "channel=dev", check=False)
    assert errors(refused.stderr) == [
        "error: preflight: refusing to move channel dev (doit release channel=dev) to a "
        "build of a working tree with uncommitted changes: a dirty tree is never promoted; "
        "commit first"]
    assert fleet.writes(before) == []
    assert fleet.names("dev") == (snapshot, "same index")
