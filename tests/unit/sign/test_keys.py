"""Reading a Secure Boot key: each refusal is its exact one-line message, naming the key and
where it looked, and never a line of the key's PEM. Keys are made here with cryptography."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from esp32tasks.config import Key
from esp32tasks.errors import SignError
from esp32tasks.secureboot import Scheme
from esp32tasks.sign.keys import LoadedKey, fingerprint, load

WHERE = "key 'prod' (keys[0] in targets.toml)"
VAR = "ESP32_KEY_PROD"
PUB = PurePosixPath("keys/prod.pub.pem")


@pytest.fixture(scope="module")
def rsa3072() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


@pytest.fixture(scope="module")
def rsa2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def pem(key: PrivateKeyTypes) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def entry(scheme: Scheme = "rsa3072", **where: Any) -> Key:
    if not where:
        where = {"private_key_env": VAR}
    return Key(name="prod", scheme=scheme, where="keys[0] in targets.toml", **where)


def refused(key: Key, root: Path, environ: dict[str, str], *pems: str | bytes) -> str:
    """The message ``load`` refuses with: one line, and no line of any PEM given."""
    with pytest.raises(SignError) as info:
        load(key, root, environ)
    message = str(info.value)
    assert "\n" not in message
    for text in (*pems, *environ.values()):
        body = text.decode() if isinstance(text, bytes) else text
        for line in body.replace("\\n", "\n").splitlines():
            if len(line) >= 16:  # base64 body lines (and whole garbage values)
                assert line not in message
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ or info.value.__context__ is None
    return message


def test_a_key_in_a_variable(tmp_path: Path, rsa3072: rsa.RSAPrivateKey) -> None:
    loaded = load(entry(), tmp_path, {VAR: pem(rsa3072)})
    assert loaded.public_pem == public(rsa3072)
    assert isinstance(loaded.private, rsa.RSAPrivateKey)
    assert loaded.private.private_numbers() == rsa3072.private_numbers()
    assert pem(rsa3072).splitlines()[1] not in repr(loaded)


def test_a_key_in_a_file_with_its_committed_public_key(tmp_path: Path,
                                                       p256: ec.EllipticCurvePrivateKey) -> None:
    (tmp_path / "secret.pem").write_text(pem(p256))
    (tmp_path / "keys").mkdir()
    (tmp_path / PUB).write_bytes(public(p256).replace(b"\n", b"\r\n"))
    loaded = load(entry("ecdsa256", private_key_file=tmp_path / "secret.pem", public_key=PUB),
                  tmp_path, {})
    assert loaded.public_pem == public(p256)
    assert isinstance(loaded.private, ec.EllipticCurvePrivateKey)


@pytest.mark.parametrize("scheme", ["ecdsa256", "sbv1"])
def test_p256_fits_both_of_its_schemes(tmp_path: Path, p256: ec.EllipticCurvePrivateKey,
                                       scheme: Scheme) -> None:
    assert load(entry(scheme), tmp_path, {VAR: pem(p256)}).public_pem == public(p256)


def test_a_variable_with_literal_backslash_n_for_line_breaks(
        tmp_path: Path, p384: ec.EllipticCurvePrivateKey) -> None:
    """GitLab's masked variables hold no line breaks: the PEM arrives with ``\\n``."""
    flat = pem(p384).replace("\n", "\\n")
    assert load(entry("ecdsa384"), tmp_path, {VAR: flat}).public_pem == public(p384)


def test_with_a_sign_command_only_the_public_key_is_read(
        tmp_path: Path, rsa3072: rsa.RSAPrivateKey) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / PUB).write_bytes(public(rsa3072))
    loaded = load(entry(sign_command=("my-signer", "--key", "prod"), public_key=PUB),
                  tmp_path, {})
    assert loaded == LoadedKey(key=loaded.key, public_pem=public(rsa3072),
                               fingerprint=loaded.fingerprint, private=None)


def test_the_fingerprint_is_sha256_of_the_der_subject_public_key_info(
        tmp_path: Path, p256: ec.EllipticCurvePrivateKey) -> None:
    der = p256.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    expected = "sha256:" + hashlib.sha256(der).hexdigest()
    assert fingerprint(public(p256)) == expected
    assert fingerprint(public(p256).replace(b"\n", b"\r\n") + b"trailing text\n") == expected
    assert load(entry("ecdsa256"), tmp_path, {VAR: pem(p256)}).fingerprint == expected
    assert load(entry("ecdsa256"), tmp_path, {VAR: pem(p256)}).fingerprint == expected


def test_the_fingerprint_of_something_else_is_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(SignError, match=r"^not a PEM public key"):
        fingerprint(pem(p256).encode())


def test_a_missing_variable(tmp_path: Path) -> None:
    assert refused(entry(), tmp_path, {}) == (
        f"{WHERE}: the variable {VAR} is not set; put the key's PEM in it (or use "
        "private_key_file)")


def test_an_empty_variable(tmp_path: Path) -> None:
    assert refused(entry(), tmp_path, {VAR: " \n"}) == (
        f"{WHERE}: the variable {VAR} is empty; put the key's PEM in it (or use "
        "private_key_file)")


def test_garbage_in_the_variable(tmp_path: Path) -> None:
    garbage = "c2VjcmV0LXZhbHVlLXRoYXQtaXMtbm90LWEta2V5"
    assert refused(entry(), tmp_path, {VAR: garbage}) == (
        f"{WHERE}: the variable {VAR} holds no PEM (no -----BEGIN line); put the key's whole "
        "PEM there, its BEGIN and END lines included")


def test_a_truncated_pem(tmp_path: Path, rsa3072: rsa.RSAPrivateKey) -> None:
    cut = "\n".join(pem(rsa3072).splitlines()[:10])
    assert refused(entry(), tmp_path, {VAR: cut}, pem(rsa3072)) == (
        f"{WHERE}: the variable {VAR} holds a PEM that is not a readable private key; check "
        "it was copied whole, its BEGIN and END lines included")


def test_a_public_key_where_the_private_key_belongs(tmp_path: Path,
                                                    rsa3072: rsa.RSAPrivateKey) -> None:
    assert refused(entry(), tmp_path, {VAR: public(rsa3072).decode()}) == (
        f"{WHERE}: the variable {VAR} holds a public key, not the private key; put the "
        "private key's PEM there (the public one is public_key)")


def test_an_encrypted_key(tmp_path: Path, p256: ec.EllipticCurvePrivateKey) -> None:
    encrypted = p256.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.BestAvailableEncryption(b"hunter2")).decode()
    assert refused(entry("ecdsa256"), tmp_path, {VAR: encrypted}) == (
        f"{WHERE}: the variable {VAR} holds an encrypted private key; esp32tasks reads "
        "unencrypted PEM only: decrypt it (openssl pkey -in encrypted.pem -out key.pem) and "
        "let the secret store protect it")


def test_a_file_that_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "run" / "x.pem"
    assert refused(entry(private_key_file=path), tmp_path, {}) == (
        f"{WHERE}: the file {path} does not exist; put the key's PEM there (or use "
        "private_key_env)")


def test_a_directory_where_the_file_belongs(tmp_path: Path) -> None:
    assert refused(entry(private_key_file=tmp_path), tmp_path, {}) == (
        f"{WHERE}: the file {tmp_path} is a directory; point private_key_file at the key's "
        "PEM file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_that_cannot_be_read(tmp_path: Path, p256: ec.EllipticCurvePrivateKey) -> None:
    path = tmp_path / "x.pem"
    path.write_text(pem(p256))
    path.chmod(0)
    assert refused(entry("ecdsa256", private_key_file=path), tmp_path, {}, pem(p256)) == (
        f"{WHERE}: the file {path} cannot be read (Permission denied); make it readable by "
        "the user who runs doit (mode 0400 or 0600)")


def test_rsa_2048_for_rsa3072(tmp_path: Path, rsa2048: rsa.RSAPrivateKey) -> None:
    assert refused(entry(), tmp_path, {VAR: pem(rsa2048)}) == (
        f"{WHERE}: the variable {VAR} holds an RSA 2048-bit key, not rsa3072 (an RSA 3072-bit "
        "key); put the rsa3072 key there")


def test_p384_for_ecdsa256(tmp_path: Path, p384: ec.EllipticCurvePrivateKey) -> None:
    assert refused(entry("ecdsa256"), tmp_path, {VAR: pem(p384)}) == (
        f"{WHERE}: the variable {VAR} holds an EC P-384 key, not ecdsa256 (an EC P-256 key); "
        "put the ecdsa256 key there, or make this key's scheme ecdsa384")


def test_rsa_for_sbv1(tmp_path: Path, rsa3072: rsa.RSAPrivateKey) -> None:
    assert refused(entry("sbv1"), tmp_path, {VAR: pem(rsa3072)}) == (
        f"{WHERE}: the variable {VAR} holds an RSA 3072-bit key, not sbv1 (an EC P-256 key); "
        "put the sbv1 key there, or make this key's scheme rsa3072")


def test_p256_for_rsa3072_names_both_schemes_it_fits(tmp_path: Path,
                                                     p256: ec.EllipticCurvePrivateKey) -> None:
    assert refused(entry(), tmp_path, {VAR: pem(p256)}) == (
        f"{WHERE}: the variable {VAR} holds an EC P-256 key, not rsa3072 (an RSA 3072-bit "
        "key); put the rsa3072 key there, or make this key's scheme ecdsa256 or sbv1")


def test_a_key_secure_boot_does_not_use(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    assert refused(entry(), tmp_path, {VAR: pem(key)}) == (
        f"{WHERE}: the variable {VAR} holds an Ed25519 key, not rsa3072 (an RSA 3072-bit "
        "key); put the rsa3072 key there")


def test_a_public_key_of_another_key(tmp_path: Path, p256: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "keys").mkdir()
    (tmp_path / PUB).write_bytes(public(other))
    assert refused(entry("ecdsa256", private_key_env=VAR, public_key=PUB), tmp_path,
                   {VAR: pem(p256)}, public(other)) == (
        f"{WHERE}: public_key {PUB} is not the public key of the private key in the variable "
        f"{VAR}; commit that key's public key (openssl pkey -pubout) or put the matching "
        f"private key in the variable {VAR}")


def test_a_public_key_file_that_does_not_exist(tmp_path: Path,
                                               rsa3072: rsa.RSAPrivateKey) -> None:
    assert refused(entry(sign_command=("my-signer",), public_key=PUB), tmp_path, {}) == (
        f"{WHERE}: public_key {PUB} does not exist; commit the key's public PEM there "
        "(openssl pkey -pubout -in <private.pem>)")


def test_a_private_key_committed_as_the_public_key(tmp_path: Path,
                                                   rsa3072: rsa.RSAPrivateKey) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / PUB).write_text(pem(rsa3072))
    assert refused(entry(sign_command=("my-signer",), public_key=PUB), tmp_path, {},
                   pem(rsa3072)) == (
        f"{WHERE}: public_key {PUB} holds a PRIVATE key: remove it from the repository and "
        "its history, replace the key, and commit only its public key (openssl pkey -pubout)")


def test_a_public_key_file_that_is_no_pem(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / PUB).write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    assert refused(entry(sign_command=("my-signer",), public_key=PUB), tmp_path, {}) == (
        f"{WHERE}: public_key {PUB} is not a PEM public key (-----BEGIN PUBLIC KEY-----); "
        "commit the output of openssl pkey -pubout -in <private.pem> there")


def test_a_sign_command_whose_public_key_is_of_another_scheme(
        tmp_path: Path, rsa2048: rsa.RSAPrivateKey) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / PUB).write_bytes(public(rsa2048))
    assert refused(entry(sign_command=("my-signer",), public_key=PUB), tmp_path, {}) == (
        f"{WHERE}: public_key {PUB} holds an RSA 2048-bit key, not rsa3072 (an RSA 3072-bit "
        "key); put the rsa3072 key there")


def test_a_sign_command_without_a_public_key(tmp_path: Path) -> None:
    assert refused(entry(sign_command=("my-signer",)), tmp_path, {}) == (
        f"{WHERE}: has a sign_command but no public_key; commit the signer's public key (PEM) "
        "and set public_key to its path")
