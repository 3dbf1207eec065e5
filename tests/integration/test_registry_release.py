"""`doit release` with a registry: what goes on the wire, counted from the access log."""

from __future__ import annotations

import dataclasses
import sys
from collections import Counter

import pytest

from esp32tasks import receipts
from esp32tasks.receipts import ImageReceipt, IndexReceipt, PushIndexReceipt, PushReceipt
from tests.servers.registry import RegistryServer, configure, free_port
from tests.support.registry_wire import (
    INDEX_TAG,
    PATH,
    blob_puts,
    exact,
    full_image,
    pushes,
    summary,
    uploads,
)
from tests.support.repo import TARGETS, Repo, receipt

pytestmark = pytest.mark.integration

APP = "examples/hello"


def test_release_pushes_everything_then_a_noop_sends_nothing(
        repo: Repo, registry: RegistryServer) -> None:
    configure(repo, registry)
    first = repo.doit("release")
    assert {f"push:{t}" for t in TARGETS} | {"push-index"} <= set(first.executed)
    sent = registry.requests()
    expected = Counter[str]()
    for _ in TARGETS:
        expected += full_image()
    # the index: the preflight's HEAD of its tag, push-index's just before its PUT
    expected += Counter({"HEAD manifest 404": 2, "PUT manifest 201": 1})
    assert summary(sent) == expected, "\n".join(map(str, sent))
    assert blob_puts(sent) == {blob.digest for t in TARGETS
                               for blob in receipt(repo, f"image-{t}", ImageReceipt).blobs}
    # the order the registry needs: each target's blobs before its manifest, index last
    assert sent[-1].path == f"/v2/{PATH}/manifests/{INDEX_TAG}"
    for target in TARGETS:
        image = receipt(repo, f"image-{target}", ImageReceipt)
        put = next(i for i, r in enumerate(sent) if r.method == "PUT"
                   and r.path.endswith(f"/manifests/{image.tag}"))
        for blob in (image.layer, image.config):
            assert any(r.method == "PUT" and blob.digest.replace(":", "%3A") in r.path
                       for r in sent[:put])
    index = receipt(repo, "index", IndexReceipt)
    assert receipt(repo, "push-index", PushIndexReceipt) == PushIndexReceipt(
        repository=f"{registry.host}/{PATH}", tag=INDEX_TAG, digest=index.index.digest,
        targets=index.targets)
    digest, _ = registry.manifest(PATH, INDEX_TAG)
    assert digest == index.index.digest

    # nothing changed: no action runs, and not one request reaches the registry
    assert repo.doit("release").executed == []
    assert registry.requests() == sent
    # so a release succeeds with the registry down
    registry.stop()
    noop = repo.doit("release")
    assert noop.executed == []
    assert noop.code == 0


def test_one_target_change_sends_that_target_and_retags_the_others(
        repo: Repo, registry: RegistryServer) -> None:
    configure(repo, registry)
    repo.doit("release")
    before = len(registry.requests())
    old_index = receipt(repo, "index", IndexReceipt).index.digest
    repo.edit(f"{APP}/sdkconfig.defaults.esp32c6", '"Hello from', '"Hello again from')
    repo.commit("esp32c6 greets differently")

    # the index tag is a released version: moving it needs an explicit force, and the
    # preflight says so before anything is pushed
    refused = repo.doit("release", check=False)
    assert refused.code != 0
    assert f"error: preflight: {registry.host}/{PATH}:{INDEX_TAG} already points at " \
        f"{old_index} (released from commit " in refused.stderr
    assert "released versions are immutable" in refused.stderr
    assert "ESP32TASKS_FORCE=1" in refused.stderr
    assert "Traceback" not in refused.output
    assert registry.manifest(PATH, INDEX_TAG)[0] == old_index  # not overwritten
    first = registry.requests()[before:]

    # refused run: HEAD of the index tag, then one GET to name the commit it came from
    assert exact(first) == [f"HEAD /v2/{PATH}/manifests/{INDEX_TAG} 200",
                            f"GET /v2/{PATH}/manifests/{INDEX_TAG} 200"]

    repo.env["ESP32TASKS_FORCE"] = "1"
    forced = repo.doit("release")
    assert pushes(forced.executed) == sorted([*(f"push:{t}" for t in TARGETS), "push-index"])
    sent = registry.requests()[before:]
    second = sent[len(first):]

    changed = receipt(repo, "image-esp32c6", ImageReceipt)
    tags = {t: receipt(repo, f"image-{t}", ImageReceipt).tag for t in TARGETS}
    manifests = f"PUT /v2/{PATH}/manifests/"
    # the receipts know the repository: the unchanged targets are re-tagged with one PUT each
    # (the registry checks their blobs), the changed one's new blobs go up without a HEAD
    got = exact(second)
    # forced, the preflight's HEAD needs no GET: the tag may be overwritten; then the
    # targets in doit's order, then the index
    assert got[:1] == [f"HEAD /v2/{PATH}/manifests/{INDEX_TAG} 200"], "\n".join(got)
    assert sorted(got[1:-2]) == sorted([
        *uploads(changed.layer.digest, changed.config.digest),
        *(f"{manifests}{tags[t]} 201" for t in TARGETS)]), "\n".join(got)
    c6_put = got.index(f"{manifests}{tags['esp32c6']} 201")
    assert all(got.index(u) < c6_put
               for u in uploads(changed.layer.digest, changed.config.digest))
    assert got[-2:] == [f"HEAD /v2/{PATH}/manifests/{INDEX_TAG} 200",
                        f"{manifests}{INDEX_TAG} 201"], "\n".join(got)
    assert registry.manifest(PATH, INDEX_TAG)[0] == \
        receipt(repo, "index", IndexReceipt).index.digest
    print(f"\none-target change: {len(first)} requests for the images, "
          f"{len(second)} for the forced index")


def test_clean_target_tag_is_not_moved_to_other_bytes(
        repo: Repo, registry: RegistryServer) -> None:
    configure(repo, registry)
    repo.doit("release")
    c3 = receipt(repo, "image-esp32c3", ImageReceipt)
    c6 = receipt(repo, "image-esp32c6", ImageReceipt)
    where = f"{registry.host}/{PATH}:{c3.tag}"
    pushed = repo.path / "build/receipts/push-esp32c3.json"

    # our last push put other bytes under this tag (a rebuild of the same commit that came
    # out different): the receipt says so, refused without a request of its own (the
    # preflight's HEAD finds the index tag where we left it)
    last = receipt(repo, "push-esp32c3", PushReceipt)
    receipts.write(pushed, dataclasses.replace(last, digest=c6.manifest.digest))
    repo.doit("forget", "push:esp32c3")
    before = len(registry.requests())
    refused = repo.doit("release", check=False)
    assert refused.code != 0
    assert f"error: push:esp32c3: {where} already points at {c6.manifest.digest} " \
        f"(our last push), not at this build's {c3.manifest.digest}; released " \
        "versions are immutable" in refused.stderr
    preflight = f"HEAD /v2/{PATH}/manifests/{INDEX_TAG} 200"
    assert exact(registry.requests()[before:]) == [preflight]
    before = len(registry.requests())

    # no receipt, and the tag moved behind our back: the HEAD of the tag finds it
    registry.put_manifest(PATH, c3.tag, "application/vnd.oci.image.manifest.v1+json",
                          repo.path.joinpath("build/oci/blobs/sha256",
                                             c6.manifest.digest[7:]).read_bytes())
    assert not pushed.exists()  # the refused push removed it
    refused = repo.doit("release", check=False)
    assert refused.code != 0
    assert f"error: push:esp32c3: {where} already points at {c6.manifest.digest}, " \
        f"not at this build's {c3.manifest.digest}" in refused.stderr
    # the HEAD finds it, and the GET proves it by the bytes before the verdict
    assert exact(registry.requests()[before:]) == [
        preflight,
        f"HEAD /v2/{PATH}/manifests/{c3.tag} 200", f"GET /v2/{PATH}/manifests/{c3.tag} 200"]
    assert registry.manifest(PATH, c3.tag)[0] == c6.manifest.digest  # not moved


def test_dirty_tree_is_refused_unless_allowed(repo: Repo, registry: RegistryServer) -> None:
    configure(repo, registry)
    repo.write(f"{APP}/notes.txt", "uncommitted\n")
    refused = repo.doit("release", check=False)
    assert refused.code != 0
    assert "error: preflight: refusing to publish this release from a working tree with " \
        "uncommitted changes" in refused.stderr
    assert "ESP32TASKS_ALLOW_DIRTY=1" in refused.stderr
    assert registry.requests() == []  # refused before any request
    assert not (repo.path / "build/receipts/push-esp32c3.json").exists()

    repo.env["ESP32TASKS_ALLOW_DIRTY"] = "1"
    repo.doit("release")
    sha7 = repo.git("rev-parse", "--short=7", "HEAD")
    digest, _ = registry.manifest(PATH, f"esp32c3-hello-1.0.0-{sha7}-dirty")
    assert digest == receipt(repo, "image-esp32c3", ImageReceipt).manifest.digest


def test_allow_dirty_in_config(repo: Repo, registry: RegistryServer) -> None:
    configure(repo, registry, allow_dirty=True)
    repo.write(f"{APP}/notes.txt", "uncommitted\n")
    run = repo.doit("release")
    assert "push-index" in run.executed


def test_env_registry_overrides_the_file(repo: Repo, registry: RegistryServer) -> None:
    # the file names a registry that is down; CI points the release elsewhere
    configure(repo, f"127.0.0.1:{free_port()}", path="nowhere/hello")
    repo.env["ESP32TASKS_REGISTRY"] = f"{registry.host}/ci/hello"
    repo.doit("release")
    assert registry.manifest("ci/hello", INDEX_TAG)[0] == \
        receipt(repo, "index", IndexReceipt).index.digest
    assert receipt(repo, "push-index", PushIndexReceipt).repository == \
        f"{registry.host}/ci/hello"


def test_env_registry_without_a_registry_table(repo: Repo, registry: RegistryServer) -> None:
    assert "[registry]" not in repo.read("targets.toml")
    plain = repo.doit("release")
    assert "push-index" not in plain.executed
    repo.env["ESP32TASKS_REGISTRY"] = f"{registry.host}/ci/hello"
    repo.env["ESP32TASKS_REGISTRY_INSECURE"] = "1"
    run = repo.doit("release")
    assert pushes(run.executed) == sorted([f"push:{t}" for t in TARGETS] + ["push-index"])


def test_command_line_registry_overrides_env_and_file(
        repo: Repo, registry: RegistryServer) -> None:
    configure(repo, f"127.0.0.1:{free_port()}", path="nowhere/hello")
    repo.env["ESP32TASKS_REGISTRY"] = f"127.0.0.1:{free_port()}/also/nowhere"
    repo.doit("release", f"registry={registry.host}/cli/hello")
    assert registry.manifest("cli/hello", INDEX_TAG)[0] == \
        receipt(repo, "index", IndexReceipt).index.digest
    # a changed repository is a changed input: the pushes run again, to the new place
    repo.env["ESP32TASKS_REGISTRY"] = f"{registry.host}/other/hello"
    again = repo.doit("release")
    assert pushes(again.executed) == sorted([f"push:{t}" for t in TARGETS] + ["push-index"])


def test_bad_registry_override_is_a_config_error(repo: Repo) -> None:
    repo.env["ESP32TASKS_REGISTRY"] = "not a repository"
    run = repo.doit("release", check=False)
    assert run.code != 0
    assert "ESP32TASKS_REGISTRY=not a repository: not host[:port]/path" in run.stderr
    assert "Traceback" not in run.output


def test_noop_release_imports_no_http_library(repo: Repo, registry: RegistryServer) -> None:
    configure(repo, registry)
    repo.doit("release")
    run = repo.run(sys.executable, "-X", "importtime", "-m", "doit", "release")
    imported = {line.split("|")[-1].strip() for line in run.stderr.splitlines()
                if line.startswith("import time:")}
    assert "doit" in imported  # the listing is real
    assert "esp32tasks.tasks.generate" in imported  # and it holds ours
    heavy = ("oras", "requests", "urllib3", "boto3", "botocore", "esptool", "git")
    assert not {m for m in imported if m.split(".")[0] in heavy}
    # the receipts' dataclasses cost more than the checks a no-op needs (receiptfile)
    assert "esp32tasks.receipts" not in imported
