"""Sharded releases: two shards and a final `doit publish-index`, in three clones sharing
one registry and one S3 server, give the indexes a one-machine release gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esp32tasks.receipts import ImageReceipt, IndexReceipt, PushIndexReceipt
from tests.servers.registry import RegistryServer, configure
from tests.servers.s3 import Seaweed
from tests.support.repo import TARGETS, Repo, receipt
from tests.support.s3_release import MANIFEST, RELEASE, new_bucket, use_s3

pytestmark = pytest.mark.integration

PATH = "cloud-iot/hello"


def _release_repo(repo: Repo, registry: RegistryServer, s3: Seaweed) -> str:
    bucket = s3.bucket(new_bucket())
    use_s3(repo, s3.endpoint, bucket, commit=False)
    configure(repo, registry, PATH)  # commits both
    return bucket


def test_two_shards_and_publish_index_equal_a_single_machine_release(
        repo: Repo, registry: RegistryServer, s3_server: Seaweed, tmp_path: Path) -> None:
    bucket = _release_repo(repo, registry, s3_server)
    first, second, final = (repo.clone(tmp_path / name) for name in ("a", "b", "final"))

    shard = first.doit("release", "targets=esp32c3,esp32c6")
    built = {name for name in shard.executed if name.startswith("build:")}
    assert built == {"build:esp32c3", "build:esp32c6"}, shard.output
    assert not {"index", "push-index", "manifest"} & set(shard.ran), shard.output
    assert {"share:esp32c3", "share:esp32c6"} <= set(shard.ran)

    # the final job before the second shard: refused in one line naming what is missing
    early = final.doit("publish-index", check=False)
    assert early.code != 0
    errors = [line for line in early.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, early.output
    assert "the shards of esp32h2 did not finish" in errors[0]
    assert "doit release targets=esp32h2" in errors[0]
    assert "Traceback" not in early.output
    s3 = s3_server.client()
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=MANIFEST)

    second.env["ESP32TASKS_TARGETS"] = "esp32h2"
    other = second.doit("release")
    assert {n for n in other.executed if n.startswith("build:")} == {"build:esp32h2"}

    published = final.doit("publish-index")
    assert not [n for n in published.ran if n.split(":")[0] in
                ("build", "tag", "push", "upload", "sign")], published.output
    assert {"shards", "index", "push-index", "manifest"} <= set(published.ran)
    index = receipt(final, "index", IndexReceipt)
    assert [c.target for c in index.targets] == sorted(TARGETS)
    assert receipt(final, "push-index", PushIndexReceipt).digest == index.index.digest
    assert registry.manifest(PATH, "hello-1.0.0")[0] == index.index.digest
    released = json.loads(s3.get_object(Bucket=bucket, Key=MANIFEST)["Body"].read())
    assert set(released["targets"]) == set(TARGETS)
    assert released["index"]["digest"] == index.index.digest
    # a second publish-index changes nothing remote
    again = final.doit("publish-index")
    assert set(again.executed) <= {"shards"}, again.output

    # one machine, same commit, another repository path: the same digests
    single = repo.clone(tmp_path / "single")
    single.env["ESP32TASKS_REGISTRY"] = f"{registry.host}/single/hello"
    single.doit("release")
    assert receipt(single, "index", IndexReceipt).index.digest == index.index.digest
    for target in TARGETS:
        ours = receipt(single, f"image-{target}", ImageReceipt).manifest.digest
        assert index.child(target) is not None
        assert index.child(target).digest == ours  # type: ignore[union-attr]
    assert registry.manifest("single/hello", "hello-1.0.0")[0] == index.index.digest
    for target in TARGETS:
        key = f"{RELEASE}shards/{target}.json"
        shard_doc = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        assert shard_doc["revision"] == repo.git("rev-parse", "HEAD")


def test_a_shard_of_unknown_targets_is_one_line(repo: Repo) -> None:
    run = repo.doit("release", "targets=esp32c3,esp32s9", check=False)
    assert run.code == 2
    assert run.stderr.strip().splitlines() == [
        "error: doit release targets=esp32c3,esp32s9: no target 'esp32s9' in targets.toml "
        "(its targets: esp32c3, esp32c6, esp32h2)"], run.output


def test_publish_index_with_targets_is_refused(repo: Repo) -> None:
    run = repo.doit("publish-index", "targets=esp32c3", check=False)
    assert run.code == 2
    assert "publish-index assembles every target" in run.stderr
    assert "Traceback" not in run.output


def test_shards_with_a_key_assemble_the_signed_index_of_a_single_machine(
        repo: Repo, s3_server: Seaweed, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    bucket = s3_server.bucket(new_bucket())
    use_s3(repo, s3_server.endpoint, bucket, commit=False)
    repo.write("targets.toml", repo.read("targets.toml") + """
[[keys]]
name = "field"
scheme = "ecdsa256"
private_key_env = "ESP32_KEY_FIELD"
targets = ["esp32c6", "esp32h2"]
""")
    repo.commit("sign esp32c6 and esp32h2")
    repo.env["ESP32_KEY_FIELD"] = key
    first, second, final = (repo.clone(tmp_path / name) for name in ("a", "b", "final"))
    one = first.doit("release", "targets=esp32c6")
    assert "sign:esp32c6@field" in one.executed
    assert "share:esp32c6@field" in one.ran, one.output
    early = final.doit("publish-index", check=False)
    assert "the shards of esp32h2 did not finish" in early.stderr, early.output
    second.doit("release", "targets=esp32h2")
    published = final.doit("publish-index")
    assert not [n for n in published.ran if n.split(":")[0] in ("build", "sign", "tag")]
    assert "index@field" in published.ran
    released = json.loads(s3_server.client().get_object(
        Bucket=bucket, Key=MANIFEST)["Body"].read())
    single = repo.clone(tmp_path / "single")
    single.doit("release")
    assert receipt(final, "index@field", IndexReceipt).index.digest == \
        receipt(single, "index@field", IndexReceipt).index.digest
    assert released["keys"]["field"]["targets"] == ["esp32c6@field", "esp32h2@field"]
    assert released["keys"]["field"]["index"]["digest"] == \
        receipt(final, "index@field", IndexReceipt).index.digest
