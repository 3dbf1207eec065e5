"""Lost or changed outputs are noticed: what went missing is made again, advice works, and
`doit verify` reads every object of the release back from the store."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from esp32tasks.receipts import BuildReceipt, ImageReceipt
from esp32tasks.registry.verify import PUSH_AGAIN
from tests.servers.registry import RegistryServer, configure
from tests.servers.s3 import RecordingProxy, Seaweed
from tests.support.repo import TARGETS, Repo, Run, receipt
from tests.support.s3_release import MANIFEST, RELEASE, check_bucket, new_bucket, use_s3

pytestmark = pytest.mark.integration

STORE = "build/store/hello/hello-1.0.0"


def layout_refs(repo: Repo) -> dict[str, str]:
    index = json.loads(repo.read("build/oci/index.json"))
    return {d["annotations"]["org.opencontainers.image.ref.name"]: d["digest"]
            for d in index["manifests"]}


def assert_layout_intact(repo: Repo) -> None:
    blobs = repo.path / "build/oci/blobs/sha256"
    for target in TARGETS:
        image = receipt(repo, f"image-{target}", ImageReceipt)
        for descriptor in (image.manifest, image.config, image.layer):
            data = (blobs / descriptor.digest.removeprefix("sha256:")).read_bytes()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == descriptor.digest


def artifact(repo: Repo, target: str, name: str) -> Path:
    found = next(a for a in receipt(repo, f"build-{target}", BuildReceipt).artifacts
                 if a.name == name)
    return repo.path / found.path


def flip_a_byte(path: Path) -> bytes:
    """Other bytes, the same size (what a stat cannot see); returns the old bytes."""
    data = path.read_bytes()
    middle = len(data) // 2
    path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    return data


def error_lines(run: Run) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("error:")]


def follow_advice(repo: Repo, message: str) -> list[Run]:
    """Run the command a message advises (the last `doit ...` in backticks)."""
    commands = re.findall(r"`(doit [^`]*)`", message)
    assert commands, message
    runs = []
    for command in commands[-1].split("&&"):
        argv = shlex.split(command)
        assert argv[0] == "doit", command
        runs.append(repo.doit(*argv[1:]))
    return runs


def test_a_lost_layout_blob_artifact_or_store_copy_is_made_again(repo: Repo) -> None:
    repo.doit("release")
    refs = layout_refs(repo)

    shutil.rmtree(repo.path / "build/oci")
    run = repo.doit("release")
    assert sorted(run.executed) == sorted([*(f"tag:{t}" for t in TARGETS), "index"])
    assert layout_refs(repo) == refs
    assert_layout_intact(repo)

    layer = receipt(repo, "image-esp32c6", ImageReceipt).layer.digest
    blob = repo.path / "build/oci/blobs/sha256" / layer.removeprefix("sha256:")
    blob.write_bytes(blob.read_bytes()[:-7])  # torn
    assert repo.doit("release").executed == ["tag:esp32c6"]
    assert_layout_intact(repo)

    elf = artifact(repo, "esp32h2", "hello.elf")
    before = elf.read_bytes()
    elf.unlink()
    assert repo.doit("release").executed == ["build:esp32h2"]  # the same bytes again
    assert elf.read_bytes() == before

    shutil.rmtree(repo.path / "build/store")
    run = repo.doit("release")
    assert sorted(run.executed) == sorted([*(f"upload:{t}" for t in TARGETS), "manifest"])
    store = repo.path / STORE
    assert (store / "release.json").read_bytes() == repo.read("build/receipts/release.json") \
        .encode()
    for target in TARGETS:
        for a in receipt(repo, f"build-{target}", BuildReceipt).artifacts:
            assert (store / target / "artifacts" / a.name).read_bytes() == \
                (repo.path / a.path).read_bytes()
    assert repo.doit("release").executed == []


def test_an_artifact_changed_after_its_build_is_made_again_by_the_advised_command(
        repo: Repo) -> None:
    repo.doit("release")

    # hello.elf: other bytes of the same size, found when the upload hashes it
    elf = artifact(repo, "esp32c3", "hello.elf")
    built = flip_a_byte(elf)
    repo.doit("forget", "upload:esp32c3")
    failed = repo.doit("release", check=False)
    assert failed.code != 0
    (line,) = error_lines(failed)
    assert line.startswith("error: upload:esp32c3: build/esp32c3/hello.elf changed after its "
                           "build; "), line
    fixed = follow_advice(repo, line)
    assert "build:esp32c3" in fixed[-1].executed
    assert elf.read_bytes() == built  # made anew, not uploaded as found
    assert (repo.path / STORE / "esp32c3/artifacts/hello.elf").read_bytes() == built
    assert repo.doit("release").executed == []

    # hello.bin: found when the image is packed again (the layout was lost)
    app = artifact(repo, "esp32c6", "hello.bin")
    built = flip_a_byte(app)
    shutil.rmtree(repo.path / "build/oci")
    failed = repo.doit("release", check=False)
    (line,) = error_lines(failed)
    assert line.startswith("error: tag:esp32c6: build/esp32c6/hello.bin changed after its "
                           "build; "), line
    fixed = follow_advice(repo, line)
    assert "build:esp32c6" in fixed[-1].executed
    assert app.read_bytes() == built
    assert_layout_intact(repo)
    assert repo.doit("release").executed == []


def test_verify_reads_every_object_back_from_a_local_store(repo: Repo) -> None:
    repo.doit("release")
    ok = repo.doit("verify")
    for target in TARGETS:
        assert f"  {target}: ok (10 objects)" in ok.stdout.splitlines()

    copy = repo.path / STORE / "esp32c6/artifacts/hello.map"
    flip_a_byte(copy)
    bad = repo.doit("verify", check=False)
    assert bad.code != 0
    report = bad.stderr.splitlines()
    assert report[0] == f"error: verify: {repo.path / STORE} differs from this release:"
    c6 = next(line for line in report if line.startswith("  esp32c6: "))
    assert c6.startswith("  esp32c6: hello.map has other bytes (sha256 ")
    assert "  esp32c3: ok (10 objects)" in report
    assert "  release.json: ok" in report
    follow_advice(repo, bad.stderr)
    assert (repo.path / STORE / "esp32c6/artifacts/hello.map").read_bytes() == \
        artifact(repo, "esp32c6", "hello.map").read_bytes()
    repo.doit("verify")


def test_s3_objects_with_other_bytes_under_our_metadata_are_found_and_sent_again(
        repo: Repo, s3_server: Seaweed, s3_proxy: RecordingProxy) -> None:
    bucket = s3_server.bucket(new_bucket())
    use_s3(repo, s3_proxy.endpoint, bucket)
    repo.doit("release")
    s3 = s3_server.client()

    def overwrite(key: str) -> None:
        """Other bytes, the metadata of ours: a HEAD cannot tell."""
        meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
        s3.put_object(Bucket=bucket, Key=key, Body=b"not what we built", Metadata=meta)

    # `doit forget upload:<t>`: the next upload reads each object back, sends what differs
    c6 = [f"{RELEASE}esp32c6/artifacts/{a.name}"
          for a in receipt(repo, "build-esp32c6", BuildReceipt).artifacts]
    tampered = f"{RELEASE}esp32c6/artifacts/hello.bin"
    overwrite(tampered)
    repo.doit("forget", "upload:esp32c6")
    s3_proxy.clear()
    run = repo.doit("release")
    assert run.executed == ["upload:esp32c6"]
    sent = [(r.method, r.key) for r in s3_proxy.snapshot()]
    assert sorted(sent) == sorted([("GET", MANIFEST), *(("GET", k) for k in c6),
                                   ("PUT", tampered)])
    check_bucket(s3_server, repo, bucket)

    # `doit verify`: every object read back and named when it differs
    ok = repo.doit("verify")
    assert "  esp32h2: ok (10 objects)" in ok.stdout.splitlines()
    other = f"{RELEASE}esp32h2/artifacts/hello.elf"
    overwrite(other)
    bad = repo.doit("verify", check=False)
    assert bad.code != 0
    report = bad.stderr.splitlines()
    assert report[0] == f"error: verify: s3://{bucket}/{RELEASE} differs from this release:"
    h2 = next(line for line in report if line.startswith("  esp32h2: "))
    assert h2.startswith("  esp32h2: hello.elf has other bytes (sha256 "
                         f"{hashlib.sha256(b'not what we built').hexdigest()[:12]}…, "
                         "release.json says "), h2
    assert "  esp32c6: ok (10 objects)" in report
    follow_advice(repo, bad.stderr)
    check_bucket(s3_server, repo, bucket)
    repo.doit("verify")


def test_verify_with_a_registry_reads_both_back_and_each_advice_sends_it_again(
        repo: Repo, registry: RegistryServer) -> None:
    configure(repo, registry)
    repo.doit("release")
    where = f"{registry.host}/cloud-iot/hello:hello-1.0.0"
    ok = repo.doit("verify").stdout.splitlines()
    assert f"{where}: esp32c3 ok, esp32c6 ok, esp32h2 ok" in ok
    assert "  esp32c3: ok (10 objects)" in ok

    c3 = receipt(repo, "image-esp32c3", ImageReceipt)
    registry.delete_blob(c3.layer.digest)  # garbage collection, a wiped disk
    flip_a_byte(repo.path / STORE / "esp32h2/artifacts/hello.bin")
    bad = repo.doit("verify", check=False)
    assert bad.code != 0
    report = bad.stderr.splitlines()
    assert report[0] == f"error: verify: {where} differs from this build:"
    assert f"  to push this build again: {PUSH_AGAIN} (a released tag moves only with " \
        "ESP32TASKS_FORCE=1)" in report
    assert f"{repo.path / STORE} differs from this release:" in report
    assert any(line.startswith("  esp32h2: hello.bin has other bytes") for line in report)
    for command in (PUSH_AGAIN, "`doit forget upload:esp32h2 && doit release`"):
        assert command in bad.stderr
        follow_advice(repo, command)
    repo.doit("verify")
