"""Sign an app or bootloader image for Secure Boot, deterministically, through espsecure.

We compute the digest and the signature ourselves (locally, or with the key's
``sign_command``), then hand espsecure only public data: its pre-calculated-signature path
(``espsecure sign-data --pub-key ... --signature ...``) verifies the signature and lays
out the signature block exactly as the ROM reads it, so the format stays espsecure's.
The same image and key give the same signed bytes in every clone: ECDSA signs with
RFC 6979 nonces and RSA-PSS with a salt derived from the key and the digest.

Facts from espsecure (esptool v5), by function:

* ``sign_data``: ``version`` is compared with the strings ``"1"`` and ``"2"``.
* ``sign_secure_boot_v2``: pre-calculated signatures need 4096-byte aligned data (it pads
  only when it signs itself); the output is the data and one 4096-byte signature sector.
* ``generate_signature_block_using_pre_calculated_signature``: the digest is SHA-256 of
  the data (SHA-384 for a P-384 key); an RSA signature is the raw big-endian RSA-PSS
  signature (MGF1-SHA256, salt length 32, over the prehashed digest); an ECDSA signature
  is DER (it calls ``decode_dss_signature``).
* ``sign_secure_boot_v1``: the pre-calculated signature is raw ``r || s`` (32 bytes
  each, big-endian) and ECDSA-P256 over SHA-256 of the data itself, unpadded; the output
  is the data, a 4-byte zero version word and the 64-byte signature.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import shutil
import signal
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from esp32tasks import secureboot
from esp32tasks.errors import SignError
from esp32tasks.sign.keys import LoadedKey, fingerprint, scheme_problem

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

__all__ = ["SECTOR", "SIGN_TIMEOUT", "digest", "padded", "sign", "signature", "verify"]

SECTOR: Final = 4096
#: How long a ``sign_command`` may take (an HSM or a cloud KMS answers well within it).
SIGN_TIMEOUT: Final = 120
#: RSA-PSS salt length: espsecure's (``generate_signature_block_using_pre_calculated_
#: signature``: ``salt_length=32``), the ROM's.
_SALT_LENGTH: Final = 32
_SALT_LABEL: Final = b"esp32tasks rsa-pss salt"
_STDERR_LINES: Final = 5
_STDERR_WIDTH: Final = 200
#: What a ``sign_command`` must print, per scheme, for its error message.
_ENCODING: Final = {
    "rsa3072": "a raw 384-byte RSA-PSS signature (SHA-256, MGF1-SHA-256, salt length 32)",
    "ecdsa192": "a DER ECDSA signature",
    "ecdsa256": "a DER ECDSA signature",
    "ecdsa384": "a DER ECDSA signature over the SHA-384 digest",
    "sbv1": "a DER or raw 64-byte r||s ECDSA signature",
}


def padded(data: bytes, scheme: str) -> bytes:
    """What the signature covers: for Secure Boot v2 the data padded with 0xFF to a whole
    4096-byte sector (the signature sector follows it: ``sign_secure_boot_v2``); for v1
    the data itself."""
    if secureboot.secure_boot_version(scheme) == 1:
        return data
    return data + b"\xff" * (-len(data) % SECTOR)


def digest(data: bytes, scheme: str) -> bytes:
    """The hash that is signed: SHA-256 of :func:`padded` data, SHA-384 for ``ecdsa384``
    (``generate_signature_block_using_pre_calculated_signature``)."""
    body = padded(data, scheme)
    return (hashlib.sha384(body) if scheme == "ecdsa384" else hashlib.sha256(body)).digest()


def signature(loaded: LoadedKey, digest: bytes, environ: Mapping[str, str], *,
              target: str) -> bytes:
    """The signature of ``digest`` in the encoding espsecure's ``--signature`` takes: RSA
    raw 384 bytes, ECDSA (v2) DER, Secure Boot v1 raw ``r || s``.

    With a local key ECDSA is RFC 6979 (deterministic) and RSA-PSS is deterministic too
    (:func:`_rsa_pss`); with a ``sign_command`` the signer decides. Every signature is
    verified with the public key before it is returned: a bug or a wrong signer can
    never publish one the chip would refuse.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils

    key = loaded.key
    if len(digest) != _digest_size(key.scheme):
        raise ValueError(f"a {key.scheme} digest is {_digest_size(key.scheme)} bytes, "
                         f"not {len(digest)}")
    private = loaded.private
    if private is None:
        return _external(loaded, digest, environ, target=target)
    if isinstance(private, rsa.RSAPrivateKey):
        made = _rsa_pss(private, digest)
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        algorithm = ec.ECDSA(utils.Prehashed(_hash(key.scheme)), deterministic_signing=True)
        made = private.sign(digest, algorithm)
        if key.scheme == "sbv1":  # sign_secure_boot_v1 reads raw r || s
            made = _raw_rs(made)
    else:
        raise TypeError(f"not a private key cryptography signs with: {type(private).__name__}")
    if not _verifies(_public(loaded), key.scheme, digest, made):
        raise SignError(f"key '{key.name}' ({key.where}): the private key in "
                        f"{key.private_key_place} made a signature that does not verify "
                        "with its own public key; the key is corrupt: replace it")
    return made


def sign(loaded: LoadedKey, data: bytes, environ: Mapping[str, str], *, target: str) -> bytes:
    """``data`` signed with ``loaded``: for Secure Boot v2 the padded data and a
    4096-byte signature sector, for v1 the data, a zero word and the 64-byte signature.

    espsecure builds the image from public data in a private temp directory, outside
    any repository, removed afterwards; the result is verified with espsecure before it
    is returned.
    """
    key = loaded.key
    if not data:
        raise SignError(f"key '{key.name}' ({key.where}): nothing to sign for {target} "
                        "(the image is empty); rebuild it")
    body = padded(data, key.scheme)
    made = signature(loaded, digest(data, key.scheme), environ, target=target)
    version = str(secureboot.secure_boot_version(key.scheme))
    with _workdir() as work:
        files = {"pub.pem": loaded.public_pem, "signature.bin": made, "image.bin": body}
        for name, content in files.items():
            (work / name).write_bytes(content)
        out = work / "signed.bin"
        with (work / "pub.pem").open("rb") as pub, \
                (work / "signature.bin").open("rb") as sig, \
                (work / "image.bin").open("rb") as image:
            _espsecure(loaded, "sign_data", version=version, keyfile=[], output=str(out),
                       append_signatures=False, hsm=False, hsm_config=None,
                       pub_key=[pub], signature=[sig], datafile=image)
        signed = out.read_bytes()
    verify(loaded.public_pem, key.scheme, signed)
    return signed


def verify(public_pem: bytes, scheme: str, signed: bytes) -> None:
    """Raise :class:`SignError` unless espsecure's ``verify_signature`` accepts ``signed``
    with ``public_pem`` as Secure Boot ``scheme`` (v1 for ``sbv1``, else v2)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    name = fingerprint(public_pem)
    problem = scheme_problem(serialization.load_pem_public_key(public_pem), scheme)
    if problem is not None:
        raise SignError(f"the {scheme} key {name} {problem}")
    import esptool

    espsecure = _module()
    version = str(secureboot.secure_boot_version(scheme))
    with _workdir() as work:
        (work / "pub.pem").write_bytes(public_pem)
        (work / "signed.bin").write_bytes(signed)
        with (work / "pub.pem").open("rb") as pub, (work / "signed.bin").open("rb") as image, \
                _quiet():
            try:
                espsecure.verify_signature(version, False, None, pub, image)
            # struct.error, AssertionError: espsecure's parse of a file that holds no
            # signature (too short, or a block it does not know)
            except (esptool.FatalError, InvalidSignature, ValueError, AssertionError,
                    struct.error) as exc:
                reason = _first_line(str(exc)) or type(exc).__name__
                raise SignError(f"the signed image does not verify with the {scheme} key "
                                f"{name} ({reason}); sign it again") from None


def _rsa_pss(private: rsa.RSAPrivateKey, digest: bytes) -> bytes:
    """RSA-PSS (RFC 8017 §8.1.1: EMSA-PSS-ENCODE §9.1.1 with MGF1-SHA-256, then RSASP1)
    with a deterministic salt: espsecure's own path draws a random salt, so two clones
    would publish different bytes for the same image.

    The salt is HMAC-SHA-256 keyed with SHA-256 of a label and the private exponent,
    over the digest. PSS recovers the salt from any signature by design, so the salt is
    no secret; an HMAC output reveals nothing about its key, so the salt reveals nothing
    about ``d``; and PSS's security proof needs no random salt (a fixed one gives the
    same bound as full-domain hash). Python's big-integer ``pow`` is not constant-time:
    a signing host is trusted with the key anyway, and runs nothing an attacker times.
    The caller verifies the result with cryptography before it is used.
    """
    numbers = private.private_numbers()
    n = numbers.public_numbers.n
    mod_bits = n.bit_length()
    d = numbers.d.to_bytes((numbers.d.bit_length() + 7) // 8, "big")
    mac_key = hashlib.sha256(_SALT_LABEL + d).digest()
    salt = hmac.new(mac_key, digest, hashlib.sha256).digest()[:_SALT_LENGTH]
    em = _emsa_pss_encode(digest, salt, mod_bits - 1)
    m = int.from_bytes(em, "big")
    p, q = numbers.p, numbers.q
    m1, m2 = pow(m, numbers.dmp1, p), pow(m, numbers.dmq1, q)
    s = m2 + (numbers.iqmp * (m1 - m2) % p) * q  # CRT (RFC 8017 §5.1.2, 2.b)
    return s.to_bytes((mod_bits + 7) // 8, "big")


def _emsa_pss_encode(m_hash: bytes, salt: bytes, em_bits: int) -> bytes:
    """EMSA-PSS-ENCODE (RFC 8017 §9.1.1) of a SHA-256 ``m_hash``."""
    h_len = len(m_hash)
    em_len = (em_bits + 7) // 8
    if em_len < h_len + len(salt) + 2:
        raise ValueError("the RSA modulus is too short for PSS with this salt")
    h = hashlib.sha256(b"\x00" * 8 + m_hash + salt).digest()
    db = b"\x00" * (em_len - len(salt) - h_len - 2) + b"\x01" + salt
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1(h, len(db)), strict=True))
    masked[0] &= 0xFF >> (8 * em_len - em_bits)
    return bytes(masked) + h + b"\xbc"


def _mgf1(seed: bytes, length: int) -> bytes:
    """MGF1 with SHA-256 (RFC 8017 §B.2.1)."""
    out = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest()
                   for i in range((length + 31) // 32))
    return out[:length]


def _external(loaded: LoadedKey, digest: bytes, environ: Mapping[str, str], *,
              target: str) -> bytes:
    """Run the key's ``sign_command`` with ``digest`` on stdin; its stdout, checked, is
    the signature (converted to what espsecure takes)."""
    key = loaded.key
    program = key.sign_command[0] if key.sign_command else "(none)"
    where = f"key '{key.name}' ({key.where}): sign_command {program}"
    env = {**environ, "ESP32TASKS_SIGN_KEY": key.name, "ESP32TASKS_SIGN_SCHEME": key.scheme,
           "ESP32TASKS_SIGN_DIGEST": "sha384" if key.scheme == "ecdsa384" else "sha256",
           "ESP32TASKS_SIGN_TARGET": target}
    try:
        # its own session: on a timeout the whole group goes (a shell script's children too)
        child = subprocess.Popen(list(key.sign_command), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                 start_new_session=True)
    except OSError as exc:
        raise SignError(f"{where} did not start ({exc.strerror or type(exc).__name__}); "
                        "install it or fix sign_command's program") from None
    try:
        out, err = child.communicate(digest, timeout=SIGN_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise SignError(f"{where} timed out after {SIGN_TIMEOUT} s; check that the signer "
                        "(HSM, KMS) answers, then run doit again") from None
    if child.returncode != 0:
        how = (f"was killed by signal {-child.returncode}" if child.returncode < 0
               else f"exited {child.returncode}")
        raise SignError(f"{where} {how}; {_stderr_tail(err)}")
    public = _public(loaded)
    for candidate in _candidates(key.scheme, out):
        if _verifies(public, key.scheme, digest, candidate):
            return candidate
    shown = key.public_key if key.public_key is not None else loaded.fingerprint
    raise SignError(f"{where} returned a signature that does not verify with {shown} "
                    f"(got {len(out)} bytes; expected {_ENCODING[key.scheme]} for "
                    f"{key.scheme})")


def _candidates(scheme: str, out: bytes) -> list[bytes]:
    """What the signer's output may be, in espsecure's encoding: RSA as is; ECDSA DER;
    for v1 DER converted to raw ``r || s``, or raw ``r || s`` itself."""
    if scheme != "sbv1":
        return [out]
    found = []
    with contextlib.suppress(ValueError):
        found.append(_raw_rs(out))
    if len(out) == 64:
        found.append(out)
    return found


def _raw_rs(der: bytes) -> bytes:
    """A DER ECDSA-P256 signature as ``r || s``, 32 big-endian bytes each
    (``sign_secure_boot_v1``); ValueError if it is not one."""
    from cryptography.hazmat.primitives.asymmetric import utils

    r, s = utils.decode_dss_signature(der)
    if r.bit_length() > 256 or s.bit_length() > 256:
        raise ValueError("not a P-256 signature")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _verifies(public: PublicKeyTypes, scheme: str, digest: bytes, sig: bytes) -> bool:
    """Whether ``sig`` (in espsecure's encoding for ``scheme``) signs ``digest``, checked
    as espsecure checks it."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

    try:
        if isinstance(public, rsa.RSAPublicKey):
            # generate_signature_block_using_pre_calculated_signature, verify_signature_v2
            public.verify(sig, digest,
                          padding.PSS(mgf=padding.MGF1(hashes.SHA256()),
                                      salt_length=_SALT_LENGTH),
                          utils.Prehashed(hashes.SHA256()))
        elif isinstance(public, ec.EllipticCurvePublicKey):
            if scheme == "sbv1":  # sign_secure_boot_v1: raw r || s, re-encoded as DER
                if len(sig) != 64:
                    return False
                sig = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                                 int.from_bytes(sig[32:], "big"))
            public.verify(sig, digest, ec.ECDSA(utils.Prehashed(_hash(scheme))))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def _public(loaded: LoadedKey) -> PublicKeyTypes:
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_public_key(loaded.public_pem)


def _hash(scheme: str) -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA384() if scheme == "ecdsa384" else hashes.SHA256()


def _digest_size(scheme: str) -> int:
    return 48 if scheme == "ecdsa384" else 32


def _stderr_tail(err: bytes) -> str:
    lines = [line.strip() for line in err.decode(errors="replace").splitlines()]
    lines = [_printable(line)[:_STDERR_WIDTH] for line in lines if line]
    if not lines:
        return "it wrote nothing to stderr"
    return "its stderr ended: " + " | ".join(lines[-_STDERR_LINES:])


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def _first_line(text: str) -> str:
    return _printable(text.strip().splitlines()[0] if text.strip() else "")[:_STDERR_WIDTH]


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    """A fresh directory (mode 0700, outside any repository) for espsecure's files, which
    are all public data; removed however the block ends."""
    path = Path(tempfile.mkdtemp(prefix="esp32tasks-sign-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _espsecure(loaded: LoadedKey, function: str, **arguments: Any) -> None:
    """Call espsecure's ``function`` quietly; its FatalError becomes our SignError."""
    import esptool

    espsecure = _module()
    try:
        with _quiet():
            getattr(espsecure, function)(**arguments)
    except esptool.FatalError as exc:
        key = loaded.key
        raise SignError(f"key '{key.name}' ({key.where}): espsecure refused to sign "
                        f"({_first_line(str(exc))}); check the key's scheme") from None


def _module() -> Any:
    import espsecure  # type: ignore[import-untyped]  # costly (~0.2 s): only when signing

    return espsecure


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """espsecure reports through esptool's logger (``esptool.logger.log``, a proxy for
    ``EspLog.instance``): a silent one stands in while it runs, so our output stays
    ours, without redirecting the process' stdout."""
    from esp_pylib.logger import EspLog

    previous = EspLog.instance
    EspLog.instance = _silent()
    try:
        yield
    finally:
        EspLog.instance = previous


@cache
def _silent() -> Any:
    from esptool.logger import EsptoolLogger

    logger = EsptoolLogger()
    logger.set_verbosity("silent")
    return logger
