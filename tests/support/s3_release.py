"""A release into S3: where the example's objects go, and checks that the bucket holds them.

Shared by tests/integration/test_s3_release.py and test_s3_timing.py.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from typing import Any

from esp32tasks.receipts import BuildReceipt, ImageReceipt, IndexReceipt
from tests.servers.s3 import ADMIN, Credentials, Seaweed
from tests.support.repo import TARGETS, Repo, receipt

__all__ = ["ARTIFACTS", "MANIFEST", "PREFIX", "RELEASE", "WEB_MANIFEST", "check_bucket",
           "check_manifest",
           "expected_objects", "new_bucket", "use_s3"]

ARTIFACTS = {"hello.bin", "bootloader.bin", "partition-table.bin", "ota_data_initial.bin",
             "hello-factory.bin",
             "sdkconfig", "partitions.csv", "flasher_args.json", "hello.elf", "hello.map"}
PREFIX = "nbfc-assets/github/iot"
RELEASE = f"{PREFIX}/hello/hello-1.0.0/"
MANIFEST = RELEASE + "release.json"
WEB_MANIFEST = RELEASE + "manifest.json"  # ESP Web Tools

_buckets = itertools.count()


def new_bucket() -> str:
    return f"release-{os.getpid()}-{next(_buckets)}"


def use_s3(repo: Repo, endpoint: str, bucket: str, *, creds: Credentials = ADMIN,
           create_bucket: bool = False, commit: bool = True) -> None:
    text = (f'\n[store]\nurl = "s3://{bucket}/{PREFIX}"\nendpoint_url = "{endpoint}"\n')
    if create_bucket:
        text += "create_bucket = true\n"
    repo.write("targets.toml", repo.read("targets.toml") + text)
    repo.env.update(creds.env)
    if commit:
        repo.commit("release to S3")


def expected_objects(repo: Repo) -> dict[str, str]:
    """key -> sha256 of every artifact, from the build receipts."""
    return {f"{RELEASE}{t}/artifacts/{a.name}": a.sha256
            for t in TARGETS for a in receipt(repo, f"build-{t}", BuildReceipt).artifacts}


def check_bucket(server: Seaweed, repo: Repo, bucket: str) -> dict[str, Any]:
    """Every object's bytes equal the local build's, and release.json describes them all."""
    s3 = server.client()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/")
    listed = {o["Key"] for page in pages for o in page.get("Contents", [])}
    expected = expected_objects(repo)
    assert listed == {*expected, MANIFEST, WEB_MANIFEST}
    for target in TARGETS:
        for artifact in receipt(repo, f"build-{target}", BuildReceipt).artifacts:
            key = f"{RELEASE}{target}/artifacts/{artifact.name}"
            obj = s3.get_object(Bucket=bucket, Key=key)
            assert obj["Body"].read() == (repo.path / artifact.path).read_bytes(), key
            assert obj["Metadata"] == {"sha256": artifact.sha256}
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=MANIFEST)["Body"].read())
    check_manifest(repo, manifest)
    web = s3.get_object(Bucket=bucket, Key=WEB_MANIFEST)["Body"].read()
    assert manifest["web_manifest"] == {"path": "manifest.json", "size": len(web),
                                        "sha256": hashlib.sha256(web).hexdigest()}
    assert [b["parts"] for b in json.loads(web)["builds"]] == [
        [{"path": f"{t}/artifacts/hello-factory.bin", "offset": 0}] for t in TARGETS]
    return manifest  # type: ignore[no-any-return]


def check_manifest(repo: Repo, manifest: dict[str, Any]) -> None:
    assert manifest["format"] == "esp32tasks.release/v1"
    assert manifest["project"] == {"name": "hello", "app_type": "hello", "version": "1.0.0"}
    assert manifest["git"]["revision"] == repo.git("rev-parse", "HEAD")
    assert manifest["git"]["commit_time"] == "2026-01-01T00:00:00Z"
    assert set(manifest["targets"]) == set(TARGETS)
    for target in TARGETS:
        entry = manifest["targets"][target]
        built = {a.name: a for a in receipt(repo, f"build-{target}", BuildReceipt).artifacts}
        assert {a["name"] for a in entry["artifacts"]} == ARTIFACTS
        for artifact in entry["artifacts"]:
            assert artifact["path"] == f"{target}/artifacts/{artifact['name']}"
            assert (artifact["size"], artifact["sha256"]) == \
                (built[artifact["name"]].size, built[artifact["name"]].sha256)
        image = receipt(repo, f"image-{target}", ImageReceipt)
        assert entry["image"]["tag"] == image.tag
        assert entry["image"]["digest"] == image.manifest.digest
    index = receipt(repo, "index", IndexReceipt)
    assert manifest["index"] == {"tag": "hello-1.0.0", "digest": index.index.digest}
