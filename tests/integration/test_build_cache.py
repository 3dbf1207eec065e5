"""The remote build cache ([cache]): runner B releases runner A's commit without starting a
compiler, a writer without the key cannot plant outputs a keyed reader uses, a bad entry is
one warning and a compile, and signed outputs travel too (the same bytes everywhere, even
from a randomized signer)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from esp32tasks.receipts import BuildReceipt, IndexReceipt
from tests.servers.s3 import ADMIN, Seaweed
from tests.support.repo import TARGETS, Repo, Run, receipt
from tests.support.s3_release import new_bucket

pytestmark = pytest.mark.integration

KEY = "a-cache-key-only-trusted-jobs-have"
HIT = re.compile(r"^(build|sign):(\S+): from the build cache ", re.MULTILINE)
COMPILERS = ("riscv64-unknown-elf-gcc", "riscv64-unknown-elf-ld", "cc1", "as", "collect2")


def hits(run: Run) -> set[str]:
    return {f"{kind}:{name}" for kind, name in HIT.findall(run.stderr)}


def warnings(run: Run) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("warning: cache:")]


def with_cache(repo: Repo, url: str, endpoint: str | None = None) -> None:
    text = f'\n[cache]\nurl = "{url}"\n'
    if endpoint:
        text += f'endpoint_url = "{endpoint}"\n'
    repo.write("targets.toml", repo.read("targets.toml") + text)
    repo.commit("a remote build cache")


def traced(repo: Repo, trace: Path, *args: str) -> tuple[Run, list[list[str]]]:
    """``doit`` under ``strace -f -e trace=execve``: the run, and every program it started
    (argv, as strace shows it)."""
    run = repo.run("strace", "-f", "-qq", "-s", "256", "-e", "trace=execve", "-e",
                   "signal=none", "-o", str(trace), sys.executable, "-m", "doit", *args)
    started = []
    for line in trace.read_text().splitlines():
        found = re.search(r'execve\("([^"]+)", \[(.*?)\]', line)
        if found and "= -1 " not in line:
            started.append([found.group(1), *re.findall(r'"([^"]*)"', found.group(2))])
    return run, started


def compilers(started: list[list[str]]) -> list[list[str]]:
    return [argv for argv in started if Path(argv[0]).name in COMPILERS
            or any(a.endswith("tools/build.py") for a in argv[1:3])]


def index_digest(repo: Repo) -> str:
    return receipt(repo, "index", IndexReceipt).index.digest


def app_bytes(repo: Repo, name: str) -> bytes:
    built = {a.kind: a for a in receipt(repo, f"build-{name}", BuildReceipt).artifacts}
    return (repo.path / built["app"].path).read_bytes()


def listed(s3: Seaweed, bucket: str, prefix: str) -> dict[str, int]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (ci/setup)")
def test_runner_b_releases_from_runner_a_cache_without_a_compiler(
        repo: Repo, s3_server: Seaweed, tmp_path: Path) -> None:
    bucket = s3_server.bucket(new_bucket())
    repo.env.update(ADMIN.env)
    with_cache(repo, f"s3://{bucket}/cache", s3_server.endpoint)
    a = repo.clone(tmp_path / "runner-a" / "firmware")
    b = repo.clone(tmp_path / "runner-b" / "elsewhere" / "firmware")
    a.env.update(ESP32TASKS_CACHE_WRITE="1", ESP32TASKS_CACHE_KEY=KEY)
    b.env.update(ESP32TASKS_CACHE_KEY=KEY)  # a reader: ESP32TASKS_CACHE_WRITE unset

    cold = a.doit("release")
    assert {n for n in cold.executed if n.startswith("build:")} == {f"build:{t}"
                                                                  for t in TARGETS}
    assert hits(cold) == set(), cold.stderr
    assert warnings(cold) == [], cold.stderr
    stored = listed(s3_server, bucket, "cache/")
    entries = [k for k in stored if k.startswith("cache/entries/")]
    blobs = [k for k in stored if k.startswith("cache/blobs/sha256/")]
    assert len(entries) == len(TARGETS), stored
    for key in blobs:  # content-addressed: each blob is stored under its own SHA-256
        body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == key.rsplit("/", 1)[1]
    files = [f for key in entries for f in json.loads(
        s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read())["files"]]
    assert len(blobs) < len(files), "identical files of the targets share one blob"

    run, started = traced(b, tmp_path / "b.trace", "release")
    assert hits(run) == {f"build:{t}" for t in TARGETS}, run.stderr
    assert any(Path(argv[0]).name == "git" for argv in started), "strace saw the run's programs"
    assert compilers(started) == [], "runner B started a compiler"
    assert index_digest(b) == index_digest(a)
    for target in TARGETS:
        assert app_bytes(b, target) == app_bytes(a, target), target
    assert listed(s3_server, bucket, "cache/") == stored, "a reader wrote to the cache"
    assert b.doit("release").executed == [], "the restored state is up to date"

    # one target's own file changes: B compiles that target only
    b.edit("examples/hello/sdkconfig.defaults.esp32c6", "\n", "\nCONFIG_LOG_DEFAULT_LEVEL=2\n")
    b.commit("esp32c6: quieter log")
    run, started = traced(b, tmp_path / "b2.trace", "release")
    assert {n for n in run.executed if n.startswith("build:")} == {"build:esp32c6"}
    assert hits(run) == set(), run.stderr
    built = compilers(started)
    assert built, "esp32c6 compiled"
    scripts = [argv for argv in built if any(a.endswith("tools/build.py") for a in argv[1:3])]
    assert scripts, built
    assert all("esp32c6" in argv for argv in scripts), scripts
    assert listed(s3_server, bucket, "cache/") == stored, "a reader wrote to the cache"


def test_a_planted_entry_is_ignored_by_a_keyed_reader(repo: Repo, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with_cache(repo, str(cache))
    attacker = repo.clone(tmp_path / "pull-request" / "firmware")
    attacker.env.update(ESP32TASKS_CACHE_WRITE="1")  # a writer without the key
    attacker.doit("release")
    # ... plants an app of its own under the right input digest: a sound entry in every
    # other respect (its blob hashes to its name, its receipts name it)
    evil = b"\xe9" + b"not the app this commit builds" * 100
    evil_sha = hashlib.sha256(evil).hexdigest()
    (cache / "blobs" / "sha256" / evil_sha).write_bytes(evil)
    planted = 0
    for path in (cache / "entries").glob("*.json"):
        doc = json.loads(path.read_text())
        if doc["task"] != "build:esp32c3":
            continue
        app = next(f for f in doc["files"] if f["path"].endswith("/hello.bin"))
        old = app["sha256"]
        app.update(sha256=evil_sha, size=len(evil))
        doc["receipts"] = {k: v.replace(old, evil_sha) for k, v in doc["receipts"].items()}
        path.write_text(json.dumps(doc))
        planted += 1
    assert planted == 1

    trusted = repo.clone(tmp_path / "main" / "firmware")
    trusted.env.update(ESP32TASKS_CACHE_KEY=KEY)
    run = trusted.doit("release")
    assert hits(run) == set(), run.stderr  # none of the unkeyed entries is used
    bad = warnings(run)
    assert len(bad) == len(TARGETS), run.stderr
    assert all("no valid HMAC under ESP32TASKS_CACHE_KEY" in line for line in bad), bad
    assert app_bytes(trusted, "esp32c3") != evil
    assert app_bytes(trusted, "esp32c3") == app_bytes(attacker, "esp32c3")

    # the control: a reader without the key is told once, and takes the planted app
    careless = repo.clone(tmp_path / "careless" / "firmware")
    run = careless.doit("release")
    assert "build:esp32c3" in hits(run)
    told = [line for line in warnings(run) if "ESP32TASKS_CACHE_KEY is not set" in line]
    assert len(told) == 1, run.stderr
    assert app_bytes(careless, "esp32c3") == evil


def test_a_corrupt_or_partial_entry_is_one_warning_and_a_compile(
        repo: Repo, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with_cache(repo, str(cache))
    writer = repo.clone(tmp_path / "writer" / "firmware")
    writer.env.update(ESP32TASKS_CACHE_WRITE="1", ESP32TASKS_CACHE_KEY=KEY)
    writer.doit("release")
    entries = {json.loads(p.read_text())["task"]: p for p in (cache / "entries").glob("*.json")}
    doc = json.loads(entries["build:esp32c6"].read_text())
    used_elsewhere = {f["sha256"] for task, p in entries.items() if task != "build:esp32c6"
                      for f in json.loads(p.read_text())["files"]}
    torn = entries["build:esp32c3"]
    torn.write_bytes(torn.read_bytes()[:100])  # a torn write
    own = next(f for f in doc["files"] if f["sha256"] not in used_elsewhere)
    (cache / "blobs" / "sha256" / own["sha256"]).unlink()  # a partial entry

    reader = repo.clone(tmp_path / "reader" / "firmware")
    reader.env.update(ESP32TASKS_CACHE_KEY=KEY)
    run = reader.doit("release")
    assert hits(run) == {"build:esp32h2"}, run.stderr
    bad = warnings(run)
    assert len(bad) == 2, run.stderr
    assert any("build:esp32c3" in line and "not JSON" in line for line in bad), bad
    assert any("build:esp32c6" in line and "missing" in line for line in bad), bad
    assert "Traceback" not in run.output
    assert index_digest(reader) == index_digest(writer)


def test_only_a_job_with_cache_write_writes(repo: Repo, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    repo.env.update(ESP32TASKS_CACHE=str(cache))
    run = repo.doit("release")
    assert {n for n in run.executed if n.startswith("build:")} == {f"build:{t}"
                                                                 for t in TARGETS}
    assert not cache.exists() or not any(cache.rglob("*")), "written without CACHE_WRITE"


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def test_signed_outputs_from_a_randomized_signer_are_the_same_everywhere(
        repo: Repo, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    secret = tmp_path / "hsm" / "secret.pem"  # outside every checkout
    secret.parent.mkdir()
    secret.write_text(pem(key))
    signer = tmp_path / "hsm" / "signer.sh"  # openssl's ECDSA draws a random nonce
    signer.write_text('#!/bin/sh\nset -e\nd=$(mktemp)\ncat > "$d"\n'
                      f'openssl pkeyutl -sign -inkey {secret} -in "$d"\nrm -f "$d"\n')
    signer.chmod(0o755)
    repo.write("keys/hsm.pub.pem", key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    repo.write("targets.toml", repo.read("targets.toml") + f"""
[[keys]]
name = "hsm"
scheme = "ecdsa256"
sign_command = ["{signer}"]
public_key = "keys/hsm.pub.pem"
targets = ["esp32c6"]
""")
    repo.commit("sign esp32c6 in the HSM")
    alone = repo.clone(tmp_path / "alone" / "firmware")  # no cache: its own signature
    alone.doit("release")
    cache = tmp_path / "cache"
    with_cache(repo, str(cache))
    a = repo.clone(tmp_path / "a" / "firmware")
    a.env.update(ESP32TASKS_CACHE_WRITE="1", ESP32TASKS_CACHE_KEY=KEY)
    a.doit("release")
    b = repo.clone(tmp_path / "b" / "firmware")
    b.env.update(ESP32TASKS_CACHE_KEY=KEY)
    run = b.doit("release")
    assert "sign:esp32c6@hsm" in hits(run), run.stderr
    assert app_bytes(b, "esp32c6@hsm") == app_bytes(a, "esp32c6@hsm")
    assert receipt(b, "index@hsm", IndexReceipt).index.digest == \
        receipt(a, "index@hsm", IndexReceipt).index.digest
    # the control: the signer is randomized, so without the cache the bytes differ
    assert app_bytes(alone, "esp32c6@hsm") != app_bytes(a, "esp32c6@hsm")
