"""oras-py's :class:`~oras.provider.Registry` with our timeout, retry and auth policy.

oras-py is the registry protocol layer: it parses the repository reference
(:class:`oras.container.Container`), builds every URL, runs blob upload sessions
(``put_upload``: POST, the ``Location`` it answers, PUT ``?digest=``) and blob reads
(``get_blob``), over its requests session. Every request it sends goes through
:meth:`Transport.do_request`, the public method it calls for each one, which replaces
oras-py's own:

- a deadline on every request (oras-py sets none: a hung registry hangs it forever):
  ``timeout`` to connect and to each first byte, and the whole exchange within
  :func:`esp32tasks.deadline.allowance` (the timeouts plus its bytes at 64 KiB/s), so a
  registry that drips its answer fails as "too slow" rather than holding a push for
  minutes; every answer is read whole inside its deadline;
- answers that are not the distribution API's (an HTML page: a login portal, a proxy's
  error page, a web server where the registry should be) are "not an OCI registry",
  naming the URL, before anything reads them as a verdict;
- bounded retries: 429/5xx back off 1, 2 and 4 s, refused or cut connections 0.5 and 1 s;
  no retry starts after :data:`RETRY_BUDGET`, so a request ends within that plus one
  deadline (oras-py's decorator sleeps 3+5+11+29+83 s on any error);
- preemptive basic auth: the ``Authorization`` header goes with the first request (oras-py's
  basic backend sends each request without it, takes the 401 and sends it again, body
  included); a 401 or 403 is an immediate :class:`RegistryAuthError`, never retried;
- lean requests: only the headers distribution reads (requests' defaults ``Accept: */*``,
  ``Accept-Encoding``, ``Connection: keep-alive`` are dropped: HTTP/1.1 keeps the connection
  alive anyway, and every answer is a few hundred bytes of JSON or a blob we never fetch);
  a pool of keep-alive connections (one per thread of :meth:`Client.parallel`) for every
  request of a run. urllib3 sets ``TCP_NODELAY`` on them, so a request's head and body
  leave at once even in two writes.

Manifests are not oras-py's: its ``upload_manifest`` re-serialises the JSON and its
``get_manifest`` returns parsed JSON, while a manifest's digest is a hash of exact bytes.
:class:`~esp32tasks.registry.client.Client` PUTs and GETs those bytes through
:meth:`Transport.do_request` itself.

Imported only inside actions that talk to a registry: importing oras-py and requests costs
more than a whole no-op doit run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlencode, urljoin, urlsplit

import oras.provider
import requests
import requests.adapters
import urllib3
import urllib3.connection
from requests.structures import CaseInsensitiveDict
from urllib3.util import SKIP_HEADER

from esp32tasks import deadline
from esp32tasks.errors import RegistryAuthError, RegistryError, RegistryUnreachable
from esp32tasks.registry import auth
from esp32tasks.registry.credentials import Credentials
from esp32tasks.runcache import per_run

__all__ = ["MAX_ANSWER", "RETRY_BUDGET", "Transport"]

RETRY_STATUS: Final = frozenset({429, 500, 502, 503, 504})
STATUS_BACKOFF: Final = (1.0, 2.0, 4.0)
CONNECT_BACKOFF: Final = (0.5, 1.0)
#: No retry starts once this much time has gone by since the first attempt.
RETRY_BUDGET: Final = 20.0
USER_AGENT: Final = "esp32tasks"
#: Connections per registry: one per thread of :meth:`Client.parallel` (blobs of one image).
POOL_SIZE: Final = 4
#: Redirects followed per request (distribution sends blob GETs to its storage backend).
MAX_REDIRECTS: Final = 5
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
#: The largest answer whose length extends a request's deadline (an app image is at most
#: 16 MiB; a manifest 4 MiB): a server announcing more gets no more time for it.
MAX_ANSWER: Final = 32 * 1024 * 1024


class _Connection(deadline.Watched, urllib3.connection.HTTPConnection):
    pass


class _TLSConnection(deadline.Watched, urllib3.connection.HTTPSConnection):
    pass


class _Pool(urllib3.HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _TLSConnection
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class Transport(oras.provider.Registry):  # type: ignore[misc]  # oras-py ships no type hints
    def __init__(self, *, host: str, insecure: bool, verify: bool | str, timeout: float,
                 credentials: Credentials | None, what_to_check: str,
                 scope: str = "",
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(hostname=host, insecure=insecure, tls_verify=verify,
                         auth_backend="basic")
        self.session.trust_env = False  # no ~/.netrc credentials, no proxy for loopback
        self.session.verify = verify  # requests' own setting, for every request we send
        # only what we set: urllib3 would add Accept-Encoding: identity unless told to skip it
        self.session.headers = CaseInsensitiveDict({"User-Agent": USER_AGENT,
                                                    "Accept-Encoding": SKIP_HEADER})
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=POOL_SIZE)
        # connections that join the running request's deadline (urllib3's documented way
        # to choose a pool's connection class)
        adapter.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.timeout = timeout
        self.what_to_check = what_to_check
        self._origin = _origin(f"{self.prefix}://{host}/")
        self.sleep = sleep
        self.credentials = credentials
        #: what a token is asked for: ``repository:<path>:pull,push`` (or ``:pull``)
        self.scope = scope
        self._auth = _auth_of(self._origin, credentials.username if credentials else "")

    def do_request(self, url: str, method: str = "GET", *, data: Any = None,
                   headers: dict[str, str] | None = None, json: Any = None,
                   stream: bool = False) -> requests.Response:
        """Send one request, following redirects ourselves, credentials per URL.

        ``stream`` is ignored: every answer is read whole, inside its deadline.

        ``Authorization`` goes only to the registry's own origin (scheme, host and port):
        an upload ``Location`` or a redirect to any other host (blob storage elsewhere, or
        anything in the path that rewrites answers) gets none. A step from HTTPS down to
        plain HTTP is refused before anything is sent.
        """
        for _ in range(MAX_REDIRECTS + 1):
            self._refuse_downgrade(url, method)
            own = _origin(url) == self._origin
            if own:
                response = self._authorized(url, method, data=data, json=json,
                                            headers=headers or {})
            else:
                response = self._send(url, method, data=data, json=json,
                                      headers=dict(headers or {}), own=False)
            location = response.headers.get("Location")
            if response.status_code not in REDIRECTS or not location:
                return response
            url = urljoin(url, location)
            if response.status_code == 303 and method != "HEAD":
                method, data, json = "GET", None, None
        raise RegistryError(f"registry {self.hostname} redirected {method} {_path(url)} more "
                            f"than {MAX_REDIRECTS} times; it is misconfigured: ask its "
                            "operators")

    def _authorized(self, url: str, method: str, *, data: Any, json: Any,
                    headers: dict[str, str]) -> requests.Response:
        """A request to the registry itself, authenticated as its challenge asks.

        Until a challenge says otherwise, credentials go up front as Basic (they are this
        host's: ``docker login`` stored them for it), or not at all. A 401 whose challenge
        is ``Bearer`` switches the run to the token flow (:mod:`.auth`): a token for our
        scope from the realm it names, renewed before it expires; the request is sent again
        once with it, and once more with a fresh token if the registry refuses one.
        """
        for attempt in range(3):
            authorization, token = self._authorization()
            response = self._send(url, method, data=data, json=json, own=True,
                                  headers={**headers, **({"Authorization": authorization}
                                                         if authorization else {})})
            if response.status_code != 401:
                return response
            bearer = next((c for c in auth.parse(response.headers.get("WWW-Authenticate", ""))
                           if c.scheme == "bearer"), None)
            if bearer is None or attempt == 2 or (token is None and attempt == 1):
                raise RegistryAuthError(self._auth_message(401, method, url, bearer, token))
            self._auth.bearer = bearer  # learnt once: every later request of the run
            if token is not None:
                self._auth.tokens.forget(self.scope, token)
        raise AssertionError("unreachable")  # pragma: no cover

    def _authorization(self) -> tuple[str | None, auth.Token | None]:
        bearer = self._auth.bearer
        if bearer is not None:
            token = self._auth.tokens.get(bearer, self.scope, self.fetch_token)
            return token.header, token
        if self.credentials is not None and self.credentials.identity_token is None:
            return self.credentials.basic(), None
        return None, None

    def fetch_token(self, challenge: auth.Challenge, scope: str) -> auth.Token:
        """A token for ``scope`` from the realm of the registry's own challenge.

        With an identity token (``docker login``'s ``identitytoken``), the OAuth2 POST
        (``grant_type=refresh_token``); with a user and password, a GET with them as Basic;
        else an anonymous GET. The realm must be HTTPS unless the registry itself is plain
        HTTP. Neither the credentials nor the token ever reach a message.
        """
        realm = challenge.realm
        parts = urlsplit(realm)
        shown = f"{parts.scheme}://{parts.netloc}{parts.path}"
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryAuthError(
                f"registry {self.hostname} asked for a token but named no token server it "
                f"can be had from (realm {realm[:100]!r}); ask its operators")
        if parts.scheme == "http" and self.prefix == "https":
            raise RegistryAuthError(
                f"registry {self.hostname} sends us for tokens to {shown}, plain HTTP; "
                "refusing to send credentials unencrypted (if the registry itself is plain "
                "HTTP, set [registry] insecure = true)")
        fields = {"service": challenge.params.get("service", ""), "scope": scope}
        fields = {k: v for k, v in fields.items() if v}
        creds = self.credentials
        headers: dict[str, str] = {}
        data: str | None = None
        if creds is not None and creds.identity_token is not None:
            method, url = "POST", realm
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            data = urlencode({"grant_type": "refresh_token", "client_id": USER_AGENT,
                              "refresh_token": creds.identity_token, **fields})
        else:
            method = "GET"
            if creds is not None:
                fields["account"] = creds.username
                headers["Authorization"] = creds.basic()
            url = realm + ("&" if parts.query else "?") + urlencode(fields)
        for attempt in range(len(CONNECT_BACKOFF) + 1):
            try:
                response = self._exchange(url, method, data=data, json=None, headers=headers)
                break
            except _Cut as cut:  # a kept-alive connection the token server closed, say
                if attempt == len(CONNECT_BACKOFF):
                    raise RegistryUnreachable(
                        f"cannot reach the token server {shown} that registry "
                        f"{self.hostname} named ({cut.reason}); check that it is up and "
                        "reachable from here") from None
                self.sleep(CONNECT_BACKOFF[attempt])
        return self._token_from(response, shown)

    def _token_from(self, response: requests.Response, shown: str) -> auth.Token:
        status = response.status_code
        creds = self.credentials
        if status in (401, 403):
            if creds is None:
                raise RegistryAuthError(
                    f"registry {self.hostname}'s token server {shown} gives no anonymous "
                    f"token ({status}); set ESP32TASKS_REGISTRY_USER and "
                    "ESP32TASKS_REGISTRY_PASSWORD, or `docker login` it")
            what = "identity token" if creds.identity_token else "user and password"
            raise RegistryAuthError(
                f"the token server {shown} of registry {self.hostname} refused the {what} "
                f"from {creds.source} ({status}); check them (or `docker login` again)")
        if status != 200:
            raise RegistryError(
                f"the token server {shown} of registry {self.hostname} answered {status} "
                f"{response.reason}; try again later or ask its operators")
        try:
            document = response.json()
        except ValueError:
            document = None
        value = (document.get("token") or document.get("access_token")
                 if isinstance(document, dict) else None)
        if not isinstance(value, str) or not value:
            kind = response.headers.get("Content-Type") or "no content type"
            raise RegistryError(
                f"the token server {shown} of registry {self.hostname} answered "
                f"{len(response.content)} bytes of {kind} holding no token: it is not a "
                "token server, or a broken one; ask the registry's operators")
        expires_in = document.get("expires_in") if isinstance(document, dict) else None
        if not isinstance(expires_in, (int, float)) or isinstance(expires_in, bool) \
                or expires_in <= 0:
            expires_in = auth.DEFAULT_EXPIRES_IN
        return auth.Token(value, float(expires_in))

    def _refuse_downgrade(self, url: str, method: str) -> None:
        target = urlsplit(url)
        if self.prefix == "https" and target.scheme != "https":
            raise RegistryError(
                f"registry {self.hostname} sent {method} {_path(url)} to "
                f"{target.scheme}://{target.netloc}, off HTTPS; refusing to send anything "
                "unencrypted (if that registry is plain HTTP, set [registry] insecure = true)")

    def _send(self, url: str, method: str, *, data: Any, json: Any,
              headers: dict[str, str], own: bool) -> requests.Response:
        """One URL, within its deadline, with bounded retries; 403 is final, and so is a
        401 from elsewhere (the registry's own goes back to :meth:`_authorized`).

        The answer is read whole (``do_request``'s ``stream`` is accepted for oras-py's
        sake), so the deadline covers its body too.
        """
        started = time.monotonic()
        status_retries = connect_retries = 0
        while True:
            try:
                response = self._exchange(url, method, data=data, json=json, headers=headers)
            except _Cut as cut:
                elapsed = time.monotonic() - started
                if connect_retries < len(CONNECT_BACKOFF) and elapsed < RETRY_BUDGET:
                    self.sleep(CONNECT_BACKOFF[connect_retries])
                    connect_retries += 1
                    continue
                raise RegistryUnreachable(cut.message(connect_retries + 1)) from None
            status = response.status_code
            if status in (401, 403):
                if not own:
                    raise RegistryAuthError(
                        f"{urlsplit(url).netloc}, where registry {self.hostname} sent "
                        f"{method} {_path(url)}, answered {status}; esp32tasks sends the "
                        "registry's credentials to the registry alone: ask its operators")
                if status == 401:
                    return response  # _authorized reads its challenge
                raise RegistryAuthError(self._auth_message(status, method, url))
            if status in RETRY_STATUS:
                delay = _retry_after(response, STATUS_BACKOFF, status_retries)
                elapsed = time.monotonic() - started
                if status_retries < len(STATUS_BACKOFF) and elapsed + delay < RETRY_BUDGET:
                    self.sleep(delay)
                    status_retries += 1
                    continue
                raise RegistryError(
                    f"registry {self.hostname} answered {status} {response.reason} to "
                    f"{method} {_path(url)} {status_retries + 1} times over "
                    f"{time.monotonic() - started:.1f} s; it is overloaded or broken: try "
                    "again later or ask its operators")
            self._refuse_non_registry(response, method, url)
            return response

    def _exchange(self, url: str, method: str, *, data: Any, json: Any,
                  headers: dict[str, str]) -> requests.Response:
        """One request and its whole answer, inside one deadline (see the module doc)."""
        allowed = deadline.allowance(self.timeout, _size(data))
        with deadline.within(allowed) as watch:
            try:
                response: requests.Response = self.session.request(
                    method, url, data=data, json=json, headers=headers, stream=True,
                    timeout=(self.timeout, self.timeout), allow_redirects=False)
                length = response.headers.get("Content-Length", "")
                if method != "HEAD" and length.isdigit():
                    watch.extend(min(int(length), MAX_ANSWER) / deadline.MIN_RATE)
                    allowed = watch.seconds
                response.content  # noqa: B018  # read whole, inside the deadline
            except requests.exceptions.SSLError as exc:
                if watch.expired:
                    raise self._too_slow(method, url, allowed) from None
                raise RegistryUnreachable(
                    f"TLS with registry {self.hostname} failed ({_reason(exc)}); check "
                    "[registry] ca_bundle (the CA that signed its certificate), or set "
                    "insecure = true for a plain-HTTP registry") from None
            except requests.exceptions.Timeout:
                raise RegistryUnreachable(
                    f"registry {self.hostname} did not answer {method} {_path(url)} within "
                    f"{self.timeout:g} s; check {self.what_to_check} is up and reachable "
                    "(or raise [registry] timeout)") from None
            except (requests.exceptions.ConnectionError,
                    requests.exceptions.ChunkedEncodingError) as exc:
                if watch.expired:
                    raise self._too_slow(method, url, allowed) from None
                raise _Cut(self, method, url, exc) from None
            if watch.expired:  # http.client takes a head cut off by the shutdown as whole
                raise self._too_slow(method, url, allowed)
            return response

    def _too_slow(self, method: str, url: str, allowed: float) -> RegistryUnreachable:
        return RegistryUnreachable(
            f"registry {self.hostname} was too slow: {method} {_path(url)} did not finish "
            f"within {allowed:.0f} s (the request and its answer at under "
            f"{deadline.MIN_RATE // 1024} KiB/s); the registry or the network to it is "
            "overloaded: try again later, or raise [registry] timeout")

    def _refuse_non_registry(self, response: requests.Response, method: str,
                             url: str) -> None:
        """An HTML page where the distribution API answers (JSON, or nothing) is not a
        registry's: a login portal, a proxy's error page, a web server at that address."""
        status = response.status_code
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if (200 <= status < 300 or status == 404) and kind in _NOT_API:
            parts = urlsplit(url)
            raise RegistryError(
                f"{parts.scheme}://{parts.netloc}{parts.path} answered {method} with "
                f"{status} and an HTML page: this is not an OCI registry; check "
                f"{self.what_to_check} (the host and port of the registry itself, not a web "
                "page or a proxy's login in front of it)")

    def _auth_message(self, status: int, method: str, url: str,
                      bearer: auth.Challenge | None = None,
                      token: auth.Token | None = None) -> str:
        where = f"{method} {_path(url)}"
        if token is not None and bearer is not None:
            realm = urlsplit(bearer.realm)
            granted = f"{realm.scheme}://{realm.netloc}{realm.path}"
            if self.credentials is None:
                return (f"registry {self.hostname} refused {where} with an anonymous token "
                        f"from {granted} ({bearer.params.get('error') or status}); set "
                        "ESP32TASKS_REGISTRY_USER and ESP32TASKS_REGISTRY_PASSWORD, or "
                        "`docker login` it")
            return (f"registry {self.hostname} refused {where}: the token server {granted} "
                    f"did not grant {self.scope} to the credentials from "
                    f"{self.credentials.source} "
                    f"({bearer.params.get('error') or status}); they may not push to this "
                    "repository: ask its operators for push access, or use other credentials")
        if self.credentials is None:
            return (f"registry {self.hostname} wants credentials ({status} to {where}); set "
                    "ESP32TASKS_REGISTRY_USER and ESP32TASKS_REGISTRY_PASSWORD, or "
                    "`docker login` it")
        if status == 403:
            return (f"registry {self.hostname} denied {where} (403): the credentials from "
                    f"{self.credentials.source} are valid but may not push to this "
                    "repository")
        if self.credentials.identity_token is not None:
            return (f"registry {self.hostname} refused {where} (401): {self.credentials.source}"
                    " holds an identity token, which only a registry with token auth takes; "
                    "set ESP32TASKS_REGISTRY_USER and ESP32TASKS_REGISTRY_PASSWORD")
        return (f"authentication failed for registry {self.hostname} (401 to {where}); check "
                f"the user and password (from {self.credentials.source})")


class _Auth:
    """One registry's authentication for one run, shared by every transport (thread) that
    talks to it with the same user: the Bearer challenge once learnt, and the tokens."""

    def __init__(self) -> None:
        self.bearer: auth.Challenge | None = None
        self.tokens = auth.Tokens()


@per_run
def _auth_of(origin: tuple[str, str, int | None], username: str) -> _Auth:
    del origin, username  # the cache key
    return _Auth()


_NOT_API: Final = frozenset({"text/html", "application/xhtml+xml"})


class _Cut(Exception):  # control flow inside this module: a retryable cut
    """The connection failed or closed before the whole answer arrived."""

    def __init__(self, transport: Transport, method: str, url: str,
                 exc: BaseException) -> None:
        super().__init__()
        self.transport, self.method, self.url = transport, method, url
        self.reason = _reason(exc)
        self.midway = isinstance(exc, requests.exceptions.ChunkedEncodingError)

    def message(self, attempts: int) -> str:
        t = self.transport
        if self.midway:
            return (f"registry {t.hostname} cut its answer to {self.method} "
                    f"{_path(self.url)} short ({self.reason}), {attempts} times; the "
                    "registry or the network to it is failing: try again later or ask its "
                    "operators")
        return (f"cannot reach registry {t.hostname} over {t.prefix} ({self.reason}); "
                f"check {t.what_to_check} is running and listening there, and that the "
                "scheme is right (insecure = true for plain HTTP)")


def _size(data: Any) -> int:
    """Bytes of a request body (0 for none or an unknown stream)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return len(data)
    if isinstance(data, str):
        return len(data.encode())
    return 0


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, lower-case host and port (the scheme's default when none is given)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a port: never our origin
        return (parts.scheme, parts.netloc, -1)
    return (parts.scheme, (parts.hostname or "").lower(),
            port if port is not None else _DEFAULT_PORTS.get(parts.scheme))


def _retry_after(response: requests.Response, backoff: tuple[float, ...], index: int) -> float:
    default = backoff[min(index, len(backoff) - 1)]
    value = response.headers.get("Retry-After", "")
    if value.isdigit():
        return min(float(value), max(backoff))
    return default


def _path(url: str) -> str:
    """The URL's path without the query (upload session state stays out of messages)."""
    return urlsplit(url).path


def _reason(exc: BaseException) -> str:
    """A short cause, free of URLs (upload session URLs carry state in their query)."""
    text = str(exc)
    for marker, reason in _REASONS:
        if marker in text:
            return reason
    return type(exc).__name__


_REASONS: Final = (
    ("Connection refused", "Connection refused"),
    ("Name or service not known", "unknown host name"),
    ("certificate verify failed", "certificate verify failed"),
    ("wrong version number", "not TLS: is it plain HTTP?"),
    ("No route to host", "No route to host"),
    ("Connection reset", "connection reset"),
    ("RemoteDisconnected", "connection closed without an answer"),
    ("IncompleteRead", "the connection closed before the whole answer"),
    ("Connection broken", "the connection broke in the middle of the answer"),
    ("Connection aborted", "connection closed without an answer"),
)
