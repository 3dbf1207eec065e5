"""Signed releases of the bundled example, against the real registry and S3 server.

Two keys, three targets: ``prod`` (rsa3072) signs esp32c3, esp32c6 and esp32h2; ``field``
(ecdsa256) signs esp32c6 and esp32h2 (esp32c3 verifies RSA only). Keys are made here with
``cryptography`` and handed over in environment variables, as a CI secret would be.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from esp32tasks.receipts import BuildReceipt, ImageReceipt, IndexReceipt
from tests.servers.registry import RegistryServer, configure
from tests.servers.s3 import RecordingProxy, Seaweed
from tests.support.repo import Repo, receipt
from tests.support.s3_release import PREFIX, new_bucket, use_s3

pytestmark = pytest.mark.integration

TARGETS = ("esp32c3", "esp32c6", "esp32h2")
KEYS = """
[[keys]]
name = "prod"
scheme = "rsa3072"
private_key_env = "ESP32_KEY_PROD"

[[keys]]
name = "field"
scheme = "ecdsa256"
private_key_env = "ESP32_KEY_FIELD"
targets = ["esp32c6", "esp32h2"]
"""


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def prod_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


@pytest.fixture(scope="module")
def field_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Servers:
    """The registry and the bucket a signed repo releases to."""

    registry: RegistryServer
    s3: Seaweed
    bucket: str


@pytest.fixture
def servers(repo: Repo, registry: RegistryServer, s3_server: Seaweed,
            s3_proxy: RecordingProxy) -> Servers:
    bucket = s3_server.bucket(new_bucket())
    configure(repo, registry)
    use_s3(repo, s3_proxy.endpoint, bucket)
    return Servers(registry, s3_server, bucket)


def signed_repo(repo: Repo, prod: rsa.RSAPrivateKey, field: ec.EllipticCurvePrivateKey) -> Repo:
    repo.write("targets.toml", repo.read("targets.toml") + KEYS)
    repo.commit("sign with prod and field")
    repo.env.update(ESP32_KEY_PROD=pem(prod), ESP32_KEY_FIELD=pem(field))
    return repo


def espsecure_verifies(tmp: Path, key_pem: bytes, signed: bytes, version: int = 2) -> bool:
    (tmp / "pub.pem").write_bytes(key_pem)
    (tmp / "app.bin").write_bytes(signed)
    run = subprocess.run([sys.executable, "-m", "espsecure", "verify-signature", "--version",
                          str(version), "--keyfile", str(tmp / "pub.pem"), str(tmp / "app.bin")],
                         capture_output=True, check=False)
    return run.returncode == 0


def test_two_keys_three_targets_sign_publish_and_verify(
        repo: Repo, servers: Servers, prod_key: rsa.RSAPrivateKey,
        field_key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> None:
    registry, s3_server, bucket = servers.registry, servers.s3, servers.bucket
    signed_repo(repo, prod_key, field_key)
    sha7 = repo.git("rev-parse", "--short=7", "HEAD").strip()

    run = repo.doit("release")

    signed = {f"{t}@prod" for t in TARGETS} | {"esp32c6@field", "esp32h2@field"}
    assert {n.removeprefix("sign:") for n in run.executed if n.startswith("sign:")} == signed
    # only signed variants are published: no unsigned index, no unsigned per-target push
    assert not any(n in run.executed for n in ("index", "push-index", "push:esp32c3"))
    for key, scheme_key, targets in (("prod", prod_key, TARGETS),
                                     ("field", field_key, ("esp32c6", "esp32h2"))):
        index = receipt(repo, f"index@{key}", IndexReceipt)
        assert index.tag == f"hello-1.0.0-{key}"
        assert [c.target for c in index.targets] == list(targets)
        digest, data = registry.manifest("cloud-iot/hello", index.tag)
        assert digest == index.index.digest
        assert json.loads(data)["annotations"]["dev.esp32tasks.key"] == key
        for target in targets:
            image = receipt(repo, f"image-{target}@{key}", ImageReceipt)
            assert image.tag == f"{target}-hello-1.0.0-{key}-{sha7}"
            built = {a.kind: a for a in receipt(repo, f"build-{target}@{key}",
                                                BuildReceipt).artifacts}
            app = repo.path / built["app"].path
            assert app.parent == repo.path / f"build/{target}@{key}"
            assert espsecure_verifies(tmp_path, public_pem(scheme_key), app.read_bytes())
            flipped = bytearray(app.read_bytes())
            flipped[100] ^= 1
            assert not espsecure_verifies(tmp_path, public_pem(scheme_key), bytes(flipped))
            # the bootloader is signed too (Secure Boot v2); the unsigned files are kept
            assert espsecure_verifies(tmp_path, public_pem(scheme_key),
                                      (repo.path / built["bootloader"].path).read_bytes())
            assert (repo.path / f"build/{target}/hello.bin").is_file()
            # S3: under the key's own prefix, the signed bytes
            key_name = f"{PREFIX}/hello/hello-1.0.0-{key}/{target}/artifacts/hello.bin"
            body = s3_server.client().get_object(Bucket=bucket, Key=key_name)["Body"].read()
            assert body == app.read_bytes()
    manifest = json.loads(s3_server.client().get_object(
        Bucket=bucket, Key=f"{PREFIX}/hello/hello-1.0.0/release.json")["Body"].read())
    assert set(manifest["targets"]) == signed
    assert manifest["targets"]["esp32c3@prod"]["artifacts"][0]["path"].startswith(
        "../hello-1.0.0-prod/esp32c3/artifacts/")
    assert set(manifest["keys"]) == {"prod", "field"}
    assert manifest["keys"]["prod"]["scheme"] == "rsa3072"
    assert manifest["keys"]["prod"]["fingerprint"].startswith("sha256:")
    assert "index" not in manifest  # no unsigned variant
    # a device's view: every app of every key's index verifies with that key
    verified = repo.doit("verify")
    assert "signature by key prod ok" in verified.stdout
    assert "signature by key field ok" in verified.stdout
    # ... and an app another key signed is caught: verify with a key that did not sign
    repo.env["ESP32_KEY_FIELD"] = pem(ec.generate_private_key(ec.SECP256R1()))
    wrong = repo.doit("verify", check=False)
    assert wrong.code != 0
    assert "esp32c6@field: signature: " in wrong.output
    assert "signature by key prod ok" in wrong.output
    repo.env["ESP32_KEY_FIELD"] = pem(field_key)

    # a no-op signs nothing
    again = repo.doit("release")
    assert again.executed == []

    # rotating one key re-signs and republishes that key's variants only; no build runs
    rotated = ec.generate_private_key(ec.SECP256R1())
    repo.env["ESP32_KEY_FIELD"] = pem(rotated)
    repo.env["ESP32TASKS_FORCE"] = "1"  # the field index moves: a released tag
    moved = repo.doit("release")
    assert {n for n in moved.executed if n.startswith(("build:", "sign:"))} == {
        "sign:esp32c6@field", "sign:esp32h2@field"}
    assert "push-index@prod" not in moved.executed


def test_two_clones_of_one_commit_sign_to_identical_digests(
        repo: Repo, tmp_path: Path, prod_key: rsa.RSAPrivateKey,
        field_key: ec.EllipticCurvePrivateKey) -> None:
    signed_repo(repo, prod_key, field_key)
    other = repo.clone(tmp_path / "other")
    repo.doit("release")
    other.doit("release")
    for key in ("prod", "field"):
        ours = receipt(repo, f"index@{key}", IndexReceipt)
        theirs = receipt(other, f"index@{key}", IndexReceipt)
        assert ours.index.digest == theirs.index.digest, key


def test_secrets_reach_no_byte_of_a_signed_release(
        repo: Repo, servers: Servers, prod_key: rsa.RSAPrivateKey,
        field_key: ec.EllipticCurvePrivateKey) -> None:
    registry, s3_server, bucket = servers.registry, servers.s3, servers.bucket
    signed_repo(repo, prod_key, field_key)
    outputs = [repo.doit("-v", "2", "release"), repo.doit("verify")]
    secrets = [line.encode() for key in (prod_key, field_key)
               for line in pem(key).splitlines() if "PRIVATE KEY" not in line]
    secrets += [base64.b64decode("".join(pem(k).splitlines()[1:-1]))[:48]
                for k in (prod_key, field_key)]

    def found(data: bytes) -> bool:
        return any(secret in data for secret in secrets)

    places: dict[str, bytes] = {f"output {i}": r.output.encode() for i, r in enumerate(outputs)}
    for root in (repo.path / "build", registry.storage):
        places.update({str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()})
    client = s3_server.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            got = client.get_object(Bucket=bucket, Key=obj["Key"])
            places[obj["Key"]] = got["Body"].read() + json.dumps(got["Metadata"]).encode()
    assert len(places) > 50
    assert [where for where, data in places.items() if found(data)] == []


def test_a_build_never_sees_a_key_variable(repo: Repo, prod_key: rsa.RSAPrivateKey,
                                           field_key: ec.EllipticCurvePrivateKey) -> None:
    repo.write("targets.toml", repo.read("targets.toml").replace(
        'toolchain = [', 'pass_env = ["ESP32_KEY_PROD"]\ntoolchain = ['))
    signed_repo(repo, prod_key, field_key)
    script = repo.path / "examples/hello/tools/build.py"
    script.write_text(script.read_text().replace(
        'def main(', 'import os as _os\nassert "ESP32_KEY_PROD" not in _os.environ\n'
        'assert "ESP32_KEY_FIELD" not in _os.environ\n\n\ndef main(', 1))
    repo.commit("a build that checks")
    assert repo.doit("release").code == 0


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_missing_key_variable_names_the_key_and_the_variable(
        repo: Repo, prod_key: rsa.RSAPrivateKey, field_key: ec.EllipticCurvePrivateKey) -> None:
    signed_repo(repo, prod_key, field_key)
    del repo.env["ESP32_KEY_FIELD"]
    run = repo.doit("release", check=False)
    assert run.code != 0
    [error, *_] = errors(run.stderr)
    assert error.startswith("error: sign:esp32c6@field: key 'field'")
    assert "ESP32_KEY_FIELD" in error


def test_an_external_signer_signs_through_openssl(
        repo: Repo, tmp_path: Path, field_key: ec.EllipticCurvePrivateKey) -> None:
    secret = tmp_path / "secret.pem"  # the HSM's: outside the repository
    secret.write_text(pem(field_key))
    signer = tmp_path / "signer.sh"
    signer.write_text('#!/bin/sh\nset -e\nd=$(mktemp)\ncat > "$d"\n'
                      f'openssl pkeyutl -sign -inkey {secret} -in "$d"\nrm -f "$d"\n')
    signer.chmod(0o755)
    repo.write("keys/field.pub.pem", public_pem(field_key).decode())
    repo.write("targets.toml", repo.read("targets.toml") + f"""
[[keys]]
name = "hsm"
scheme = "ecdsa256"
sign_command = ["{signer}"]
public_key = "keys/field.pub.pem"
targets = ["esp32c6"]
""")
    repo.commit("sign esp32c6 in the HSM")
    repo.doit("release")
    built = {a.kind: a for a in receipt(repo, "build-esp32c6@hsm", BuildReceipt).artifacts}
    for kind in ("app", "bootloader"):
        assert espsecure_verifies(tmp_path, public_pem(field_key),
                                  (repo.path / built[kind].path).read_bytes()), kind

    # a signer that fails shows its stderr's tail
    signer.write_text("#!/bin/sh\necho 'HSM: slot 3 is locked' >&2\nexit 3\n")
    repo.doit("forget", "sign:esp32c6@hsm")
    run = repo.doit("release", check=False)
    [error, *_] = errors(run.stderr)
    assert "exited 3" in error
    assert "HSM: slot 3 is locked" in error


def release_json(repo: Repo) -> dict[str, Any]:
    return dict(json.loads((repo.path / "build/receipts/release.json").read_text()))


def test_publish_unsigned_keeps_the_unsigned_variant_too(
        repo: Repo, prod_key: rsa.RSAPrivateKey, field_key: ec.EllipticCurvePrivateKey) -> None:
    repo.write("targets.toml", repo.read("targets.toml").replace(
        'app_dir = "examples/hello"', 'app_dir = "examples/hello"\npublish_unsigned = true'))
    signed_repo(repo, prod_key, field_key)
    repo.doit("release")
    doc = release_json(repo)
    assert doc["index"]["tag"] == "hello-1.0.0"
    assert {"esp32c3", "esp32c3@prod", "esp32c6@field"} <= set(doc["targets"])
    assert (repo.path / "build/store/hello/hello-1.0.0-prod/manifest.json").is_file()
