"""Versions: a semver release or pre-release, or a git-describe snapshot; and their order.

``1.0.1`` and ``1.0.1-rc.2`` are releases (semver, no ``+build``: ``+`` is illegal in an
OCI tag). ``1.0.1-3-gabc1234`` is a snapshot: what ``git describe --tags`` says three
commits after the tag ``v1.0.1``, unique per commit. Channels move forward in
:func:`order`: by MAJOR.MINOR.PATCH; a pre-release before its release (semver); a
snapshot after the release or pre-release it counts from, by its distance, and before
anything later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["GIT", "TAG_PATTERN", "Version", "from_describe", "parse"]

#: ``project.version = "git"``: the version is what git describe says.
GIT: Final = "git"
#: The tags ``git describe`` may count from (``--match``).
TAG_PATTERN: Final = "v[0-9]*"

_NUMBER = r"0|[1-9][0-9]*"
_IDENTIFIER = r"[0-9A-Za-z-]+"
_SEMVER = re.compile(
    rf"(?P<major>{_NUMBER})\.(?P<minor>{_NUMBER})\.(?P<patch>{_NUMBER})"
    rf"(?:-(?P<pre>{_IDENTIFIER}(?:\.{_IDENTIFIER})*))?")
# what git describe --long --abbrev=7 adds after the tag: -<distance>-g<sha>
_DESCRIBED = re.compile(r"(?P<base>.+)-(?P<distance>0|[1-9][0-9]*)-g(?P<sha>[0-9a-f]{7,40})")


@dataclass(frozen=True, slots=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()
    """Pre-release identifiers (``rc.2`` → ``("rc", "2")``)."""
    distance: int = 0
    """Commits since the tag (a snapshot when > 0)."""
    sha: str = ""

    @property
    def snapshot(self) -> bool:
        return self.distance > 0

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            text += "-" + ".".join(self.pre)
        if self.distance:
            text += f"-{self.distance}-g{self.sha}"
        return text

    def order(self) -> tuple[object, ...]:
        """The channel order's key (see the module docstring)."""
        # semver: a release sorts after its pre-releases; numeric identifiers by value,
        # below alphanumeric ones; a shorter identifier list first when the rest is equal
        pre: tuple[object, ...] = (1,) if not self.pre else (0, *(
            (0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre), (-1, 0, ""))
        return (self.major, self.minor, self.patch, pre, self.distance)


def parse(text: str) -> Version | None:
    """A release, pre-release or snapshot spelled as we write them; None otherwise."""
    described = _DESCRIBED.fullmatch(text)
    if described is not None:
        base = _semver(described["base"])
        if base is not None and int(described["distance"]) > 0:
            return Version(base.major, base.minor, base.patch, base.pre,
                           int(described["distance"]), described["sha"])
    return _semver(text)


def _semver(text: str) -> Version | None:
    match = _SEMVER.fullmatch(text)
    if match is None:
        return None
    pre = tuple(match["pre"].split(".")) if match["pre"] else ()
    if any(p.isdigit() and p != "0" and p.startswith("0") for p in pre):
        return None  # semver: numeric identifiers have no leading zeros
    return Version(int(match["major"]), int(match["minor"]), int(match["patch"]), pre)


def from_describe(described: str) -> Version | None:
    """The version in ``git describe --tags --long --abbrev=7 --match 'v[0-9]*'`` output:
    ``v1.0.1-0-gabc1234`` is ``1.0.1``, ``v1.0.1-3-gabc1234`` is ``1.0.1-3-gabc1234``.
    None when the tag is not ``v`` and a semver version."""
    match = _DESCRIBED.fullmatch(described)
    if match is None or not match["base"].startswith("v"):
        return None
    base = _semver(match["base"][1:])
    if base is None:
        return None
    distance = int(match["distance"])
    return Version(base.major, base.minor, base.patch, base.pre, distance,
                   match["sha"] if distance else "")
