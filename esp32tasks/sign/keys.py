"""Read a Secure Boot key where its ``[[keys]]`` entry says, and check it fits its scheme.

The private key is read when a sign task runs, from a variable or a file outside the
repository, and lives only in memory: no temp file, no receipt, no child's argv. A key
that cannot sign is one :class:`~esp32tasks.errors.SignError` line naming the key, where
it looked, what was wrong and the fix; never the key's bytes, its PEM lines or
cryptography's exception text (which can echo its input).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from esp32tasks.config import Key
from esp32tasks.errors import SignError
from esp32tasks.secureboot import SCHEMES

__all__ = ["LoadedKey", "describe", "fingerprint", "load", "scheme_problem"]

#: What each scheme's key is, in the words :func:`describe` uses (so one comparison checks).
WANTS: Final[dict[str, str]] = {
    "rsa3072": "an RSA 3072-bit key",
    "ecdsa192": "an EC P-192 key",
    "ecdsa256": "an EC P-256 key",
    "ecdsa384": "an EC P-384 key",
    "sbv1": "an EC P-256 key",  # Secure Boot v1: ECDSA on NIST P-256 only
}
_CURVES: Final = {"secp192r1": "P-192", "secp256r1": "P-256", "secp384r1": "P-384"}
_SPKI: Final = serialization.PublicFormat.SubjectPublicKeyInfo


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadedKey:
    """A key ready to sign: its public half always, its private half unless a
    ``sign_command`` holds it."""

    key: Key
    public_pem: bytes
    """SubjectPublicKeyInfo PEM, as cryptography writes it (whatever the committed file's
    line breaks)."""
    fingerprint: str
    """``sha256:<hex>`` of the public key's DER SubjectPublicKeyInfo."""
    private: object | None = field(default=None, repr=False)
    """cryptography's ``RSAPrivateKey`` or ``EllipticCurvePrivateKey``; None with
    ``sign_command``."""


def load(key: Key, root: Path, environ: Mapping[str, str]) -> LoadedKey:
    """Read ``key``'s private key (or, with ``sign_command``, only its committed public
    key under ``root``) and check it is the scheme's kind of key and matches
    ``public_key``.

    RSA keys load with cryptography's consistency checks skipped (they cost more than a
    signature): :func:`esp32tasks.sign.image.signature` verifies every signature it makes
    with the public key, so an inconsistent key cannot publish a bad signature.
    """
    if key.private_key_env is not None:
        data = _from_env(key, key.private_key_env, environ)
    elif key.private_key_file is not None:
        data = _from_file(key, key.private_key_file)
    else:  # a sign_command holds the private key
        public = _committed(key, root)
        _fits(key, f"public_key {key.public_key}", public)
        return _loaded(key, public, None)
    private = _private(key, data)
    public = private.public_key()
    _fits(key, key.private_key_place, public)
    if key.public_key is not None and _der(_committed(key, root)) != _der(public):
        raise _fail(key, f"public_key {key.public_key} is not the public key of the private "
                         f"key in {key.private_key_place}; commit that key's public key "
                         f"(openssl pkey -pubout) or put the matching private key in "
                         f"{key.private_key_place}")
    return _loaded(key, public, private)


def fingerprint(public_pem: bytes) -> str:
    """``sha256:<hex>`` over the DER SubjectPublicKeyInfo: the same key gives the same
    fingerprint whatever its PEM's line breaks or trailing text."""
    try:
        public = serialization.load_pem_public_key(public_pem)
    except (ValueError, UnsupportedAlgorithm):
        raise SignError("not a PEM public key (-----BEGIN PUBLIC KEY-----); give the key's "
                        "SubjectPublicKeyInfo PEM (openssl pkey -pubout)") from None
    return "sha256:" + hashlib.sha256(_der(public)).hexdigest()


def describe(public: PublicKeyTypes) -> str:
    """What kind of key this is, in :data:`WANTS`' words (``an EC P-384 key``)."""
    if isinstance(public, rsa.RSAPublicKey):
        return f"an RSA {public.key_size}-bit key"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"an EC {_CURVES.get(public.curve.name, public.curve.name)} key"
    if isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return f"an {type(public).__name__.removesuffix('PublicKey')} key"
    if isinstance(public, dsa.DSAPublicKey):
        return "a DSA key"
    return "a key of a kind Secure Boot does not use"


def scheme_problem(public: PublicKeyTypes, scheme: str) -> str | None:
    """None when ``public`` is ``scheme``'s kind of key, else what is wrong and the fix
    (``holds an EC P-256 key, not rsa3072 (an RSA 3072-bit key); ...``)."""
    kind = describe(public)
    if kind == WANTS[scheme]:
        return None
    others = [s for s in SCHEMES if WANTS[s] == kind]
    hint = f", or make this key's scheme {' or '.join(others)}" if others else ""
    return (f"holds {kind}, not {scheme} ({WANTS[scheme]}); put the {scheme} key "
            f"there{hint}")


def _fail(key: Key, problem: str) -> SignError:
    return SignError(f"key '{key.name}' ({key.where}): {problem}")


def _from_env(key: Key, name: str, environ: Mapping[str, str]) -> bytes:
    place = key.private_key_place
    value = environ.get(name)
    if value is None:
        raise _fail(key, f"{place} is not set; put the key's PEM in it (or use "
                         "private_key_file)")
    if not value.strip():
        raise _fail(key, f"{place} is empty; put the key's PEM in it (or use "
                         "private_key_file)")
    data = value.encode("utf-8", "surrogateescape")
    # CI variables that cannot hold line breaks (GitLab's masked ones) are often set with
    # literal "\n": a PEM has no backslash of its own, so reading them as breaks is safe.
    if b"\n" not in data and b"\\n" in data:
        data = data.replace(b"\\n", b"\n")
    return data


def _from_file(key: Key, path: Path) -> bytes:
    place = key.private_key_place
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise _fail(key, f"{place} does not exist; put the key's PEM there (or use "
                         "private_key_env)") from None
    except IsADirectoryError:
        raise _fail(key, f"{place} is a directory; point private_key_file at the key's "
                         "PEM file") from None
    except OSError as exc:
        raise _fail(key, f"{place} cannot be read ({exc.strerror or type(exc).__name__}); "
                         "make it readable by the user who runs doit (mode 0400 or "
                         "0600)") from None


def _private(key: Key, data: bytes) -> PrivateKeyTypes:
    place = key.private_key_place
    begin = data.find(b"-----BEGIN")
    if begin < 0:
        raise _fail(key, f"{place} holds no PEM (no -----BEGIN line); put the key's whole "
                         "PEM there, its BEGIN and END lines included")
    header = data[begin:data.find(b"\n", begin)]
    if b"PRIVATE KEY" not in header and b"PUBLIC KEY" in header:
        raise _fail(key, f"{place} holds a public key, not the private key; put the private "
                         "key's PEM there (the public one is public_key)")
    if b"ENCRYPTED" in data[begin:begin + 200]:
        raise _fail(key, _ENCRYPTED.format(place=place))
    try:
        return serialization.load_pem_private_key(data, password=None,
                                                  unsafe_skip_rsa_key_validation=True)
    except TypeError:  # cryptography's word for "encrypted, and no password given"
        raise _fail(key, _ENCRYPTED.format(place=place)) from None
    except UnsupportedAlgorithm:
        raise _fail(key, f"{place} holds a private key of a kind cryptography cannot read; "
                         f"put {WANTS[key.scheme]} there") from None
    except ValueError:
        raise _fail(key, f"{place} holds a PEM that is not a readable private key; check it "
                         "was copied whole, its BEGIN and END lines included") from None


_ENCRYPTED: Final = ("{place} holds an encrypted private key; esp32tasks reads unencrypted "
                     "PEM only: decrypt it (openssl pkey -in encrypted.pem -out key.pem) and "
                     "let the secret store protect it")


def _committed(key: Key, root: Path) -> PublicKeyTypes:
    """The committed ``public_key``, parsed."""
    if key.public_key is None:
        raise _fail(key, "has a sign_command but no public_key; commit the signer's public "
                         "key (PEM) and set public_key to its path")
    place = f"public_key {key.public_key}"
    try:
        data = (root / key.public_key).read_bytes()
    except FileNotFoundError:
        raise _fail(key, f"{place} does not exist; commit the key's public PEM there "
                         "(openssl pkey -pubout -in <private.pem>)") from None
    except OSError as exc:
        raise _fail(key, f"{place} cannot be read ({exc.strerror or type(exc).__name__}); "
                         "commit the key's public PEM there") from None
    if b"PRIVATE KEY" in data:
        raise _fail(key, f"{place} holds a PRIVATE key: remove it from the repository and "
                         "its history, replace the key, and commit only its public key "
                         "(openssl pkey -pubout)")
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise _fail(key, f"{place} is not a PEM public key (-----BEGIN PUBLIC KEY-----); "
                         "commit the output of openssl pkey -pubout -in <private.pem> "
                         "there") from None


def _fits(key: Key, place: str, public: PublicKeyTypes) -> None:
    problem = scheme_problem(public, key.scheme)
    if problem is not None:
        raise _fail(key, f"{place} {problem}")


def _der(public: PublicKeyTypes) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, _SPKI)


def _loaded(key: Key, public: PublicKeyTypes, private: PrivateKeyTypes | None) -> LoadedKey:
    pem = public.public_bytes(serialization.Encoding.PEM, _SPKI)
    return LoadedKey(key=key, public_pem=pem,
                     fingerprint="sha256:" + hashlib.sha256(_der(public)).hexdigest(),
                     private=private)
