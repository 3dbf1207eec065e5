"""A registry that is down, hangs, fails mid-push or answers 5xx: fast, clear, resumable."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from esp32tasks.receipts import ImageReceipt, IndexReceipt
from tests.servers.registry import (
    FlakyProxy,
    HungServer,
    RegistryServer,
    configure,
    free_port,
)
from tests.support.registry_wire import blob_puts, exact, pushes, summary, uploads
from tests.support.repo import TARGETS, Repo, receipt

pytestmark = pytest.mark.integration


def built(repo: Repo) -> None:
    """Build and index first, so a timed `doit release` measures the push alone."""
    repo.doit("index")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_registry_not_listening_fails_fast_with_one_line(repo: Repo) -> None:
    host = f"127.0.0.1:{free_port()}"
    configure(repo, host)
    built(repo)
    started = time.monotonic()
    run = repo.doit("release", check=False)
    elapsed = time.monotonic() - started
    assert run.code != 0
    assert elapsed < 15, elapsed
    assert error_lines(run.stderr) == [  # the preflight's HEAD: before any write
        f"error: preflight: cannot reach registry {host} over http (Connection "
        f"refused); check the registry in [registry] repository in targets.toml ({host}) is "
        "running and listening there, and that the scheme is right (insecure = true for plain "
        "HTTP)"]
    assert "Traceback" not in run.output
    assert not (repo.path / "build/receipts/push-esp32c3.json").exists()


def test_server_that_never_answers_times_out(repo: Repo, hung_server: HungServer) -> None:
    configure(repo, hung_server)  # the default timeout: 10 s
    built(repo)
    started = time.monotonic()
    run = repo.doit("release", check=False)
    elapsed = time.monotonic() - started
    assert run.code != 0
    assert 9 < elapsed < 15, elapsed
    assert hung_server.accepted, "the client did connect"
    [line] = error_lines(run.stderr)
    assert line.startswith(f"error: preflight: registry {hung_server.host} did not answer "
                           "HEAD /v2/cloud-iot/hello/manifests/hello-1.0.0 ")
    assert line.endswith("within 10 s; check the registry in [registry] repository in "
                         f"targets.toml ({hung_server.host}) is up and reachable (or raise "
                         "[registry] timeout)")


def test_configured_timeout_is_used(repo: Repo, hung_server: HungServer) -> None:
    configure(repo, hung_server, timeout=2)
    built(repo)
    started = time.monotonic()
    run = repo.doit("release", check=False)
    assert time.monotonic() - started < 5
    assert "within 2 s" in run.stderr


def test_registry_killed_mid_push_then_rerun_sends_only_what_is_missing(
        repo: Repo, registry: RegistryServer, flaky_proxy: FlakyProxy) -> None:
    configure(repo, flaky_proxy)
    built(repo)
    c6 = receipt(repo, "image-esp32c6", ImageReceipt)
    layer_put = c6.layer.digest.replace(":", "%3A")
    config_put = c6.config.digest.replace(":", "%3A")

    def kill_on_second_blob_of_c6(method: str, path: str) -> None:
        # the registry dies as esp32c6's config blob is being sent, once its layer is in
        # (the two go up side by side: wait for the layer's answer, not for luck)
        if method == "PUT" and config_put in path:
            flaky_proxy.wait_answered(lambda m, p, s: m == "PUT" and layer_put in p)
            registry.kill()

    flaky_proxy.on_request = kill_on_second_blob_of_c6
    run = repo.doit("release", check=False)
    assert run.code != 0
    assert "push:esp32c6" in run.executed
    [line] = error_lines(run.stderr)
    assert line.startswith(f"error: push:esp32c6: cannot reach registry "
                           f"{flaky_proxy.host} over http (connection closed without an "
                           "answer)")
    receipts = repo.path / "build/receipts"
    done = {t for t in TARGETS if (receipts / f"push-{t}.json").exists()}
    assert {f"push:{t}" for t in done} == set(pushes(run.executed)) - {"push:esp32c6"}
    assert "esp32c6" not in done
    assert not (receipts / "push-index.json").exists()

    flaky_proxy.on_request = None
    registry.start()
    before = registry.requests()  # the log file survives the restart
    rerun = repo.doit("release")
    left = sorted(set(TARGETS) - done)
    assert pushes(rerun.executed) == sorted(["push-index", *(f"push:{t}" for t in left)])
    sent = registry.requests()[len(before):]
    # esp32c6: its layer made it before the kill; only the config blob and manifest go
    c6_part = [r for r in sent if c6.tag in r.path or c6.layer.digest in r.path
               or c6.config.digest in r.path or config_put in r.path]
    assert summary(c6_part) == Counter([
        "HEAD manifest 404",  # the tag: no receipt says what is there
        "HEAD blob 200",  # the layer: already there, not sent again
        "HEAD blob 404", "PUT upload 201",  # the config
        "PUT manifest 201"]), "\n".join(map(str, c6_part))
    others = {b.digest for t in left if t != "esp32c6"
              for b in receipt(repo, f"image-{t}", ImageReceipt).blobs}
    assert blob_puts(sent) == {c6.config.digest} | others
    for target in done:  # finished before: not touched
        assert not [r for r in sent if target in r.path]
    assert registry.manifest("cloud-iot/hello", "hello-1.0.0")[0] == \
        receipt(repo, "index", IndexReceipt).index.digest


def test_a_few_503_are_retried(repo: Repo, registry: RegistryServer,
                               flaky_proxy: FlakyProxy) -> None:
    configure(repo, flaky_proxy)
    built(repo)
    flaky_proxy.fail = 2
    started = time.monotonic()
    run = repo.doit("release")
    assert time.monotonic() - started < 10
    assert flaky_proxy.failed == 2
    assert {f"push:{t}" for t in TARGETS} | {"push-index"} <= set(run.executed)
    assert registry.manifest("cloud-iot/hello", "hello-1.0.0")[0] == \
        receipt(repo, "index", IndexReceipt).index.digest


def test_persistent_503_gives_up_within_30_s(repo: Repo, registry: RegistryServer,
                                             flaky_proxy: FlakyProxy) -> None:
    configure(repo, flaky_proxy)
    built(repo)
    flaky_proxy.fail = 1000
    started = time.monotonic()
    run = repo.doit("release", check=False)
    elapsed = time.monotonic() - started
    assert run.code != 0
    assert elapsed < 30, elapsed
    assert flaky_proxy.failed == 4  # one try and three retries (1 + 2 + 4 s apart)
    [line] = error_lines(run.stderr)
    assert line.startswith(f"error: preflight: registry {flaky_proxy.host} answered 503 "
                           "Service Unavailable to HEAD /v2/cloud-iot/hello/manifests/")
    assert "4 times over" in line
    assert registry.requests() == []


def test_blobs_deleted_behind_our_back_are_sent_again(
        repo: Repo, registry: RegistryServer) -> None:
    configure(repo, registry)
    repo.doit("release")
    c3 = receipt(repo, "image-esp32c3", ImageReceipt)
    for blob in (c3.layer, c3.config):  # garbage collection, a wiped disk, a retention policy
        registry.delete_blob(blob.digest)
    repo.write("NOTES.md", "a commit that changes no firmware\n")
    repo.commit("notes")
    repo.env["ESP32TASKS_FORCE"] = "1"  # the index names the new commit
    before = len(registry.requests())
    run = repo.doit("release")
    assert pushes(run.executed) == sorted([f"push:{t}" for t in TARGETS] + ["push-index"])
    sent = registry.requests()[before:]
    retagged = receipt(repo, "image-esp32c3", ImageReceipt)
    tag = retagged.tag
    assert retagged.manifest == c3.manifest  # a re-tag
    path = "/v2/cloud-iot/hello"
    got = exact(sent)
    # the preflight (forced: no GET), then the targets in doit's order, then the index
    assert got[:1] == [f"HEAD {path}/manifests/hello-1.0.0 200"], "\n".join(got)
    assert got[-2:] == [f"HEAD {path}/manifests/hello-1.0.0 200",
                        f"PUT {path}/manifests/hello-1.0.0 201"], "\n".join(got)
    c3_part = [g for g in got if tag in g or c3.layer.digest in g or c3.config.digest in g
               or "/blobs/uploads/ " in g]
    # the receipt says the manifest is there: PUT it under the new tag; the registry
    # refuses (MANIFEST_BLOB_UNKNOWN); every blob is checked and the missing ones sent
    assert c3_part[:1] == [f"PUT {path}/manifests/{tag} 400"], "\n".join(got)
    assert sorted(c3_part[1:7]) == sorted([f"HEAD {path}/blobs/{c3.layer.digest} 404",
                                           f"HEAD {path}/blobs/{c3.config.digest} 404",
                                           *uploads(c3.layer.digest, c3.config.digest)]), \
        "\n".join(got)
    assert c3_part[7:] == [f"PUT {path}/manifests/{tag} 201"], "\n".join(got)
    assert sorted(set(got[1:-2]) - set(c3_part)) == sorted(
        f"PUT {path}/manifests/{receipt(repo, f'image-{t}', ImageReceipt).tag} 201"
        for t in ("esp32c6", "esp32h2")), "\n".join(got)
    assert blob_puts(sent) == {c3.layer.digest, c3.config.digest}
    repo.doit("verify")  # served as esp32-flashjob resolves it, firmware bytes included
