"""The Bearer token flow of the transport, with a scripted session (no sockets): what goes
to the realm, what comes back, and every way it can go wrong in one line."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from esp32tasks.config import RegistryConfig
from esp32tasks.errors import RegistryAuthError, RegistryError, RegistryUnreachable
from esp32tasks.registry.client import Client
from esp32tasks.registry.credentials import Credentials
from esp32tasks.registry.http import Transport

HOST = "registry.test"
URL = f"https://{HOST}/v2/cloud-iot/hello/manifests/t"
REALM = "https://auth.test/token"
CHALLENGE = f'Bearer realm="{REALM}",service="registry.test"'
SCOPE = "repository:cloud-iot/hello:pull,push"
CREDS = Credentials("pusher", "s3cr3t-pw", "ESP32TASKS_REGISTRY_USER/ESP32TASKS_REGISTRY_PASSWORD")


def answer(status: int, body: Any = b"", **headers: str) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r.headers.update(headers)
    r._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
    r.raw = io.BytesIO(r._content)
    return r


class Session:
    def __init__(self, script: list[requests.Response]) -> None:
        self.script: Iterator[requests.Response] = iter(script)
        self.calls: list[dict[str, Any]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self.calls.append({"method": method, "url": url, **kwargs})
        return next(self.script)


def transport(script: list[requests.Response], credentials: Credentials | None = CREDS,
              host: str = HOST, insecure: bool = False) -> tuple[Transport, Session]:
    t = Transport(host=host, insecure=insecure, verify=True, timeout=5.0,
                  credentials=credentials, what_to_check="the registry", scope=SCOPE,
                  sleep=lambda _: None)
    session = Session(script)
    t.session = session
    return t, session


def test_a_bearer_challenge_brings_one_token_for_the_run() -> None:
    t, session = transport([
        answer(401, **{"WWW-Authenticate": CHALLENGE}),
        answer(200, {"token": "tok-1", "expires_in": 300}),
        answer(200), answer(200)])
    assert t.do_request(URL, "HEAD").status_code == 200
    assert t.do_request(URL, "HEAD").status_code == 200
    first, token, retried, second = session.calls
    assert first["headers"]["Authorization"] == CREDS.basic()  # this host's, up front
    assert token["method"] == "GET"
    parts = urlsplit(token["url"])
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REALM
    assert parse_qs(parts.query) == {"service": ["registry.test"], "scope": [SCOPE],
                                     "account": ["pusher"]}
    assert token["headers"]["Authorization"] == CREDS.basic()
    assert retried["headers"]["Authorization"] == "Bearer tok-1"
    assert second["headers"]["Authorization"] == "Bearer tok-1"


def test_anonymous_and_identity_token_requests() -> None:
    t, session = transport([answer(401, **{"WWW-Authenticate": CHALLENGE}),
                            answer(200, {"access_token": "anon"}), answer(200)], None)
    t.do_request(URL, "GET")
    assert "Authorization" not in session.calls[0]["headers"]
    assert "Authorization" not in session.calls[1]["headers"]
    assert session.calls[2]["headers"]["Authorization"] == "Bearer anon"

    identity = Credentials("", "", "docker config", identity_token="refresh-me")
    t, session = transport([answer(401, **{"WWW-Authenticate": CHALLENGE}),
                            answer(200, {"access_token": "oauth"}), answer(200)], identity)
    t.do_request(URL, "GET")
    post = session.calls[1]
    assert (post["method"], post["url"]) == ("POST", REALM)
    assert parse_qs(post["data"]) == {"grant_type": ["refresh_token"], "client_id": ["esp32tasks"],
                                      "refresh_token": ["refresh-me"],
                                      "service": ["registry.test"], "scope": [SCOPE]}
    assert session.calls[2]["headers"]["Authorization"] == "Bearer oauth"


def test_a_realm_on_plain_http_for_an_https_registry_is_refused() -> None:
    t, session = transport([answer(401, **{"WWW-Authenticate":
                                           'Bearer realm="http://auth.test/token"'})])
    with pytest.raises(RegistryAuthError) as caught:
        t.do_request(URL, "HEAD")
    assert str(caught.value) == (
        "registry registry.test sends us for tokens to http://auth.test/token, plain HTTP; "
        "refusing to send credentials unencrypted (if the registry itself is plain HTTP, set "
        "[registry] insecure = true)")
    assert len(session.calls) == 1  # nothing went to the realm


@pytest.mark.parametrize(("token_answer", "message"), [
    (answer(200, b"<html>login</html>", **{"Content-Type": "text/html"}),
     "the token server https://auth.test/token of registry registry.test answered 18 bytes "
     "of text/html holding no token"),
    (answer(200, {"nothing": "here"}, **{"Content-Type": "application/json"}),
     "the token server https://auth.test/token of registry registry.test answered 19 bytes "
     "of application/json holding no token: it is not a token server, or a broken one; ask "
     "the registry's operators"),
    (answer(401, {"error": "invalid_grant"}),
     "the token server https://auth.test/token of registry registry.test refused the user "
     "and password from ESP32TASKS_REGISTRY_USER/ESP32TASKS_REGISTRY_PASSWORD (401); check "
     "them (or `docker login` again)"),
    (answer(500, b"oops"),
     "the token server https://auth.test/token of registry registry.test answered 500 "),
])
def test_a_token_server_that_fails_is_one_line_without_secrets(
        token_answer: requests.Response, message: str) -> None:
    t, _ = transport([answer(401, **{"WWW-Authenticate": CHALLENGE}), token_answer])
    with pytest.raises((RegistryAuthError, RegistryError)) as caught:
        t.do_request(URL, "HEAD")
    assert message in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_a_scope_not_granted_is_said_once_a_fresh_token_is_refused_too() -> None:
    refused = f'{CHALLENGE},scope="{SCOPE}",error="insufficient_scope"'
    t, session = transport([
        answer(401, **{"WWW-Authenticate": CHALLENGE}),
        answer(200, {"token": "pull-only"}),
        answer(401, **{"WWW-Authenticate": refused}),
        answer(200, {"token": "pull-only-again"}),
        answer(401, **{"WWW-Authenticate": refused})])
    with pytest.raises(RegistryAuthError) as caught:
        t.do_request("https://registry.test/v2/cloud-iot/hello/blobs/uploads/", "POST")
    assert str(caught.value) == (
        "registry registry.test refused POST /v2/cloud-iot/hello/blobs/uploads/: the token "
        f"server {REALM} did not grant {SCOPE} to the credentials from "
        "ESP32TASKS_REGISTRY_USER/ESP32TASKS_REGISTRY_PASSWORD (insufficient_scope); they may "
        "not push to this repository: ask its operators for push access, or use other "
        "credentials")
    assert len(session.calls) == 5


def test_an_unreachable_realm_is_named() -> None:
    t, session = transport([answer(401, **{"WWW-Authenticate": CHALLENGE})])
    script = session.script

    def request(method: str, url: str, **kwargs: Any) -> requests.Response:
        session.calls.append({"method": method, "url": url, **kwargs})
        if url.startswith(REALM):
            raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")
        return next(script)

    session.request = request  # type: ignore[method-assign]
    with pytest.raises(RegistryUnreachable) as caught:
        t.do_request(URL, "HEAD")
    assert str(caught.value) == (
        f"cannot reach the token server {REALM} that registry registry.test named "
        "(Connection refused); check that it is up and reachable from here")


def test_a_refused_connection_names_where_the_repository_came_from(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = RegistryConfig(repository=f"127.0.0.1:{port}/x/y", insecure=True,
                            source="ESP32TASKS_REGISTRY", timeout=2.0,
                            docker_config=str(tmp_path / "no-config.json"))
    client = Client(config, tmp_path)
    client.transport.sleep = lambda _: None
    with pytest.raises(RegistryUnreachable) as caught:
        client.manifest_digest("t")
    assert str(caught.value) == (
        f"cannot reach registry 127.0.0.1:{port} over http (Connection refused); check the "
        f"registry in ESP32TASKS_REGISTRY (127.0.0.1:{port}) is running and listening there, "
        "and that the scheme is right (insecure = true for plain HTTP)")
