"""Signing images: every scheme's result verifies with espsecure's own CLI (and a flipped
byte does not), the same input signs to the same bytes, and a sign_command's signature is
checked before use. Keys are made here; openssl plays the external signer."""

from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from esp32tasks.config import Key
from esp32tasks.errors import SignError
from esp32tasks.secureboot import SCHEMES, Scheme, secure_boot_version
from esp32tasks.sign import image
from esp32tasks.sign.image import SECTOR, digest, padded, sign, signature, verify
from esp32tasks.sign.keys import LoadedKey, load
from tests.support.esp32_image import esp32_app_image

WHERE = "key 'prod' (keys[0] in targets.toml)"
PUB = PurePosixPath("keys/prod.pub.pem")
#: Not sector-aligned, so Secure Boot v2 pads it.
DATA = bytes(range(256)) * 40 + b"tail"
V2 = ("rsa3072", "ecdsa256", "ecdsa384", "ecdsa192")
RSA_PSS_OPTIONS = "-pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32"


def new_key(scheme: str) -> PrivateKeyTypes:
    if scheme == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    curve = {"ecdsa192": ec.SECP192R1(), "ecdsa384": ec.SECP384R1()}.get(scheme, ec.SECP256R1())
    return ec.generate_private_key(curve)


@pytest.fixture(scope="module")
def private_keys() -> dict[str, PrivateKeyTypes]:
    """One key per scheme, made once for the module (RSA-3072 takes a while)."""
    return {scheme: new_key(scheme) for scheme in SCHEMES}


def pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def loaded(private_keys: dict[str, PrivateKeyTypes], scheme: str) -> LoadedKey:
    key = Key(name="prod", scheme=scheme,  # type: ignore[arg-type]  # a Scheme, from SCHEMES
              where="keys[0] in targets.toml", private_key_env="ESP32_KEY_PROD")
    return load(key, Path("/nonexistent"), {"ESP32_KEY_PROD": pem(private_keys[scheme]).decode()})


@pytest.fixture(scope="module")
def esp32_app(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return esp32_app_image(tmp_path_factory.mktemp("esp32"))


def data_for(scheme: str, esp32_app: bytes) -> bytes:
    """Secure Boot v1 exists on esp32 only: it signs a real esp32 app."""
    return esp32_app if scheme == "sbv1" else DATA


def espsecure_verify(tmp: Path, public_pem: bytes, signed: bytes, scheme: str) -> int:
    """The exit code of ``espsecure verify-signature``, the real CLI."""
    (tmp / "pub.pem").write_bytes(public_pem)
    (tmp / "signed.bin").write_bytes(signed)
    run = subprocess.run([sys.executable, "-m", "espsecure", "verify-signature", "--version",
                          str(secure_boot_version(scheme)), "--keyfile", str(tmp / "pub.pem"),
                          str(tmp / "signed.bin")], capture_output=True, check=False)
    return run.returncode


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


# --- padding and digests ---------------------------------------------------------------

def test_v2_pads_to_a_whole_sector_with_ff() -> None:
    assert padded(b"\x01" * 10, "rsa3072") == b"\x01" * 10 + b"\xff" * (SECTOR - 10)
    assert padded(DATA, "ecdsa256") == DATA + b"\xff" * (3 * SECTOR - len(DATA))
    assert padded(b"\x02" * SECTOR, "ecdsa384") == b"\x02" * SECTOR


def test_v1_signs_the_data_as_it_is() -> None:
    assert padded(DATA, "sbv1") == DATA
    assert digest(DATA, "sbv1") == hashlib.sha256(DATA).digest()


@pytest.mark.parametrize("scheme", V2)
def test_the_digest_covers_the_padded_data(scheme: str) -> None:
    hashed = hashlib.sha384 if scheme == "ecdsa384" else hashlib.sha256
    assert digest(DATA, scheme) == hashed(padded(DATA, scheme)).digest()


# --- every scheme verifies with espsecure's CLI ------------------------------------------

@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_signed_image_verifies_with_espsecure_and_a_flipped_byte_does_not(
        tmp_path: Path, private_keys: dict[str, PrivateKeyTypes], esp32_app: bytes,
        scheme: str, capfd: pytest.CaptureFixture[str]) -> None:
    key = loaded(private_keys, scheme)
    data = data_for(scheme, esp32_app)
    signed = sign(key, data, {}, target="esp32")
    assert capfd.readouterr() == ("", ""), "espsecure's printing is silenced"
    if scheme == "sbv1":
        assert signed[:len(data)] == data
        assert signed[len(data):len(data) + 4] == b"\0\0\0\0"
        assert len(signed) == len(data) + 68
    else:
        assert signed[:len(padded(data, scheme))] == padded(data, scheme)
        assert len(signed) == len(padded(data, scheme)) + SECTOR
    assert espsecure_verify(tmp_path, key.public_pem, signed, scheme) == 0
    verify(key.public_pem, scheme, signed)

    bad = flipped(signed, 100)  # inside the signed data
    assert espsecure_verify(tmp_path, key.public_pem, bad, scheme) != 0
    with pytest.raises(SignError, match=rf"^the signed image does not verify with the "
                                        rf"{scheme} key sha256:[0-9a-f]{{64}} \("):
        verify(key.public_pem, scheme, bad)


def test_an_esp32_app_signed_for_secure_boot_v2(
        tmp_path: Path, private_keys: dict[str, PrivateKeyTypes], esp32_app: bytes) -> None:
    """esp32 from ECO3 verifies rsa3072 too."""
    key = loaded(private_keys, "rsa3072")
    signed = sign(key, esp32_app, {}, target="esp32")
    assert espsecure_verify(tmp_path, key.public_pem, signed, "rsa3072") == 0


def test_the_esp32_image_is_one_esptool_reads(tmp_path: Path) -> None:
    esp32_app_image(tmp_path, payload=b"payload")
    run = subprocess.run([sys.executable, "-m", "esptool", "image-info",
                          str(tmp_path / "app.bin")], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Detected image type: ESP32\n" in run.stdout
    assert re.search(r"^Checksum: 0x[0-9a-f]{2} \(valid\)$", run.stdout, re.MULTILINE)
    assert "Project name: hello" in run.stdout


@pytest.mark.parametrize("scheme", SCHEMES)
def test_signing_is_deterministic(private_keys: dict[str, PrivateKeyTypes], esp32_app: bytes,
                                  scheme: str) -> None:
    key = loaded(private_keys, scheme)
    data = data_for(scheme, esp32_app)
    first = sign(key, data, {}, target="esp32")
    assert sign(key, data, {}, target="esp32") == first
    assert sign(loaded(private_keys, scheme), data, {}, target="esp32") == first, \
        "a key read again (another clone) signs the same"
    other = sign(key, data + b"\x00", {}, target="esp32")
    signature_part = slice(-SECTOR, None) if scheme != "sbv1" else slice(-64, None)
    assert other[signature_part] != first[signature_part]


def test_the_rsa_signature_is_pss_with_a_32_byte_salt(
        private_keys: dict[str, PrivateKeyTypes]) -> None:
    key = loaded(private_keys, "rsa3072")
    hashed = digest(DATA, "rsa3072")
    made = signature(key, hashed, {}, target="esp32")
    assert len(made) == 384
    public_key = private_keys["rsa3072"].public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    public_key.verify(made, hashed, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                salt_length=32),
                      utils.Prehashed(hashes.SHA256()))
    # and OpenSSL's own PSS, with the salt length recovered from the signature, agrees
    public_key.verify(made, hashed, padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                                salt_length=padding.PSS.AUTO),
                      utils.Prehashed(hashes.SHA256()))


@pytest.mark.parametrize("scheme", ["rsa3072", "ecdsa256"])
def test_the_image_is_espsecures_own_but_for_the_signature(
        tmp_path: Path, private_keys: dict[str, PrivateKeyTypes], scheme: str) -> None:
    """espsecure signing with the private key itself lays out the same bytes: only the
    signature (random in its RSA-PSS salt and its ECDSA nonce) and the CRC differ."""
    (tmp_path / "key.pem").write_bytes(pem(private_keys[scheme]))
    (tmp_path / "data.bin").write_bytes(DATA)
    subprocess.run([sys.executable, "-m", "espsecure", "sign-data", "--version", "2",
                    "--keyfile", str(tmp_path / "key.pem"), "--output",
                    str(tmp_path / "theirs.bin"), str(tmp_path / "data.bin")],
                   check=True, capture_output=True)
    theirs = (tmp_path / "theirs.bin").read_bytes()
    ours = sign(loaded(private_keys, scheme), DATA, {}, target="esp32c3")
    assert len(ours) == len(theirs)
    # RSA: magic..rinv/m, then the signature; ECDSA P-256: magic..the public key, then r||s
    fixed = 36 + 384 + 4 + 384 + 4 if scheme == "rsa3072" else 36 + 1 + 64
    start = len(ours) - SECTOR
    assert ours[:start + fixed] == theirs[:start + fixed]
    assert ours[start + 1196 + 4:] == theirs[start + 1196 + 4:], "the pad and the 0xFF fill"


def test_a_corrupt_rsa_key_never_yields_a_signature(
        private_keys: dict[str, PrivateKeyTypes]) -> None:
    """Loaded without cryptography's consistency checks, a key whose CRT exponent is wrong
    makes a bad signature: the verification before returning stops it."""
    good = private_keys["rsa3072"]
    assert isinstance(good, rsa.RSAPrivateKey)
    n = good.private_numbers()
    broken = rsa.RSAPrivateNumbers(n.p, n.q, n.d, n.dmp1 ^ 2, n.dmq1, n.iqmp,
                                   n.public_numbers).private_key(
        unsafe_skip_rsa_key_validation=True)
    key = loaded(private_keys, "rsa3072")
    corrupt = LoadedKey(key=key.key, public_pem=key.public_pem, fingerprint=key.fingerprint,
                        private=broken)
    with pytest.raises(SignError) as info:
        sign(corrupt, DATA, {}, target="esp32c3")
    assert str(info.value) == (
        f"{WHERE}: the private key in the variable ESP32_KEY_PROD made a signature that does "
        "not verify with its own public key; the key is corrupt: replace it")


def test_nothing_is_left_in_the_temp_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        private_keys: dict[str, PrivateKeyTypes]) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    key = loaded(private_keys, "ecdsa256")
    verify(key.public_pem, "ecdsa256", sign(key, DATA, {}, target="esp32c6"))
    assert list(tmp_path.iterdir()) == []


def test_verify_refuses_another_key_a_wrong_scheme_and_garbage(
        private_keys: dict[str, PrivateKeyTypes], esp32_app: bytes) -> None:
    key = loaded(private_keys, "ecdsa256")
    signed = sign(key, DATA, {}, target="esp32c6")
    other = public(new_key("ecdsa256"))
    with pytest.raises(SignError, match=r"^the signed image does not verify with the "
                                        r"ecdsa256 key sha256:"):
        verify(other, "ecdsa256", signed)
    with pytest.raises(SignError, match=r"^the ecdsa384 key sha256:[0-9a-f]+ holds an EC "
                                        r"P-256 key, not ecdsa384"):
        verify(key.public_pem, "ecdsa384", signed)
    for garbage, scheme in ((b"\xff" * SECTOR * 2, "ecdsa256"), (b"x" * 10, "sbv1"),
                            (esp32_app, "sbv1"), (b"x" * 100, "ecdsa256")):
        pem_for = key.public_pem if scheme != "sbv1" else public(private_keys["sbv1"])
        with pytest.raises(SignError, match=r"^the signed image does not verify"):
            verify(pem_for, scheme, garbage)


# --- sign_command --------------------------------------------------------------------

SIGNER = """#!/bin/sh
set -e
cat > "$SIGN_DIR/digest.bin"
env | grep '^ESP32TASKS_SIGN_' | sort > "$SIGN_DIR/env.txt"
exec openssl pkeyutl -sign -inkey "$KEYFILE" -in "$SIGN_DIR/digest.bin" $OPENSSL_OPTIONS
"""


def script(tmp_path: Path, text: str, name: str = "my-signer") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def external(tmp_path: Path, scheme: str, private: PrivateKeyTypes,
             command: tuple[str, ...]) -> LoadedKey:
    """A key whose private half only the sign_command knows."""
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / PUB).write_bytes(public(private))
    key = Key(name="prod", scheme=scheme,  # type: ignore[arg-type]  # a Scheme
              where="keys[0] in targets.toml", sign_command=command, public_key=PUB)
    return load(key, tmp_path, {})


def signer_env(tmp_path: Path, scheme: str, private: PrivateKeyTypes) -> dict[str, str]:
    (tmp_path / "signer").mkdir(exist_ok=True)
    (tmp_path / "signer" / "key.pem").write_bytes(pem(private))
    return {"PATH": os.environ["PATH"], "SIGN_DIR": str(tmp_path / "signer"),
            "KEYFILE": str(tmp_path / "signer" / "key.pem"),
            "OPENSSL_OPTIONS": RSA_PSS_OPTIONS if scheme == "rsa3072" else ""}


@pytest.mark.parametrize("scheme", ["rsa3072", "ecdsa256", "ecdsa384", "sbv1"])
def test_a_sign_command_signs_with_openssl(
        tmp_path: Path, private_keys: dict[str, PrivateKeyTypes], esp32_app: bytes,
        scheme: Scheme) -> None:
    private = private_keys[scheme]
    key = external(tmp_path, scheme, private, (str(script(tmp_path, SIGNER)),))
    assert key.private is None
    data = data_for(scheme, esp32_app)
    signed = sign(key, data, signer_env(tmp_path, scheme, private), target="esp32c6")
    assert espsecure_verify(tmp_path, key.public_pem, signed, scheme) == 0
    assert (tmp_path / "signer" / "digest.bin").read_bytes() == digest(data, scheme)
    assert (tmp_path / "signer" / "env.txt").read_text().splitlines() == [
        f"ESP32TASKS_SIGN_DIGEST={'sha384' if scheme == 'ecdsa384' else 'sha256'}",
        "ESP32TASKS_SIGN_KEY=prod",
        f"ESP32TASKS_SIGN_SCHEME={scheme}",
        "ESP32TASKS_SIGN_TARGET=esp32c6",
    ]


def test_a_sign_command_may_print_raw_r_s_for_sbv1(
        tmp_path: Path, private_keys: dict[str, PrivateKeyTypes], esp32_app: bytes) -> None:
    private = private_keys["sbv1"]
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    r, s = utils.decode_dss_signature(private.sign(
        digest(esp32_app, "sbv1"), ec.ECDSA(utils.Prehashed(hashes.SHA256()))))
    (tmp_path / "rs.bin").write_bytes(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    printer = script(tmp_path, f"#!/bin/sh\ncat >/dev/null\ncat {tmp_path / 'rs.bin'}\n")
    key = external(tmp_path, "sbv1", private, (str(printer),))
    signed = sign(key, esp32_app, {"PATH": os.environ["PATH"]}, target="esp32")
    assert signed[-64:] == (tmp_path / "rs.bin").read_bytes()
    assert espsecure_verify(tmp_path, key.public_pem, signed, "sbv1") == 0


def test_a_failing_sign_command_shows_the_end_of_its_stderr(
        tmp_path: Path, private_keys: dict[str, PrivateKeyTypes]) -> None:
    failing = script(tmp_path, "#!/bin/sh\nfor i in 1 2 3 4 5 6; do echo \"line $i\" >&2; done\n"
                               f"echo {'x' * 300} >&2\nexit 3\n")
    key = external(tmp_path, "rsa3072", private_keys["rsa3072"], (str(failing), "--key", "k"))
    with pytest.raises(SignError) as info:
        sign(key, DATA, {"PATH": os.environ["PATH"]}, target="esp32c3")
    assert str(info.value) == (
        f"{WHERE}: sign_command {failing} exited 3; its stderr ended: line 3 | line 4 | "
        f"line 5 | line 6 | {'x' * 200}")


def test_a_silent_failure(tmp_path: Path, private_keys: dict[str, PrivateKeyTypes]) -> None:
    key = external(tmp_path, "ecdsa256", private_keys["ecdsa256"], ("false",))
    with pytest.raises(SignError) as info:
        sign(key, DATA, {"PATH": os.environ["PATH"]}, target="esp32c3")
    assert str(info.value) == f"{WHERE}: sign_command false exited 1; it wrote nothing to stderr"


def test_a_sign_command_that_does_not_start(tmp_path: Path,
                                            private_keys: dict[str, PrivateKeyTypes]) -> None:
    key = external(tmp_path, "rsa3072", private_keys["rsa3072"], ("no-such-signer-here",))
    with pytest.raises(SignError) as info:
        sign(key, DATA, {"PATH": str(tmp_path)}, target="esp32c3")
    assert str(info.value) == (
        f"{WHERE}: sign_command no-such-signer-here did not start (No such file or "
        "directory); install it or fix sign_command's program")


@pytest.mark.parametrize(("scheme", "expected"), [
    ("rsa3072", "a raw 384-byte RSA-PSS signature (SHA-256, MGF1-SHA-256, salt length 32)"),
    ("ecdsa256", "a DER ECDSA signature"),
    ("sbv1", "a DER or raw 64-byte r||s ECDSA signature"),
])
def test_garbage_from_a_sign_command_is_refused(
        tmp_path: Path, private_keys: dict[str, PrivateKeyTypes], scheme: str,
        expected: str) -> None:
    garbage = script(tmp_path, "#!/bin/sh\ncat >/dev/null\nprintf 'not a signature'\n")
    key = external(tmp_path, scheme, private_keys[scheme], (str(garbage),))
    with pytest.raises(SignError) as info:
        sign(key, DATA, {"PATH": os.environ["PATH"]}, target="esp32c3")
    assert str(info.value) == (
        f"{WHERE}: sign_command {garbage} returned a signature that does not verify with "
        f"{PUB} (got 15 bytes; expected {expected} for {scheme})")


def test_a_signature_by_another_key_is_refused(
        tmp_path: Path, private_keys: dict[str, PrivateKeyTypes]) -> None:
    key = external(tmp_path, "ecdsa256", private_keys["ecdsa256"],
                   (str(script(tmp_path, SIGNER)),))
    env = signer_env(tmp_path, "ecdsa256", new_key("ecdsa256"))
    with pytest.raises(SignError, match=r"returned a signature that does not verify with "
                                        r"keys/prod\.pub\.pem \(got \d+ bytes; expected a DER"):
        sign(key, DATA, env, target="esp32c3")


def test_a_sign_command_that_hangs_is_stopped_with_its_children(
        tmp_path: Path, private_keys: dict[str, PrivateKeyTypes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image, "SIGN_TIMEOUT", 1)
    hanging = script(tmp_path, f"#!/bin/sh\nsleep 30 &\necho $! > {tmp_path / 'child'}\n"
                               "wait\n")
    key = external(tmp_path, "ecdsa256", private_keys["ecdsa256"], (str(hanging),))
    began = time.monotonic()
    with pytest.raises(SignError) as info:
        sign(key, DATA, {"PATH": os.environ["PATH"]}, target="esp32c3")
    assert time.monotonic() - began < 10
    assert str(info.value) == (
        f"{WHERE}: sign_command {hanging} timed out after 1 s; check that the signer (HSM, "
        "KMS) answers, then run doit again")
    child = int((tmp_path / "child").read_text())
    for _ in range(50):  # the group's SIGKILL lands at once; reaping by init may lag
        if not Path(f"/proc/{child}").exists() or \
                Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail("the sign_command's child outlived it")


def test_the_signature_sector_names_the_digest(private_keys: dict[str, PrivateKeyTypes]) -> None:
    """The block holds the digest of the padded data: what the ROM compares first."""
    for scheme in V2:
        signed = sign(loaded(private_keys, scheme), DATA, {}, target="esp32c5")
        block = signed[-SECTOR:]
        magic, version = struct.unpack_from("<BB", block)
        assert (magic, version) == (0xE7, 2 if scheme == "rsa3072" else 3)
        size = 48 if scheme == "ecdsa384" else 32
        assert block[4:4 + size] == digest(DATA, scheme)
