"""`doit release` into a real SeaweedFS: every artifact, release.json last, only what changed.

Requests are counted server-side, by the recording proxy in front of SeaweedFS.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import sys
import time

import pytest

from esp32tasks.receipts import PushIndexReceipt, PushReceipt
from tests.servers.registry import RegistryServer, configure
from tests.servers.s3 import (
    ADMIN,
    Credentials,
    RecordingProxy,
    Request,
    Seaweed,
    SilentServer,
    free_port,
)
from tests.support.repo import TARGETS, Repo, receipt
from tests.support.s3_release import (
    MANIFEST,
    RELEASE,
    WEB_MANIFEST,
    check_bucket,
    check_manifest,
    expected_objects,
    new_bucket,
    use_s3,
)

pytestmark = pytest.mark.integration

APP = "examples/hello"


def methods(requests: list[Request]) -> dict[str, int]:
    return dict(collections.Counter(r.method for r in requests))


def assert_secret_nowhere(repo: Repo, secret: str, *outputs: str) -> None:
    for output in outputs:
        assert secret not in output
    for path in repo.path.rglob("*"):
        if path.is_file() and ".git" not in path.relative_to(repo.path).parts:
            assert secret.encode() not in path.read_bytes(), path


def test_release_uploads_everything_then_a_noop_sends_no_request(
        repo: Repo, s3_server: Seaweed, s3_proxy: RecordingProxy) -> None:
    bucket = s3_server.bucket(new_bucket())
    use_s3(repo, s3_proxy.endpoint, bucket)
    cold = repo.doit("release")
    assert "manifest" in cold.executed
    assert cold.executed[-1] == "manifest"  # written last
    check_bucket(s3_server, repo, bucket)
    puts = s3_proxy.writes()
    assert sorted(r.key for r in puts) == sorted([*expected_objects(repo), MANIFEST,
                                                  WEB_MANIFEST])
    assert all(r.method == "PUT" and r.status == 200 for r in puts)
    # nothing known yet: per object a HEAD and a PUT; once per run, before the first
    # upload, the preflight's GET of release.json (is this version released from another
    # commit?); the manifest: GET (the same check, again, just before it writes), ESP Web
    # Tools' manifest.json (HEAD, PUT), then release.json's PUT, no HEAD
    sent = s3_proxy.snapshot()
    objects = sorted(expected_objects(repo))
    assert [(r.method, r.key) for r in sent[:1] + sent[-4:]] == \
        [("GET", MANIFEST), ("GET", MANIFEST), ("HEAD", WEB_MANIFEST), ("PUT", WEB_MANIFEST),
         ("PUT", MANIFEST)]
    assert sorted((r.method, r.key) for r in sent[1:-4]) == \
        sorted([*(("HEAD", k) for k in objects), *(("PUT", k) for k in objects)])
    assert methods(sent) == {"GET": 1 + 1, "HEAD": 30 + 1, "PUT": 30 + 2}

    s3_proxy.clear()
    noop = repo.doit("release")
    assert noop.executed == []
    assert s3_proxy.snapshot() == []  # not one request reached the server
    # and boto3 (more than doit's whole no-op) is not even imported
    timed = repo.run(sys.executable, "-X", "importtime", "-m", "doit", "release")
    imported = {line.rsplit("|", 1)[-1].strip() for line in timed.stderr.splitlines()}
    assert "doit" in imported
    assert not {m for m in imported if m.startswith(("boto3", "botocore", "s3transfer"))}
    # the local copy of what was published
    assert json.loads(repo.read("build/receipts/release.json")) == \
        json.loads(s3_server.client().get_object(Bucket=bucket, Key=MANIFEST)["Body"].read())
    assert_secret_nowhere(repo, ADMIN.secret_key, cold.output, noop.output)


def test_one_target_change_writes_only_its_changed_objects_and_the_manifest(
        repo: Repo, s3_server: Seaweed, s3_proxy: RecordingProxy) -> None:
    bucket = s3_server.bucket(new_bucket())
    use_s3(repo, s3_proxy.endpoint, bucket)
    # work in progress, published under -dirty names, at one revision: a version's prefix
    # holds one build of each target, so only a change there shows what travels
    repo.env["ESP32TASKS_ALLOW_DIRTY"] = "1"
    repo.write("NOTES.md", "work in progress\n")
    repo.doit("release")
    dirty = RELEASE.removesuffix("/") + "-dirty/"

    def objects() -> dict[str, str]:
        return {k.replace(RELEASE, dirty, 1): v for k, v in expected_objects(repo).items()}

    before = objects()
    s3_proxy.clear()
    repo.edit(f"{APP}/sdkconfig.defaults.esp32c6", '"Hello from', '"Hello again from')
    run = repo.doit("release")  # uncommitted: same revision, a dirty build of it
    assert [t for t in run.executed if t.startswith(("build:", "upload:"))] == \
        ["build:esp32c6", "upload:esp32c6"]
    after = objects()
    changed = {k for k in after if after[k] != before[k]}
    assert changed
    assert all("/esp32c6/" in k for k in changed)
    # the last upload receipt says what the bucket holds: no request for an unchanged
    # object, no HEAD before a changed one; the release check once (the preflight's),
    # the manifest GET + PUT (and a HEAD of the web manifest, which holds the same bytes)
    key = dirty + "release.json"
    web = dirty + "manifest.json"
    sent = [(r.method, r.key) for r in s3_proxy.snapshot()]
    assert sent[0] == ("GET", key)
    assert sorted(sent[1:-3]) == sorted(("PUT", k) for k in changed)
    assert sent[-3:] == [("GET", key), ("HEAD", web), ("PUT", key)]
    s3 = s3_server.client()
    listed = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert set(listed) == {*after, key, web}
    for name, sha in after.items():
        body = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == sha, name
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert manifest["git"]["dirty"] is True


def test_a_version_released_from_another_commit_is_not_overwritten_unless_forced(
        repo: Repo, s3_server: Seaweed, s3_proxy: RecordingProxy) -> None:
    bucket = s3_server.bucket(new_bucket())
    use_s3(repo, s3_proxy.endpoint, bucket)
    repo.doit("release")
    first = repo.git("rev-parse", "HEAD")
    before = expected_objects(repo)
    s3 = s3_server.client()
    released = s3.get_object(Bucket=bucket, Key=MANIFEST)["Body"].read()

    repo.edit(f"{APP}/sdkconfig.defaults.esp32c6", '"Hello from', '"Hello again from')
    repo.commit("esp32c6 greets differently")
    s3_proxy.clear()
    refused = repo.doit("release", check=False)
    assert refused.code != 0
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: preflight: s3://{bucket}/{MANIFEST} was released by "
        f"{json.loads(released)['published_by']} from commit {first[:7]} (committed "
        "2026-01-01T00:00:00Z, clean), not from "
        f"{repo.git('rev-parse', '--short=7', 'HEAD')}; released versions are immutable: "
        "bump [project] version (or tag a new v<version> with version = \"git\"), or "
        "overwrite with ESP32TASKS_FORCE=1"]
    assert s3_proxy.writes() == []
    assert s3.get_object(Bucket=bucket, Key=MANIFEST)["Body"].read() == released
    for key, sha in before.items():
        assert s3.head_object(Bucket=bucket, Key=key)["Metadata"]["sha256"] == sha

    repo.env["ESP32TASKS_FORCE"] = "1"
    s3_proxy.clear()
    forced = repo.doit("release")
    assert "upload:esp32c6" in forced.executed
    after = expected_objects(repo)
    changed = {k for k in after if after[k] != before[k]}
    # forced, nothing needs checking: no GET. The preflight refused before the upload
    # ran, so its receipt still says what the bucket holds: only esp32c6's changed
    # objects go, without a HEAD; release.json is sent without one.
    sent = [(r.method, r.key) for r in s3_proxy.snapshot()]
    assert sorted(sent[:-2]) == sorted(("PUT", k) for k in changed)
    assert sent[-2:] == [("HEAD", WEB_MANIFEST), ("PUT", MANIFEST)]
    check_bucket(s3_server, repo, bucket)


def test_an_object_deleted_behind_our_back_is_sent_again_after_forget(
        repo: Repo, s3_server: Seaweed, s3_proxy: RecordingProxy) -> None:
    """Upload receipts are trusted (a no-op release sends nothing); `doit forget upload:<t>`
    makes the next release check each of the target's objects and send what is missing."""
    bucket = s3_server.bucket(new_bucket())
    use_s3(repo, s3_proxy.endpoint, bucket)
    repo.doit("release")
    objects = sorted(k for k in expected_objects(repo) if "/esp32c6/" in k)
    gone = next(k for k in objects if k.endswith("/hello.bin"))
    s3_server.client().delete_object(Bucket=bucket, Key=gone)

    s3_proxy.clear()
    assert repo.doit("release").executed == []
    assert s3_proxy.snapshot() == []  # trusted: the receipt says it is there

    repo.doit("forget", "upload:esp32c6")
    run = repo.doit("release")
    assert run.executed == ["upload:esp32c6"]  # the same receipt again: no new manifest
    sent = [(r.method, r.key) for r in s3_proxy.snapshot()]
    assert sent[0] == ("GET", MANIFEST)  # the release check
    assert sorted(sent[1:]) == sorted([*(("GET", k) for k in objects), ("PUT", gone)])
    check_bucket(s3_server, repo, bucket)


def test_missing_bucket_is_named_and_create_bucket_creates_it(
        repo: Repo, s3_server: Seaweed) -> None:
    bucket = new_bucket()
    use_s3(repo, s3_server.endpoint, bucket)
    run = repo.doit("release", check=False)
    assert run.code != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: preflight: S3 endpoint {s3_server.endpoint} (bucket '{bucket}'): "
        "the bucket does not exist; create it, fix store.url, or set `create_bucket = true` "
        "in [store]"]
    repo.edit("targets.toml", "endpoint_url", "create_bucket = true\nendpoint_url")
    repo.commit("create the bucket")
    repo.doit("release")
    check_bucket(s3_server, repo, bucket)


@pytest.mark.parametrize("creds", [Credentials(ADMIN.access_key, "wrong-secret-7c1d5e"),
                                   Credentials("nobody-key", "wrong-secret-7c1d5e")],
                         ids=["wrong-secret", "unknown-key"])
def test_wrong_credentials_fail_clearly_and_the_secret_is_nowhere(
        repo: Repo, s3_server: Seaweed, creds: Credentials) -> None:
    bucket = s3_server.bucket(new_bucket())
    use_s3(repo, s3_server.endpoint, bucket, creds=creds)
    run = repo.doit("release", check=False)
    assert run.code != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith(f"error: preflight: S3 endpoint {s3_server.endpoint} "
                                f"(bucket '{bucket}'): GET s3://{bucket}/{MANIFEST} refused: ")
    assert "(credentials from env)" in errors[0]
    assert_secret_nowhere(repo, creds.secret_key, run.output)
    assert s3_server.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_endpoint_down_fails_fast_with_one_line(repo: Repo) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    use_s3(repo, endpoint, "some-bucket")
    repo.doit("build")
    started = time.monotonic()
    run = repo.doit("release", check=False)
    assert time.monotonic() - started < 15
    assert run.code != 0
    assert [line for line in run.stderr.splitlines() if line.strip()] == [
        f"error: preflight: S3 endpoint {endpoint} (bucket 'some-bucket'): cannot "
        "connect after 2 attempts (Could not connect to the endpoint URL); check that the "
        "server is up and store.endpoint_url"]


def test_server_that_never_answers_fails_within_15_seconds(
        repo: Repo, silent_server: SilentServer) -> None:
    use_s3(repo, silent_server.endpoint, "some-bucket")
    repo.doit("build")
    started = time.monotonic()
    run = repo.doit("release", check=False)
    assert time.monotonic() - started < 15
    assert run.code != 0
    assert [line for line in run.stderr.splitlines() if line.strip()] == [
        f"error: preflight: S3 endpoint {silent_server.endpoint} (bucket 'some-bucket'): "
        "no answer within 5 s, 2 attempts; the server accepts connections but does not "
        "respond"]


def test_killed_mid_upload_then_rerun_sends_only_what_is_missing(
        repo: Repo, s3_private: Seaweed) -> None:
    server = s3_private
    bucket = server.bucket(new_bucket())
    proxy = RecordingProxy(server.endpoint)
    proxy.start()
    try:
        use_s3(repo, proxy.endpoint, bucket)
        puts = itertools.count(1)

        def kill_on_the_14th_put(method: str, path: str) -> None:
            # a target's 10 objects, then the 4th of the next (sent 8 at a time): a crash in
            # the middle of a target
            if method == "PUT" and next(puts) == 14:
                server.kill()

        proxy.hook = kill_on_the_14th_put
        crashed = repo.doit("release", check=False)
        assert crashed.code != 0
        errors = [line for line in crashed.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1
        assert errors[0].startswith("error: upload:esp32")
        assert errors[0].startswith(f": S3 endpoint {proxy.endpoint} (bucket '{bucket}'): ",
                                    len("error: upload:esp32c6"))
        crashed_in = errors[0].split(":")[2]  # the target whose upload the crash hit
        assert not (repo.path / f"build/receipts/upload-{crashed_in}.json").exists()

        proxy.hook = None
        server.start()  # same ports, same data
        s3 = server.client()
        present = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
        assert MANIFEST not in present
        receipts = repo.path / "build/receipts"
        done = [t for t in TARGETS if (receipts / f"upload-{t}.json").exists()]
        assert len(done) == 1  # 10 objects each: one target, then the 4th of the next
        for target in done:
            assert {k for k in expected_objects(repo) if f"/{target}/" in k} <= present
        hit = {k for k in expected_objects(repo) if f"/{crashed_in}/" in k}
        assert not hit <= present  # the crash hit in the middle of a target
        proxy.clear()
        rerun = repo.doit("release")
        assert not {f"upload:{t}" for t in done} & set(rerun.executed)  # finished before
        assert {*(f"upload:{t}" for t in TARGETS if t not in done), "manifest"} <= \
            set(rerun.executed)
        missing = set(expected_objects(repo)) - present
        assert sorted(r.key for r in proxy.writes()) == sorted([*missing, MANIFEST,
                                                                WEB_MANIFEST])
        check_bucket(server, repo, bucket)

        # nothing changed: the release succeeds with the server stopped
        server.stop()
        proxy.clear()
        noop = repo.doit("release")
        assert noop.executed == []
        assert proxy.snapshot() == []
    finally:
        proxy.stop()


def test_local_store_gets_the_same_manifest(repo: Repo) -> None:
    repo.doit("release")
    path = repo.path / "build/store/hello/hello-1.0.0/release.json"
    manifest = json.loads(path.read_text())
    check_manifest(repo, manifest)
    assert path.read_bytes() == (repo.path / "build/receipts/release.json").read_bytes()
    for target in TARGETS:
        for artifact in manifest["targets"][target]["artifacts"]:
            data = (path.parent / artifact["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == artifact["sha256"]


def test_with_a_registry_the_manifest_lists_every_pushed_tag_and_digest(
        repo: Repo, s3_server: Seaweed, registry: RegistryServer) -> None:
    bucket = s3_server.bucket(new_bucket())
    repository = configure(repo, registry)
    use_s3(repo, s3_server.endpoint, bucket)
    run = repo.doit("release")
    # written after every push, the index's included
    assert run.executed.index("manifest") > run.executed.index("push-index")
    manifest = check_bucket(s3_server, repo, bucket)
    index = receipt(repo, "push-index", PushIndexReceipt)
    assert manifest["registry"] == {"repository": repository,
                                    "index": {"tag": "hello-1.0.0", "digest": index.digest}}
    assert index.digest == manifest["index"]["digest"]
    for target in TARGETS:
        pushed = receipt(repo, f"push-{target}", PushReceipt)
        assert manifest["targets"][target]["registry"] == {
            "repository": repository, "tag": pushed.tag, "digest": pushed.digest}
        assert registry.manifest("cloud-iot/hello", pushed.tag)[0] == pushed.digest
