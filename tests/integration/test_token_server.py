"""The token-auth fixtures themselves, spoken to by hand (urllib, http.client; no esp32tasks):
a real distribution registry has to accept what our token server issues, and only that."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.servers.token import (
    ISSUER,
    LEEWAY,
    PASSWORDS,
    PUSHER,
    READER,
    SERVICE,
    Grant,
    TokenRegistry,
    libtrust_key_id,
)

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _context(registry: TokenRegistry) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=str(registry.ca)) if registry.tls else None


def _answer(request: urllib.request.Request, registry: TokenRegistry
            ) -> tuple[int, dict[str, object]]:
    for attempt in (1, 2):
        try:
            with urllib.request.urlopen(request, timeout=10,  # noqa: S310  # our own server
                                        context=_context(registry)) as response:
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except (http.client.RemoteDisconnected, ConnectionResetError):
            # seen once in CI under load, on a fresh connection; what is tested here is
            # the token server's grants, not loopback TCP (esp32tasks retries such a cut)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def get_token(registry: TokenRegistry, *scopes: str, user: str | None = None,
              password: str | None = None, **params: str) -> tuple[int, dict[str, object]]:
    """The token spec's GET flow: Basic auth, or anonymous without ``user``."""
    query = urllib.parse.urlencode([("service", SERVICE), *(("scope", s) for s in scopes),
                                    *params.items()])
    request = urllib.request.Request(f"{registry.realm}?{query}")  # noqa: S310
    if user is not None:
        secret = f"{user}:{password or PASSWORDS[user]}".encode()
        request.add_header("Authorization", f"Basic {base64.b64encode(secret).decode()}")
    return _answer(request, registry)


def post_token(registry: TokenRegistry, **form: str) -> tuple[int, dict[str, object]]:
    """The OAuth2 flow: a form-encoded POST."""
    data = urllib.parse.urlencode({"service": SERVICE, "client_id": "esp32tasks-tests",
                                   **form}).encode()
    request = urllib.request.Request(registry.realm, data=data, method="POST",  # noqa: S310
                                     headers={"Content-Type":
                                              "application/x-www-form-urlencoded"})
    return _answer(request, registry)


def token_of(answer: tuple[int, dict[str, object]]) -> str:
    status, body = answer
    assert status == 200, body
    token = body["access_token"]
    assert isinstance(token, str)
    return token


def claims_of(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def call(registry: TokenRegistry, method: str, target: str, token: str | None = None, *,
         body: bytes | None = None, headers: dict[str, str] | None = None
         ) -> tuple[int, http.client.HTTPResponse, bytes]:
    """One request to the registry; ``target`` is a path or a ``Location`` URL."""
    url = urllib.parse.urlsplit(target)
    path = url.path + (f"?{url.query}" if url.query else "")
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    connection = registry._connection()
    connection.request(method, path, body=body, headers=sent)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response, data


def push_blob(registry: TokenRegistry, path: str, token: str, data: bytes) -> str:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    status, response, body = call(registry, "POST", f"/v2/{path}/blobs/uploads/", token)
    assert status == 202, (status, body)
    location = response.getheader("Location") or ""
    joiner = "&" if "?" in location else "?"
    status, _, body = call(registry, "PUT", f"{location}{joiner}digest={digest}", token,
                           body=data, headers={"Content-Type": "application/octet-stream"})
    assert status == 201, (status, body)
    return digest


def push_image(registry: TokenRegistry, path: str, token: str, tag: str = "1.0") -> bytes:
    """Config blob, layer blob, manifest: a tiny OCI image, pushed by hand."""
    config = b'{"architecture":"riscv32","os":"none"}'
    layer = b"firmware image bytes for " + path.encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": push_blob(registry, path, token, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": push_blob(registry, path, token, layer), "size": len(layer)}],
    }).encode()
    status, _, body = call(registry, "PUT", f"/v2/{path}/manifests/{tag}", token,
                           body=manifest, headers={"Content-Type": OCI_MANIFEST})
    assert status == 201, (status, body)
    return manifest


def pull_manifest(registry: TokenRegistry, path: str, token: str | None,
                  tag: str = "1.0") -> tuple[int, http.client.HTTPResponse, bytes]:
    return call(registry, "GET", f"/v2/{path}/manifests/{tag}", token,
                headers={"Accept": OCI_MANIFEST})


def test_v2_challenges_with_the_bearer_realm(token_registry: TokenRegistry) -> None:
    status, response, _ = call(token_registry, "GET", "/v2/")
    assert status == 401
    assert response.getheader("WWW-Authenticate") == (
        f'Bearer realm="{token_registry.realm}",service="{SERVICE}"')
    status, response, _ = pull_manifest(token_registry, "cloud-iot/hello", None)
    assert status == 401
    assert 'scope="repository:cloud-iot/hello:pull"' in (
        response.getheader("WWW-Authenticate") or "")


def test_pusher_pushes_and_pulls_back(token_registry: TokenRegistry) -> None:
    path = token_registry.fresh_path()
    scope = f"repository:{path}:pull,push"
    status, answer = get_token(token_registry, scope, user=PUSHER, account=PUSHER)
    assert status == 200
    assert answer["token"] == answer["access_token"]
    assert answer["expires_in"] == 300
    assert isinstance(answer["issued_at"], str)
    token = token_of((status, answer))
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "ES256"
    assert len(header["kid"].split(":")) == 12
    claims = claims_of(token)
    assert (claims["iss"], claims["sub"], claims["aud"]) == (ISSUER, PUSHER, SERVICE)
    assert claims["access"] == [{"type": "repository", "name": path,
                                 "actions": ["pull", "push"]}]
    assert isinstance(claims["iat"], int)
    assert (claims["nbf"], claims["exp"]) == (claims["iat"], claims["iat"] + 300)

    manifest = push_image(token_registry, path, token)
    status, response, body = pull_manifest(token_registry, path, token)
    assert (status, body) == (200, manifest)
    digest = f"sha256:{hashlib.sha256(manifest).hexdigest()}"
    assert response.getheader("Docker-Content-Digest") == digest
    assert token_registry.manifest(path, "1.0") == (digest, manifest)  # the fixture's helper
    assert token_registry.tags(path) == ["1.0"]

    [request] = token_registry.token_requests
    assert (request.method, request.grant, request.user, request.status) == (
        "GET", "GET", PUSHER, 200)
    assert request.requested == request.granted == (scope,)
    assert PASSWORDS[PUSHER] not in repr(request)
    kinds = [(r.kind, r.status) for r in token_registry.requests()]
    assert ("manifest", 201) in kinds
    assert ("upload", 201) in kinds


def test_reader_gets_pull_only_and_cannot_push(token_registry: TokenRegistry) -> None:
    path = token_registry.fresh_path()
    push_image(token_registry, path,
               token_of(get_token(token_registry, f"repository:{path}:pull,push", user=PUSHER)))
    token = token_of(get_token(token_registry, f"repository:{path}:pull,push", user=READER))
    assert claims_of(token)["access"] == [{"type": "repository", "name": path,
                                           "actions": ["pull"]}]
    assert token_registry.token_requests[-1].granted == (f"repository:{path}:pull",)
    status, response, _ = call(token_registry, "POST", f"/v2/{path}/blobs/uploads/", token)
    assert status == 401
    assert 'error="insufficient_scope"' in (response.getheader("WWW-Authenticate") or "")
    assert pull_manifest(token_registry, path, token)[0] == 200
    # nothing at all outside cloud-iot/*: an empty grant, not an error
    status, answer = get_token(token_registry, "repository:public/x:pull", user=READER)
    assert status == 200
    assert claims_of(token_of((status, answer)))["access"] == [
        {"type": "repository", "name": "public/x", "actions": []}]


def test_anonymous_pulls_public_only(token_registry: TokenRegistry) -> None:
    path = token_registry.fresh_path("public/hello")
    push_image(token_registry, path,
               token_of(get_token(token_registry, f"repository:{path}:pull,push", user=PUSHER)))
    token = token_of(get_token(token_registry, f"repository:{path}:pull,push"))
    assert claims_of(token)["sub"] == ""
    assert pull_manifest(token_registry, path, token)[0] == 200
    assert call(token_registry, "POST", f"/v2/{path}/blobs/uploads/", token)[0] == 401
    private = token_of(get_token(token_registry, "repository:cloud-iot/hello:pull"))
    assert pull_manifest(token_registry, "cloud-iot/hello", private)[0] == 401
    anonymous = token_registry.token_requests[-2:]
    assert [r.user for r in anonymous] == [None, None]
    assert anonymous[0].granted == (f"repository:{path}:pull",)
    assert anonymous[1].granted == ()


def test_wrong_password_and_unknown_grant(token_registry: TokenRegistry) -> None:
    status, body = get_token(token_registry, "repository:cloud-iot/x:pull", user=PUSHER,
                             password="not-the-Pa55word")
    assert (status, body["error"]) == (401, "invalid_grant")
    status, body = post_token(token_registry, grant_type="password", username=PUSHER,
                              password="not-the-Pa55word")
    assert (status, body["error"]) == (401, "invalid_grant")
    status, body = post_token(token_registry, grant_type="authorization_code", code="x")
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    status, body = post_token(token_registry, grant_type="refresh_token",
                              refresh_token="never-issued")
    assert (status, body["error"]) == (401, "invalid_grant")
    assert [(r.grant, r.user, r.status) for r in token_registry.token_requests] == [
        ("GET", PUSHER, 401), ("password", PUSHER, 401), ("authorization_code", None, 400),
        ("refresh_token", None, 401)]
    assert "not-the-Pa55word" not in repr(token_registry.token_requests)


def test_oauth2_password_and_refresh_token_grants(token_registry: TokenRegistry) -> None:
    path = token_registry.fresh_path()
    scope = f"repository:{path}:pull,push"
    status, body = post_token(token_registry, grant_type="password", username=PUSHER,
                              password=PASSWORDS[PUSHER], access_type="offline", scope=scope)
    assert status == 200
    assert body["scope"] == scope
    assert body["expires_in"] == 300
    refresh = body["refresh_token"]
    assert isinstance(refresh, str)
    push_image(token_registry, path, token_of((status, body)))

    # docker config's identitytoken, as `docker login` stores one
    entry = token_registry.docker_config(PUSHER, identity=True)["auths"][token_registry.host]
    assert entry["auth"] == base64.b64encode(b"<token>:").decode()
    identity = entry["identitytoken"]
    for refresh_token in (identity, refresh):
        status, body = post_token(token_registry, grant_type="refresh_token",
                                  refresh_token=refresh_token, scope=f"repository:{path}:pull")
        assert status == 200
        assert body["refresh_token"] == refresh_token
        assert pull_manifest(token_registry, path, token_of((status, body)))[0] == 200
    assert [(r.method, r.grant, r.user, r.offline) for r in token_registry.token_requests] == [
        ("POST", "password", PUSHER, True), ("POST", "refresh_token", PUSHER, False),
        ("POST", "refresh_token", PUSHER, False)]
    assert refresh not in repr(token_registry.token_requests)
    # the GET flow's offline_token=true gives one too
    status, body = get_token(token_registry, user=READER, offline_token="true")
    assert status == 200
    status, body = post_token(token_registry, grant_type="refresh_token",
                              refresh_token=str(body["refresh_token"]), scope=scope)
    assert token_registry.token_requests[-1].user == READER
    assert body["scope"] == f"repository:{path}:pull"


def test_the_registry_allows_sixty_seconds_of_leeway(token_registry: TokenRegistry) -> None:
    """What the leeway trick rests on, checked against this docker-registry."""
    now = int(time.time())
    tokens = token_registry.tokens

    def status(token: str) -> int:
        return call(token_registry, "GET", "/v2/", token)[0]

    assert status(tokens.mint("t", [], iat=now - 200, exp=now - LEEWAY + 5)) == 200
    assert status(tokens.mint("t", [], iat=now - 200, exp=now - LEEWAY - 5)) == 401
    assert status(tokens.mint("t", [], nbf=now + LEEWAY - 5)) == 200
    assert status(tokens.mint("t", [], nbf=now + LEEWAY + 5)) == 401


def test_leeway_trick_expires_tokens_when_expires_in_says(token_registry: TokenRegistry) -> None:
    path = token_registry.fresh_path()
    with token_registry.expiry(61, leeway_trick=True):
        status, body = get_token(token_registry, f"repository:{path}:pull", user=READER)
    claims = claims_of(token_of((status, body)))
    assert body["expires_in"] == 61
    assert claims["exp"] == int(str(claims["iat"])) + 1  # the registry's end: iat + 61
    with token_registry.expiry(61, lifetime=5):  # advertised 61 s, dead after 5 s
        status, body = get_token(token_registry, f"repository:{path}:pull", user=READER)
    claims = claims_of(token_of((status, body)))
    assert (body["expires_in"], claims["exp"]) == (61, int(str(claims["iat"])) + 5 - LEEWAY)

    with token_registry.expiry(2, leeway_trick=True):
        start = time.monotonic()
        token = token_of(get_token(token_registry, f"repository:{path}:pull", user=READER))
    claims = claims_of(token)
    assert claims["exp"] == int(str(claims["iat"])) + 2 - LEEWAY
    assert call(token_registry, "GET", "/v2/", token)[0] == 200
    deadline = start + 10
    while (answer := call(token_registry, "GET", "/v2/", token))[0] == 200:
        assert time.monotonic() < deadline, "the token never expired"
        time.sleep(0.05)  # polling interval while waiting for the expiry
    elapsed = time.monotonic() - start
    assert 0.5 < elapsed < 3.5, elapsed
    assert 'error="invalid_token"' in (answer[1].getheader("WWW-Authenticate") or "")
    assert token_registry.tokens.ttl == 300  # restored after the block


@pytest.mark.parametrize(("algorithm", "key_header"),
                         [("ES256", "x5c"), ("RS256", "kid"), ("RS256", "x5c")])
def test_other_signatures_are_accepted(token_registry: TokenRegistry, algorithm: str,
                                       key_header: str) -> None:
    token_registry.tokens.algorithm = algorithm  # type: ignore[assignment]
    token_registry.tokens.key_header = key_header  # type: ignore[assignment]
    token = token_of(get_token(token_registry, "repository:cloud-iot/x:pull", user=PUSHER))
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == algorithm
    assert key_header in header
    assert call(token_registry, "GET", "/v2/", token)[0] == 200


def test_untrusted_or_misaddressed_tokens_are_refused(token_registry: TokenRegistry) -> None:
    tokens = token_registry.tokens
    assert call(token_registry, "GET", "/v2/", tokens.mint("t", [], audience="other"))[0] == 401
    assert call(token_registry, "GET", "/v2/", tokens.mint("t", [], issuer="other"))[0] == 401
    forged = tokens.mint("t", [Grant("repository", "cloud-iot/x", ("pull",))])
    head, claims, signature = forged.split(".")
    assert call(token_registry, "GET", "/v2/", f"{head}.{claims}x.{signature}")[0] == 401
    assert libtrust_key_id(tokens._keys["ES256"].key.public_key()) == json.loads(
        base64.urlsafe_b64decode(head + "=="))["kid"]


def test_token_server_outage_is_recorded(token_registry: TokenRegistry) -> None:
    token_registry.tokens.fail = 1
    assert get_token(token_registry, user=PUSHER)[0] == 503
    assert get_token(token_registry, user=PUSHER)[0] == 200
    assert [r.status for r in token_registry.token_requests] == [503, 200]


def test_secure_token_registry(secure_token_registry: TokenRegistry) -> None:
    assert secure_token_registry.realm.startswith("https://127.0.0.1:")
    assert secure_token_registry.ca is not None
    path = secure_token_registry.fresh_path()
    token = token_of(get_token(secure_token_registry, f"repository:{path}:pull,push",
                               user=PUSHER))
    manifest = push_image(secure_token_registry, path, token)
    assert secure_token_registry.manifest(path, "1.0")[1] == manifest
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(secure_token_registry.realm, timeout=5)  # noqa: S310
