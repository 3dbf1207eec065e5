"""Which signing schemes each chip's ROM and bootloader verify (pure).

From ESP-IDF's Secure Boot documentation, per chip:
https://docs.espressif.com/projects/esp-idf/en/stable/<chip>/security/secure-boot-v2.html
(for esp32 also .../esp32/security/secure-boot-v1.html). Secure Boot v2 is RSA-3072 with
RSA-PSS, or ECDSA (P-192, P-256, and on esp32c5 P-384); Secure Boot v1 exists on esp32 only
(ECDSA P-256 over the app; the bootloader is protected by the chip's digest). esp32 runs v2
from ECO3 (chip revision 3.0) on.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = ["ACCEPTED", "SCHEMES", "Scheme", "accepted", "secure_boot_version", "warning"]

Scheme = Literal["rsa3072", "ecdsa256", "ecdsa384", "ecdsa192", "sbv1"]
SCHEMES: Final[tuple[str, ...]] = get_args(Scheme)

_RSA_OR_ECDSA: Final = ("rsa3072", "ecdsa192", "ecdsa256")

#: chip -> the schemes it verifies.
ACCEPTED: Final[dict[str, tuple[str, ...]]] = {
    "esp32": ("sbv1", "rsa3072"),          # rsa3072: Secure Boot v2, ECO3 and later
    "esp32s2": ("rsa3072",),
    "esp32s3": ("rsa3072",),
    "esp32c3": ("rsa3072",),                # v2 from ECO3
    "esp32c2": ("ecdsa192", "ecdsa256"),
    "esp32c61": ("ecdsa192", "ecdsa256"),
    "esp32c6": _RSA_OR_ECDSA,
    "esp32h2": _RSA_OR_ECDSA,
    "esp32p4": _RSA_OR_ECDSA,
    "esp32c5": ("rsa3072", "ecdsa192", "ecdsa256", "ecdsa384"),
}

_DOC: Final = "https://docs.espressif.com/projects/esp-idf/en/stable/{chip}/security/secure-boot-v2.html"

#: Chips whose documentation advises against ECDSA Secure Boot (not functional for certain
#: input vectors on esp32c5, per its page's warning; the same hardware erratum on esp32p4).
_ECDSA_ADVISED_AGAINST: Final = frozenset({"esp32c5", "esp32p4"})


def accepted(chip: str) -> tuple[str, ...]:
    """The schemes ``chip`` verifies (none for a chip this table does not know)."""
    return ACCEPTED.get(chip, ())


def secure_boot_version(scheme: str) -> int:
    """1 for ``sbv1``, else 2."""
    return 1 if scheme == "sbv1" else 2


def warning(chip: str, scheme: str) -> str | None:
    """What ESP-IDF's documentation says against ``scheme`` on ``chip``, if anything."""
    if scheme.startswith("ecdsa") and chip in _ECDSA_ADVISED_AGAINST:
        return (f"ESP-IDF advises against ECDSA Secure Boot on {chip} (not functional for "
                f"certain input vectors; see {_DOC.format(chip=chip)}): prefer rsa3072")
    return None
