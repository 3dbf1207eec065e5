"""Delta OTA patches against the real S3 server: release 1.0.0, change one function,
release 1.0.1 with ``[delta] bases = ["1.0.0"]``, and a device's view: the patch from the
store, applied to its 1.0.0 app, is the 1.0.1 app byte for byte."""

from __future__ import annotations

import http.client
import json
from typing import Any

import pytest

from esp32tasks import delta
from esp32tasks.receipts import AppReceipt, DeltaReceipt
from tests.servers.registry import RegistryServer, configure
from tests.servers.s3 import RecordingProxy, Seaweed
from tests.support.repo import TARGETS, Repo, receipt
from tests.support.s3_release import PREFIX, new_bucket, use_s3

pytestmark = pytest.mark.integration

APP = "examples/hello"
PATH = "cloud-iot/hello"


def get(s3: Seaweed, bucket: str, key: str) -> bytes:
    return bytes(s3.client().get_object(Bucket=bucket, Key=f"{PREFIX}/{key}")["Body"].read())


def release_json(s3: Seaweed, bucket: str, version: str) -> dict[str, Any]:
    return dict(json.loads(get(s3, bucket, f"hello/hello-{version}/release.json")))


def test_a_patch_from_the_last_release_makes_the_new_app(
        repo: Repo, s3_server: Seaweed, s3_proxy: RecordingProxy) -> None:
    bucket = s3_server.bucket(new_bucket())
    use_s3(repo, s3_proxy.endpoint, bucket)
    repo.doit("release")
    old = {t: (repo.path / receipt(repo, f"app-{t}", AppReceipt).app.path).read_bytes()
           for t in TARGETS}

    # 1.0.1: one function changed, and patches from 1.0.0
    repo.edit(f"{APP}/main/hello_main.c", "\"app version \"", "\"patched app, version \"")
    text = repo.read("targets.toml").replace('version = "1.0.0"', 'version = "1.0.1"')
    repo.write("targets.toml", text + '\n[delta]\nbases = ["1.0.0"]\n')
    repo.commit("1.0.1, with patches from 1.0.0")
    s3_proxy.clear()
    run = repo.doit("release")
    assert {f"delta:{t}" for t in TARGETS} <= set(run.executed)

    doc = release_json(s3_server, bucket, "1.0.1")
    for target in TARGETS:
        new = (repo.path / receipt(repo, f"app-{target}", AppReceipt).app.path).read_bytes()
        made = receipt(repo, f"delta-{target}", DeltaReceipt)
        [patch] = made.patches
        assert (patch.base, patch.name) == ("1.0.0", "from-1.0.0.patch")
        [listed] = doc["targets"][target]["delta"]
        assert listed["path"] == f"{target}/delta/from-1.0.0.patch"
        assert (listed["size"], listed["sha256"]) == (patch.size, patch.sha256)
        # a device: its running app's hash picks the patch; applying it gives the new app
        data = get(s3_server, bucket, f"hello/hello-1.0.1/{target}/delta/from-1.0.0.patch")
        assert data[4:36] == delta.validation_hash(old[target], label=target)
        assert delta.apply(old[target], data) == new
        assert len(data) < len(new) * 0.5, (len(data), len(new))

    # a no-op fetches nothing and makes nothing
    s3_proxy.clear()
    assert repo.doit("release").executed == []
    assert s3_proxy.snapshot() == []

    # latest = 2: the newest releases older than this one, found in the store (1.0.0 only;
    # hello-1.0.1 is this release)
    repo.write("targets.toml", repo.read("targets.toml").replace(
        'bases = ["1.0.0"]', "latest = 2"))
    repo.commit("patches from the newest releases")
    repo.env["ESP32TASKS_FORCE"] = "1"  # release.json of 1.0.1 names the new commit
    repo.doit("release")
    del repo.env["ESP32TASKS_FORCE"]
    assert [p.base for p in receipt(repo, "delta-esp32c3", DeltaReceipt).patches] == ["1.0.0"]
    repo.write("targets.toml", repo.read("targets.toml").replace(
        "latest = 2", 'bases = ["1.0.0"]'))

    # a base that was never released is one line naming it and the fix
    repo.write("targets.toml", repo.read("targets.toml").replace(
        'bases = ["1.0.0"]', 'bases = ["1.0.0", "0.9.0"]'))
    repo.commit("and from 0.9.0")
    failed = repo.doit("release", check=False)
    assert failed.code != 0
    assert "base 0.9.0 has no " in failed.stderr
    assert "remove it from [delta] bases" in failed.stderr

    # a patch not smaller than max_ratio of the app is left out, and the receipt says why
    repo.write("targets.toml", repo.read("targets.toml").replace(
        'bases = ["1.0.0", "0.9.0"]', 'bases = ["1.0.0"]\nmax_ratio = 0.05'))
    repo.commit("only patches under 5 %")
    repo.env["ESP32TASKS_FORCE"] = "1"
    repo.doit("release")
    made = receipt(repo, "delta-esp32c3", DeltaReceipt)
    assert made.patches == ()
    [(base, why)] = made.skipped
    assert base == "1.0.0"
    assert why.endswith("of the app, not below max_ratio 5%")
    assert release_json(s3_server, bucket, "1.0.1")["targets"]["esp32c3"]["delta"] == []


def blob(registry: RegistryServer, digest: str) -> bytes:
    connection = http.client.HTTPConnection(registry.host, timeout=10)
    connection.request("GET", f"/v2/{PATH}/blobs/{digest}")
    response = connection.getresponse()
    data = response.read()
    assert response.status == 200, (response.status, data)
    return data


def test_a_device_finds_its_patch_among_the_referrers_through_the_fallback_tag(
        repo: Repo, registry: RegistryServer, s3_server: Seaweed,
        s3_proxy: RecordingProxy) -> None:
    configure(repo, registry)
    bucket = s3_server.bucket(new_bucket())
    use_s3(repo, s3_proxy.endpoint, bucket)
    repo.doit("release")
    running = (repo.path / receipt(repo, "app-esp32c3", AppReceipt).app.path).read_bytes()
    # the store lost 1.0.0's esp32c3 app: the patch is made from the registry's image
    s3_server.client().delete_object(
        Bucket=bucket, Key=f"{PREFIX}/hello/hello-1.0.0/esp32c3/artifacts/hello.bin")
    repo.edit(f"{APP}/main/hello_main.c", "\"app version \"", "\"patched app, version \"")
    text = repo.read("targets.toml").replace('version = "1.0.0"', 'version = "1.0.1"')
    repo.write("targets.toml", text + '\n[delta]\nbases = ["1.0.0"]\n')
    repo.commit("1.0.1, with patches from 1.0.0")
    run = repo.doit("release")
    assert {f"push-delta:{t}" for t in TARGETS} <= set(run.executed)

    # the device: the index, its own child, the referrers at the fallback tag
    _, data = registry.manifest(PATH, "hello-1.0.1")
    index = json.loads(data)
    assert all(m.get("artifactType") is None for m in index["manifests"])  # not in the index
    [child] = [m for m in index["manifests"] if m["platform"]["architecture"] == "esp32c3"]
    _, data = registry.manifest(PATH, "sha256-" + child["digest"].removeprefix("sha256:"))
    referrers = json.loads(data)["manifests"]
    mine = delta.validation_hash(running, label="esp32c3").hex()
    [found] = [r for r in referrers
               if r["annotations"]["dev.esp32tasks.delta.base-sha256"] == mine]
    assert found["artifactType"] == "application/vnd.esp32tasks.delta-ota.v1"
    assert found["annotations"]["dev.esp32tasks.delta.base-version"] == "1.0.0"
    _, data = registry.manifest(PATH, found["digest"])
    artifact = json.loads(data)
    assert artifact["subject"]["digest"] == child["digest"]
    [layer] = artifact["layers"]
    assert "firmware" not in layer["annotations"]["org.opencontainers.image.title"]
    new = (repo.path / receipt(repo, "app-esp32c3", AppReceipt).app.path).read_bytes()
    assert delta.apply(running, blob(registry, layer["digest"])) == new
    assert "esp32c3: ok" in repo.doit("verify").stdout

    # another tool's referrer at the same tag is kept when ours is written again
    tag = "sha256-" + child["digest"].removeprefix("sha256:")
    _, data = registry.manifest(PATH, tag)
    other = json.loads(registry.manifest(PATH, "hello-1.0.0")[1])["manifests"][0]
    theirs = {"mediaType": other["mediaType"], "digest": other["digest"],
              "size": other["size"],
              "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"}
    only_theirs = {**json.loads(data), "manifests": [theirs]}
    registry.put_manifest(PATH, tag, "application/vnd.oci.image.index.v1+json",
                          json.dumps(only_theirs).encode())
    repo.doit("forget", "push-delta:esp32c3")
    repo.doit("release")
    _, data = registry.manifest(PATH, tag)
    kept = json.loads(data)["manifests"]
    assert theirs in kept
    assert found["digest"] in [m["digest"] for m in kept]
