"""No secret in anything a release leaves behind, nor in what its failures print.

A release with a registry password (TLS and htpasswd) and S3 keys of its own (random,
nothing like the fixtures' defaults), failing first (wrong S3 secret, wrong registry
password, S3 unreachable), then succeeding and verified. Then everything is scanned: the
output of every run, every file of the checkout and its home (build/, the doit state's raw
bytes, the OCI layout, gzip layers unpacked), every object in the bucket with its key and
metadata, and every file the registry stored. No secret may appear, in the clear, base64
(at any alignment, also as ``user:password``), or URL-quoted.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.faults.support import doit_bounded, error_lines
from tests.servers.faults import FaultProxy
from tests.servers.registry import PASSWORD, USER, RegistryServer, configure
from tests.servers.s3 import ADMIN, Credentials, Seaweed
from tests.support.repo import Repo, Run
from tests.support.s3_release import check_bucket, new_bucket, use_s3

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Secrets:
    user: str
    password: str
    wrong_password: str
    s3: Credentials
    wrong_s3_secret: str
    cache_key: str

    def strings(self) -> dict[str, str]:
        """name -> secret; the access key ID is kept out of files and output as well."""
        return {"registry password": self.password,
                "wrong registry password": self.wrong_password,
                "registry user:password": f"{self.user}:{self.password}",
                "wrong user:password": f"{self.user}:{self.wrong_password}",
                "S3 secret key": self.s3.secret_key,
                "wrong S3 secret key": self.wrong_s3_secret,
                "S3 access key": self.s3.access_key,
                "build cache HMAC key": self.cache_key}


def forms(secret: str) -> set[bytes]:
    """``secret`` as it could be written: raw, URL-quoted, and base64 (standard and
    URL-safe) at each of the three alignments it can have inside a longer encoded text."""
    raw = secret.encode()
    found = {raw, quote(secret, safe="").encode(), base64.b64encode(raw)}
    for skip in range(3):
        body = raw[skip:]
        body = body[:len(body) - len(body) % 3]
        if len(body) >= 9:  # long enough to mean something
            core = base64.b64encode(body)
            found |= {core, core.replace(b"+", b"-").replace(b"/", b"_")}
    return found


def leaks(data: bytes, where: str, keys: Secrets) -> list[str]:
    found = [f"{name} in {where}" for name, secret in keys.strings().items()
             if any(form in data for form in forms(secret))]
    if data[:2] == b"\x1f\x8b":  # a gzip layer: what it holds, too
        with contextlib.suppress(OSError, EOFError):  # not gzip after all
            found += leaks(gzip.decompress(data), f"{where} (unpacked)", keys)
    return found


def scan_tree(root: Path, keys: Secrets) -> list[str]:
    return [leak for path in sorted(root.rglob("*")) if path.is_file()
            for leak in leaks(path.read_bytes(), str(path.relative_to(root)), keys)]


@pytest.fixture(scope="module")
def keys() -> Secrets:
    return Secrets(user="release-bot", password="Pw-" + secrets.token_urlsafe(18),
                   wrong_password="Pw-" + secrets.token_urlsafe(18),
                   s3=Credentials("AK" + secrets.token_hex(9).upper(),
                                  secrets.token_urlsafe(30)),
                   wrong_s3_secret=secrets.token_urlsafe(30),
                   cache_key=secrets.token_urlsafe(24))


@pytest.fixture
def locked_registry(tmp_path: Path, keys: Secrets) -> Iterator[RegistryServer]:
    """TLS and htpasswd: the fixture's own user (its probes and direct reads) and ours."""
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (ci/setup installs it)")
    server = RegistryServer(tmp_path / "registry", tls=True, auth=True)
    server.workdir.mkdir()
    lines = [subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                            capture_output=True, text=True).stdout.strip()
             for user, password in ((USER, PASSWORD), (keys.user, keys.password))]
    (server.workdir / "htpasswd").write_text("\n".join(lines) + "\n")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def keyed_s3(tmp_path: Path, keys: Secrets) -> Iterator[Seaweed]:
    """A SeaweedFS that knows our keys (and the fixtures', for direct reads)."""
    server = Seaweed(tmp_path / "seaweedfs", identities=[ADMIN, keys.s3])
    server.root.mkdir()
    server.start()
    yield server
    server.kill()  # its data is thrown away: no need to wait for a clean stop


def test_no_secret_in_output_files_objects_or_the_registry(
        built: Repo, locked_registry: RegistryServer, keyed_s3: Seaweed, keys: Secrets) -> None:
    registry = locked_registry
    assert registry.ca is not None
    shutil.copy(registry.ca, built.path / "registry-ca.pem")
    configure(built, registry, ca_bundle="registry-ca.pem")
    bucket = keyed_s3.bucket(new_bucket())
    proxy = FaultProxy(keyed_s3.endpoint.removeprefix("http://"))
    built.write("targets.toml", built.read("targets.toml") + f'\n[cache]\nurl = "s3://{bucket}/'
                f'cache"\nendpoint_url = "{proxy.endpoint}"\n')  # entries carry an HMAC
    use_s3(built, proxy.endpoint, bucket, creds=keys.s3)
    good = {"ESP32TASKS_REGISTRY_USER": keys.user, "ESP32TASKS_REGISTRY_PASSWORD": keys.password,
            "ESP32TASKS_CACHE_WRITE": "1", "ESP32TASKS_CACHE_KEY": keys.cache_key}
    runs: dict[str, Run] = {}
    try:
        built.env.update({**good, "AWS_SECRET_ACCESS_KEY": keys.wrong_s3_secret})
        runs["wrong S3 secret"] = doit_bounded(built, "release", timeout=60)
        built.env.update({"AWS_SECRET_ACCESS_KEY": keys.s3.secret_key,
                          "ESP32TASKS_REGISTRY_PASSWORD": keys.wrong_password})
        runs["wrong registry password"] = doit_bounded(built, "release", timeout=60)
        built.env.update(good)
        port = proxy.port
        proxy.close()  # S3 unreachable: the preflight stops the release before a push
        runs["S3 unreachable"] = doit_bounded(built, "release", timeout=60)
        proxy = FaultProxy(proxy.upstream, port=port)
        for target in ("esp32c3", "esp32c6", "esp32h2"):  # compiled again: into the cache
            built.doit("forget", f"build:{target}")
        runs["release"] = doit_bounded(built, "release", timeout=120)
        runs["verify"] = doit_bounded(built, "verify", timeout=60)
    finally:
        proxy.close()
    for name in ("wrong S3 secret", "wrong registry password", "S3 unreachable"):
        assert runs[name].code != 0, f"{name}: {runs[name].output}"
        assert len(error_lines(runs[name].output)) == 1, f"{name}: {runs[name].output}"
    assert "preflight:" in error_lines(runs["wrong S3 secret"].output)[0]
    assert "preflight:" in error_lines(runs["wrong registry password"].output)[0]
    assert "preflight:" in error_lines(runs["S3 unreachable"].output)[0]
    for name, run in runs.items():
        print(f"{name}: exit {run.code}", *error_lines(run.output))  # shown with -rP
    assert runs["release"].code == 0, runs["release"].output
    assert runs["verify"].code == 0, runs["verify"].output
    check_bucket(keyed_s3, built, bucket)

    found = [leak for name, run in runs.items()
             for leak in leaks(run.output.encode(), f"the output of {name}", keys)]
    found += scan_tree(built.path, keys)  # the checkout: build/, the state, the layout
    found += scan_tree(built.path.parent / "home", keys)
    s3 = keyed_s3.client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for listed in page.get("Contents", []):
            key = listed["Key"]
            found += leaks(key.encode(), f"the key {key}", keys)
            got = s3.get_object(Bucket=bucket, Key=key)
            found += leaks(got["Body"].read(), f"s3://{bucket}/{key}", keys)
            metadata = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
            found += leaks(repr(sorted(metadata.items())).encode(),
                           f"the metadata of {key}", keys)
    found += scan_tree(registry.storage, keys)  # manifests, configs, layers, tags
    assert found == []
    entries = s3.list_objects_v2(Bucket=bucket, Prefix="cache/entries/").get("Contents", [])
    assert entries, "the build cache was written (and scanned above)"
    for listed in entries:
        doc = json.loads(s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"].read())
        assert doc["hmac"].startswith("hmac-sha256:"), listed["Key"]


def test_the_scan_finds_each_form(keys: Secrets) -> None:
    """The scanner itself: a secret in the clear, inside base64 at any offset (an
    Authorization header), URL-quoted, or in a gzip member is found."""
    token = base64.b64encode(f"{keys.user}:{keys.password}".encode())
    for prefix in (b"", b"x", b"xy"):
        inside = base64.b64encode(prefix + keys.s3.secret_key.encode() + b"tail")
        assert leaks(b"blob " + inside + b" end", "test", keys) == [
            "S3 secret key in test"], prefix
    assert "registry user:password in test" in leaks(b"Authorization: Basic " + token,
                                                     "test", keys)
    assert leaks(quote(keys.wrong_s3_secret, safe="").encode(), "test", keys) == [
        "wrong S3 secret key in test"]
    assert leaks(gzip.compress(b"..." + keys.s3.access_key.encode()), "layer", keys) == [
        "S3 access key in layer (unpacked)"]
