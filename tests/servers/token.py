"""A registry in token auth mode and a token server of our own (distribution's token spec).

Fixtures (session-scoped servers, reset for each test):

- ``token_registry``: a plain-HTTP ``docker-registry`` with ``auth: token`` and a plain-HTTP
  token server as its realm;
- ``secure_token_registry``: the same over TLS, registry and token server with one test CA.

The token server follows https://distribution.github.io/distribution/spec/auth/token/ (``GET``
with Basic auth or anonymous), .../auth/oauth/ (``POST`` grants ``password`` and
``refresh_token``) and .../auth/jwt/ (the token's claims). What the registry (distribution 2.8,
``registry/auth/token``) checks, and so what the tokens are made to pass:

- the JWT header names the signing key: ``kid`` is the libtrust key ID of a public key in
  ``rootcertbundle`` (base32 of the first 30 bytes of the SHA-256 of the DER
  SubjectPublicKeyInfo, 12 groups of 4 joined by ``:``), or ``x5c`` is a certificate chain
  up to a certificate of the bundle;
- ``alg`` is one of libtrust's (we sign ``ES256``, JWS ``r || s``, or ``RS256``);
- ``iss`` is the configured issuer, ``aud`` the service, *a string* (2.8 rejects a list);
- ``exp`` and ``nbf`` are integers, checked with :data:`LEEWAY` (60 s) either way;
- ``access`` lists ``{type, name, actions}``; a request needs each of its actions there, else
  401 with ``error="insufficient_scope"`` (never 403).

Every token request is recorded (:class:`TokenRequest`; no password or token in it).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fnmatch
import hashlib
import http.client
import json
import math
import secrets
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.servers.registry import (
    _OWN_AGENT,
    RegistryServer,
    Request,
    _skip_without_registry,
    make_ca,
)

__all__ = ["ANONYMOUS_ACCESS", "DEFAULT_TTL", "ISSUER", "LEEWAY", "PASSWORDS", "PUSHER",
           "READER", "SERVICE", "Grant", "TokenRegistry", "TokenRequest", "TokenServer",
           "User", "default_users", "libtrust_key_id", "parse_scope"]

SERVICE = "esp32tasks-registry"
ISSUER = "esp32tasks-tests-issuer"
#: distribution's ``token.Leeway``: ``exp`` and ``nbf`` are checked this many seconds loose.
LEEWAY = 60
#: The spec's floor for ``expires_in`` ("never ... less than 60 seconds to live").
DEFAULT_TTL = 300
PUSHER = "pusher"
READER = "reader"
#: The test users' own passwords (fixtures', not secrets).
PASSWORDS = {PUSHER: "pusher-Pa55word-for-tests", READER: "reader-Pa55word-for-tests"}
#: What anyone gets without credentials: pull on ``public/*``.
ANONYMOUS_ACCESS: dict[str, frozenset[str]] = {"public/*": frozenset({"pull"})}

Algorithm = Literal["ES256", "RS256"]
KeyHeader = Literal["kid", "x5c"]
#: A grant handler's answer: (user or None, scopes granted, JSON body).
_Answered = tuple[str | None, tuple[str, ...], dict[str, object]]
_Answer = Callable[[dict[str, list[str]]], _Answered]


@dataclass
class User:
    password: str = field(repr=False)
    #: repository glob (``fnmatch``, ``*`` crosses ``/``) -> actions; ``*`` allows every action.
    access: dict[str, frozenset[str]]


def default_users() -> dict[str, User]:
    return {
        PUSHER: User(PASSWORDS[PUSHER], {"cloud-iot/*": frozenset({"pull", "push"}),
                                         "public/*": frozenset({"pull", "push"})}),
        READER: User(PASSWORDS[READER], {"cloud-iot/*": frozenset({"pull"})}),
    }


@dataclass(frozen=True)
class Grant:
    """One entry of a scope or of a token's ``access`` claim."""

    type: str
    name: str
    actions: tuple[str, ...]
    cls: str = ""  # ``repository(plugin)``'s class

    def claim(self) -> dict[str, object]:
        entry: dict[str, object] = {"type": self.type, "name": self.name,
                                    "actions": list(self.actions)}
        if self.cls:
            entry["class"] = self.cls
        return entry

    def __str__(self) -> str:
        kind = f"{self.type}({self.cls})" if self.cls else self.type
        return f"{kind}:{self.name}:{','.join(self.actions)}"


def parse_scope(scope: str) -> Grant:
    """``type[(class)]:name:actions``; the name may hold a ``host:port`` (scope grammar)."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        raise ValueError(f"malformed scope {scope!r}")
    cls = ""
    if kind.endswith(")") and "(" in kind:
        kind, _, cls = kind[:-1].partition("(")
    return Grant(kind, name, tuple(a for a in actions.split(",") if a), cls)


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server answered (secrets left out)."""

    method: str  # GET or POST
    grant: str  # "GET" for the GET flow, else the grant_type sent ("" if none)
    user: str | None  # who asked (as claimed when refused); None: anonymous
    requested: tuple[str, ...]  # scopes as requested
    granted: tuple[str, ...]  # scopes in the token (actions granted, empty ones left out)
    status: int
    at: float  # time.time() when answered
    service: str | None = None
    client_id: str | None = None
    offline: bool = False  # a refresh token was asked for

    @property
    def anonymous(self) -> bool:
        return self.user is None


class _Refused(Exception):
    """An OAuth-style error answer: ``{"error": ..., "error_description": ...}``."""

    def __init__(self, status: int, error: str, description: str,
                 user: str | None = None) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description
        self.user = user


class _Server(ThreadingHTTPServer):
    # a CI machine under load: more than socketserver's 5 pending connections
    request_queue_size = 128


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    """libtrust's ``KeyID()``: what distribution keys ``rootcertbundle``'s keys by."""
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(text[i:i + 4] for i in range(0, len(text), 4))


@dataclass
class _SigningKey:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls, algorithm: Algorithm) -> _SigningKey:
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
            ec.generate_private_key(ec.SECP256R1()) if algorithm == "ES256"
            else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                             f"esp32tasks token signer {algorithm}")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(self.key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # JWS: r || s, not DER
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())


class TokenServer:
    """The realm: ``GET /token`` (token spec) and ``POST /token`` (OAuth2 spec).

    Settings (reset by :meth:`reset`): ``ttl`` (``expires_in``), ``leeway_trick`` (``exp =
    iat + ttl - LEEWAY``: the registry then stops accepting the token at ``iat + ttl``
    exactly, as advertised), ``lifetime`` (when set, the token's real life in seconds whatever
    ``expires_in`` says: ``exp = iat + lifetime - LEEWAY``), ``algorithm``, ``key_header``
    (``kid`` or ``x5c``), ``fail`` (answer the next ``fail`` requests 503), ``users``,
    ``anonymous``.
    """

    path = "/token"

    def __init__(self, workdir: Path, *, tls: bool = False, certs: Path | None = None,
                 service: str = SERVICE, issuer: str = ISSUER) -> None:
        self.workdir = workdir
        self.tls = tls
        self.service = service
        self.issuer = issuer
        self._keys: dict[Algorithm, _SigningKey] = {"ES256": _SigningKey.make("ES256"),
                                                    "RS256": _SigningKey.make("RS256")}
        workdir.mkdir(parents=True, exist_ok=True)
        self.rootcertbundle = workdir / "token-signers.pem"
        self.rootcertbundle.write_bytes(b"".join(
            k.cert.public_bytes(serialization.Encoding.PEM) for k in self._keys.values()))
        self._lock = threading.Lock()
        self._recorded = threading.Condition(self._lock)
        self.requests: list[TokenRequest] = []
        self._identities: dict[str, str] = {}  # refresh token -> user
        self.ttl = DEFAULT_TTL
        self.leeway_trick = False
        self.lifetime: float | None = None
        self.algorithm: Algorithm = "ES256"
        self.key_header: KeyHeader = "kid"
        self.fail = 0
        self.users = default_users()
        self.anonymous = dict(ANONYMOUS_ACCESS)
        self.server = _Server(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        if tls:
            assert certs is not None, "TLS needs the directory make_ca wrote"
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certs / "server.crt", certs / "server.key")
            # the handshake happens in the handler's thread, not in the accepting one
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True,
                                                     do_handshake_on_connect=False)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})  # a quick shutdown
        self._thread.start()

    # -- settings and records -------------------------------------------------------

    @property
    def realm(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{self.path}"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._identities.clear()
        self.ttl = DEFAULT_TTL
        self.leeway_trick = False
        self.lifetime = None
        self.algorithm = "ES256"
        self.key_header = "kid"
        self.fail = 0
        self.users = default_users()
        self.anonymous = dict(ANONYMOUS_ACCESS)

    def identity_token(self, user: str = PUSHER) -> str:
        """A new refresh token for ``user`` (docker config's ``identitytoken``)."""
        assert user in self.users, f"no user {user!r}"
        token = f"esp32tasks-identity-{secrets.token_urlsafe(24)}"
        with self._lock:
            self._identities[token] = user
        return token

    def revoke(self, refresh_token: str) -> None:
        with self._lock:
            self._identities.pop(refresh_token, None)

    def recorded(self) -> list[TokenRequest]:
        with self._lock:
            return list(self.requests)

    def wait_requests(self, count: int, timeout: float = 10) -> list[TokenRequest]:
        """Wait until at least ``count`` token requests were answered; return them all."""
        with self._recorded:
            assert self._recorded.wait_for(lambda: len(self.requests) >= count, timeout), (
                f"{len(self.requests)} token requests, not {count}")
            return list(self.requests)

    # -- tokens ---------------------------------------------------------------------

    def mint(self, subject: str, access: Iterable[Grant], *, iat: int | None = None,
             exp: int | None = None, nbf: int | None = None, audience: str | None = None,
             issuer: str | None = None, algorithm: Algorithm | None = None,
             key_header: KeyHeader | None = None) -> str:
        """A signed token; unset claims follow the settings (``exp`` from ttl/lifetime)."""
        iat = int(time.time()) if iat is None else iat
        if exp is None:
            if self.lifetime is not None:
                exp = iat + math.ceil(self.lifetime) - LEEWAY
            else:
                exp = iat + self.ttl - (LEEWAY if self.leeway_trick else 0)
        algorithm = algorithm or self.algorithm
        key = self._keys[algorithm]
        header: dict[str, object] = {"typ": "JWT", "alg": algorithm}
        if (key_header or self.key_header) == "kid":
            header["kid"] = libtrust_key_id(key.key.public_key())
        else:
            header["x5c"] = [base64.b64encode(
                key.cert.public_bytes(serialization.Encoding.DER)).decode()]
        claims = {"iss": issuer or self.issuer, "sub": subject, "aud": audience or self.service,
                  "exp": exp, "nbf": iat if nbf is None else nbf, "iat": iat,
                  "jti": uuid.uuid4().hex, "access": [g.claim() for g in access]}
        signed = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode())
                          for part in (header, claims))
        return f"{signed}.{_b64url(key.sign(signed.encode()))}"

    def allowed(self, user: str | None, grant: Grant) -> tuple[str, ...]:
        """The intersection of ``grant``'s actions with what ``user`` may do, in order."""
        if grant.type != "repository":
            return ()
        access = self.anonymous if user is None else self.users[user].access
        allowed: set[str] = set()
        for glob, actions in access.items():
            if fnmatch.fnmatchcase(grant.name, glob):
                allowed |= actions
        return tuple(a for a in dict.fromkeys(grant.actions) if "*" in allowed or a in allowed)

    def _issue(self, user: str | None, scopes: list[str], service: str
               ) -> tuple[str, list[Grant], int]:
        grants = []
        for scope in scopes:
            try:
                wanted = parse_scope(scope)
            except ValueError as exc:
                raise _Refused(400, "invalid_scope", str(exc)) from None
            grants.append(Grant(wanted.type, wanted.name, self.allowed(user, wanted),
                                wanted.cls))
        iat = int(time.time())
        token = self.mint(user or "", grants, iat=iat, audience=service)
        return token, grants, iat

    def _authenticate(self, user: str, password: str) -> None:
        known = self.users.get(user)
        if known is None or not secrets.compare_digest(known.password, password):
            raise _Refused(401, "invalid_grant", "wrong user name or password", user)

    # -- HTTP -----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _reply(self, status: int, body: dict[str, object],
                       headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, answer: _Answer, params: dict[str, list[str]],
                        grant: str) -> None:
                def first(name: str) -> str | None:
                    values = params.get(name)
                    return values[0] if values else None

                with server._lock:
                    failing = server.fail > 0
                    if failing:
                        server.fail -= 1
                granted: tuple[str, ...] = ()
                headers = None
                try:
                    user, granted, body = (_unavailable if failing else answer)(params)
                    status = 200
                except _Refused as refused:
                    user, status = refused.user, refused.status
                    body = {"error": refused.error, "error_description": refused.description}
                    if status == 401 and self.command == "GET":
                        headers = {"WWW-Authenticate": 'Basic realm="esp32tasks-token-server"'}
                record = TokenRequest(self.command, grant, user, tuple(_scopes(params)), granted,
                                      status, time.time(), first("service"), first("client_id"),
                                      first("access_type") == "offline"
                                      or first("offline_token") == "true")
                # recorded before the answer is sent: a client that has its answer sees it
                with server._recorded:
                    server.requests.append(record)
                    server._recorded.notify_all()
                self._reply(status, body, headers)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                if url.path != server.path:
                    self._reply(404, {"error": "not_found", "error_description": url.path})
                    return
                params = urllib.parse.parse_qs(url.query, keep_blank_values=True)
                self._answer(self._get, params, "GET")

            def _get(self, params: dict[str, list[str]]) -> _Answered:
                user: str | None = None
                authorization = self.headers.get("Authorization", "")
                if authorization:
                    kind, _, value = authorization.partition(" ")
                    try:
                        name, _, password = base64.b64decode(value).decode().partition(":")
                    except ValueError:
                        kind = "malformed"
                    if kind.lower() != "basic":
                        raise _Refused(400, "invalid_request",
                                       "only Basic authorization is understood")
                    server._authenticate(name, password)
                    user = name
                service = (params.get("service") or [server.service])[0]
                token, grants, iat = server._issue(user, _scopes(params), service)
                body: dict[str, object] = {
                    "token": token, "access_token": token, "expires_in": server.ttl,
                    "issued_at": _rfc3339(iat)}
                if user is not None and (params.get("offline_token") or [""])[0] == "true":
                    body["refresh_token"] = server.identity_token(user)
                return user, _granted(grants), body

            def do_POST(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length).decode() if length else ""
                if url.path != server.path:
                    self._reply(404, {"error": "not_found", "error_description": url.path})
                    return
                params = urllib.parse.parse_qs(data, keep_blank_values=True)
                grant = (params.get("grant_type") or [""])[0]
                self._answer(self._post, params, grant)

            def _post(self, params: dict[str, list[str]]) -> _Answered:
                def first(name: str) -> str:
                    return (params.get(name) or [""])[0]

                grant = first("grant_type")
                refresh = None
                if grant == "password":
                    user = first("username")
                    if not user:
                        raise _Refused(400, "invalid_request", "username is required")
                    server._authenticate(user, first("password"))
                    if first("access_type") == "offline":
                        refresh = server.identity_token(user)
                elif grant == "refresh_token":
                    refresh = first("refresh_token")
                    with server._lock:
                        found = server._identities.get(refresh)
                    if found is None:
                        raise _Refused(401, "invalid_grant", "unknown refresh token")
                    user = found
                else:
                    raise _Refused(400, "unsupported_grant_type",
                                   f"grant_type {grant!r} is not supported")
                if not first("client_id"):
                    raise _Refused(400, "invalid_request", "client_id is required")
                token, grants, iat = server._issue(user, _scopes(params),
                                                   first("service") or server.service)
                granted = _granted(grants)
                body: dict[str, object] = {"access_token": token, "expires_in": server.ttl,
                                           "issued_at": _rfc3339(iat),
                                           "scope": " ".join(granted)}
                if refresh is not None:
                    body["refresh_token"] = refresh
                return user, granted, body

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _granted(grants: list[Grant]) -> tuple[str, ...]:
    """The scopes a token grants, as recorded (entries without actions left out)."""
    return tuple(str(g) for g in grants if g.actions)


def _unavailable(params: dict[str, list[str]]) -> _Answered:
    raise _Refused(503, "temporarily_unavailable", "try again later")


def _scopes(params: dict[str, list[str]]) -> list[str]:
    """``scope`` repeated (the GET flow) or space-separated (OAuth2), or both."""
    return [s for value in params.get("scope", []) for s in value.split() if s]


def _rfc3339(moment: int) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class TokenRegistry(RegistryServer):
    """``docker-registry`` with ``auth: token`` pointing at :attr:`token_server`.

    A :class:`RegistryServer` (``configure(repo, token_registry)`` works, TLS included) whose
    readiness is ``GET /v2/`` answering 401 with a ``Bearer realm=`` challenge, whose
    :meth:`requests` start at the current test, and whose manifest/blob helpers use tokens
    minted in-process (not recorded as token requests).
    """

    token_server: TokenServer | None = None
    _skip: int = 0
    _paths: int = 0

    @classmethod
    def create(cls, workdir: Path, *, tls: bool = False) -> TokenRegistry:
        workdir.mkdir(parents=True, exist_ok=True)
        ca = make_ca(workdir / "certs") if tls else None
        server = TokenServer(workdir / "token-server", tls=tls, certs=workdir / "certs")
        return cls(workdir, tls=tls, ca=ca, token_server=server)

    @property
    def tokens(self) -> TokenServer:
        assert self.token_server is not None
        return self.token_server

    @property
    def realm(self) -> str:
        return self.tokens.realm

    @property
    def service(self) -> str:
        return self.tokens.service

    @property
    def users(self) -> dict[str, User]:
        return self.tokens.users

    @property
    def token_requests(self) -> list[TokenRequest]:
        """The token requests of this test so far (a copy)."""
        return self.tokens.recorded()

    def identity_token(self, user: str = PUSHER) -> str:
        return self.tokens.identity_token(user)

    @contextlib.contextmanager
    def expiry(self, ttl: int, *, leeway_trick: bool = False,
               lifetime: float | None = None) -> Iterator[None]:
        """Tokens issued inside advertise ``expires_in = ttl``; see :class:`TokenServer`."""
        saved = (self.tokens.ttl, self.tokens.leeway_trick, self.tokens.lifetime)
        self.tokens.ttl, self.tokens.leeway_trick, self.tokens.lifetime = (
            ttl, leeway_trick, lifetime)
        try:
            yield
        finally:
            self.tokens.ttl, self.tokens.leeway_trick, self.tokens.lifetime = saved

    def fresh_path(self, base: str = "cloud-iot/hello") -> str:
        """A repository path no earlier test of the session used (the storage is shared)."""
        self._paths += 1
        return f"{base}-{self._paths}-{uuid.uuid4().hex[:6]}"

    def docker_config(self, user: str = PUSHER, *, identity: bool = False
                      ) -> dict[str, dict[str, dict[str, str]]]:
        """A docker ``config.json`` for this registry: ``user:password``, or (``identity``)
        a fresh identity token as ``docker login`` stores one."""
        if identity:
            entry = {"auth": base64.b64encode(b"<token>:").decode(),
                     "identitytoken": self.identity_token(user)}
        else:
            secret = f"{user}:{self.users[user].password}".encode()
            entry = {"auth": base64.b64encode(secret).decode()}
        return {"auths": {self.host: entry}}

    def reset(self) -> None:
        """Forget this session's earlier tests: token requests, settings, access log."""
        self.tokens.reset()
        self._skip = 0
        self._skip = len(self.requests())

    # -- RegistryServer -------------------------------------------------------------

    def _write_config(self) -> Path:
        path = super()._write_config()
        config = json.loads(path.read_text())
        config["auth"] = {"token": {"realm": self.realm, "service": self.service,
                                    "issuer": self.tokens.issuer,
                                    "rootcertbundle": str(self.tokens.rootcertbundle)}}
        path.write_text(json.dumps(config, indent=2))  # YAML is a superset of JSON
        return path

    def _answers(self) -> bool:
        if self.port == 0:
            return False
        try:
            connection = self._connection()
            connection.request("GET", "/v2/", headers={"User-Agent": _OWN_AGENT})
            response = connection.getresponse()
            response.read()
            connection.close()
        except OSError:
            return False
        challenge = response.getheader("WWW-Authenticate") or ""
        return response.status == 401 and challenge.startswith(f'Bearer realm="{self.realm}"')

    def requests(self) -> list[Request]:
        return super().requests()[self._skip:]

    def bearer(self, repository_path: str, actions: Iterable[str] = ("pull",)) -> dict[str, str]:
        """An ``Authorization`` header for ``repository_path``, minted here."""
        token = self.tokens.mint("esp32tasks-test-fixture",
                                 [Grant("repository", repository_path, tuple(actions))],
                                 exp=int(time.time()) + DEFAULT_TTL)
        return {"Authorization": f"Bearer {token}"}

    def _get(self, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        connection = self._connection()
        connection.request("GET", path, headers={**headers, "User-Agent": _OWN_AGENT})
        return connection.getresponse()

    def manifest(self, repository_path: str, reference: str) -> tuple[str, bytes]:
        """``(digest, bytes)`` of a manifest or index, read with a pull token."""
        response = self._get(f"/v2/{repository_path}/manifests/{reference}", {
            "Accept": "application/vnd.oci.image.index.v1+json, "
                      "application/vnd.oci.image.manifest.v1+json",
            **self.bearer(repository_path)})
        body = response.read()
        assert response.status == 200, (response.status, body)
        return response.getheader("Docker-Content-Digest") or "", body

    def blob(self, repository_path: str, digest: str) -> bytes:
        response = self._get(f"/v2/{repository_path}/blobs/{digest}",
                             self.bearer(repository_path))
        body = response.read()
        if response.status in (301, 302, 307):  # a redirecting storage driver
            raise AssertionError(f"blob redirected to {response.getheader('Location')}")
        assert response.status == 200, (response.status, body)
        return body

    def tags(self, repository_path: str) -> list[str]:
        response = self._get(f"/v2/{repository_path}/tags/list", self.bearer(repository_path))
        body = response.read()
        if response.status == 404:
            return []
        assert response.status == 200, (response.status, body)
        return list(json.loads(body).get("tags") or [])

    def put_manifest(self, repository_path: str, reference: str, media_type: str,
                     body: bytes) -> None:
        connection = self._connection()
        connection.request("PUT", f"/v2/{repository_path}/manifests/{reference}", body=body,
                           headers={"Content-Type": media_type, "User-Agent": _OWN_AGENT,
                                    **self.bearer(repository_path, ("pull", "push"))})
        response = connection.getresponse()
        assert response.status == 201, (response.status, response.read())

    def close(self) -> None:
        self.kill()
        self.tokens.close()


def _session(tmp_path_factory: pytest.TempPathFactory, name: str, *,
             tls: bool) -> Iterator[TokenRegistry]:
    _skip_without_registry()
    server = TokenRegistry.create(tmp_path_factory.mktemp(name), tls=tls)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def _token_registry_session(tmp_path_factory: pytest.TempPathFactory
                            ) -> Iterator[TokenRegistry]:
    yield from _session(tmp_path_factory, "token-registry", tls=False)


@pytest.fixture(scope="session")
def _secure_token_registry_session(tmp_path_factory: pytest.TempPathFactory
                                   ) -> Iterator[TokenRegistry]:
    yield from _session(tmp_path_factory, "secure-token-registry", tls=True)


@pytest.fixture
def token_registry(_token_registry_session: TokenRegistry) -> TokenRegistry:
    """Plain-HTTP registry (``auth: token``) and token server, shared by the session and
    reset for this test (token requests, TTL and signing settings, users, access log)."""
    _token_registry_session.reset()
    return _token_registry_session


@pytest.fixture
def secure_token_registry(_secure_token_registry_session: TokenRegistry) -> TokenRegistry:
    """As ``token_registry``, over TLS: registry and token server certified by ``.ca``."""
    _secure_token_registry_session.reset()
    return _secure_token_registry_session

