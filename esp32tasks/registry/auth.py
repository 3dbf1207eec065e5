"""How a registry wants us to authenticate, learnt from its challenge; tokens per scope.

A registry says how in its ``401``'s ``WWW-Authenticate`` (RFC 7235): ``Basic realm=…``
(distribution with htpasswd, Harbor, ECR) or ``Bearer realm=…,service=…,scope=…`` (the
distribution token flow: Docker Hub, GHCR, Quay, GitLab, distribution with ``auth:
token``). :func:`parse` reads the header; :class:`Tokens` keeps one token per scope for the
run, in memory only, renewed when its ``expires_in`` (60 s when the server says nothing, as
the token spec says) is nearly over or when the registry refuses it.

Nothing here sends a request: :class:`~esp32tasks.registry.http.Transport` asks the realm
(:meth:`Transport.fetch_token`) and attaches what :class:`Tokens` hands out.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["DEFAULT_EXPIRES_IN", "Challenge", "Token", "Tokens", "parse"]

#: The token spec: "if expires_in is not given, a token lasts 60 seconds".
DEFAULT_EXPIRES_IN: Final = 60
#: A token is renewed this long before it expires (or at half its life, if shorter).
RENEW_BEFORE: Final = 10.0

_TCHARS: Final = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME = re.compile(rf"\s*({_TCHARS})")
_PARAM = re.compile(rf'\s*({_TCHARS})\s*=\s*("(?:[^"\\]|\\.)*"|{_TCHARS})\s*')
_TOKEN68 = re.compile(r"\s*[A-Za-z0-9._~+/-]+=*\s*(?=,|$)")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge: its scheme (lower case) and its parameters (names lower case)."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse(header: str) -> list[Challenge]:
    """Every challenge in a ``WWW-Authenticate`` value (RFC 7235, section 4.1); what does
    not parse ends the list (a server's garbage is no challenge)."""
    challenges: list[Challenge] = []
    at = 0
    while at < len(header):
        while at < len(header) and header[at] in " \t,":
            at += 1
        scheme = _SCHEME.match(header, at)
        if scheme is None:
            break
        at = scheme.end()
        params: dict[str, str] = {}
        token68 = _TOKEN68.match(header, at)
        if token68 is not None and not _PARAM.match(header, at):
            at = token68.end()
        while True:
            param = _PARAM.match(header, at)
            if param is None:
                break
            name, value = param.group(1).lower(), param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params.setdefault(name, value)
            at = param.end()
            if at < len(header) and header[at] == ",":
                after = at + 1
                if _PARAM.match(header, after):
                    at = after
                    continue
            break
        challenges.append(Challenge(scheme.group(1).lower(), params))
    return challenges


@dataclass(frozen=True, slots=True)
class Token:
    value: str = field(repr=False)
    expires_in: float

    @property
    def header(self) -> str:
        return f"Bearer {self.value}"


class Tokens:
    """One token per scope for the run, asked for once and renewed before it expires.

    ``get`` asks the realm through ``fetch(challenge, scope)`` under this object's lock, so
    threads pushing blobs side by side share one token request.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[Token, float]] = {}  # scope -> (token, renew at)
        #: how many tokens were fetched (the wire cost, for tests and the bench)
        self.fetched = 0

    def get(self, challenge: Challenge, scope: str,
            fetch: Callable[[Challenge, str], Token]) -> Token:
        with self._lock:
            held = self._tokens.get(scope)
            if held is not None and self._clock() < held[1]:
                return held[0]
            token = fetch(challenge, scope)
            self.fetched += 1
            life = max(float(token.expires_in), 1.0)
            self._tokens[scope] = (token, self._clock() + life - min(RENEW_BEFORE, life / 2))
            return token

    def forget(self, scope: str, token: Token) -> None:
        """The registry refused ``token``: the next :meth:`get` asks for a new one."""
        with self._lock:
            held = self._tokens.get(scope)
            if held is not None and held[0] is token:
                del self._tokens[scope]
