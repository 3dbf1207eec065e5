"""Releases to a registry with token auth: distribution's ``auth: token`` validates every
token our own spec-following token server (tests/servers/token.py) signs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from esp32tasks.receipts import AppReceipt
from tests.servers.registry import FlakyProxy, configure
from tests.servers.token import PASSWORDS, PUSHER, READER, TokenRegistry
from tests.support.registry_wire import INDEX_TAG
from tests.support.repo import TARGETS, Repo, receipt

pytestmark = pytest.mark.integration


def login(repo: Repo, user: str | None) -> None:
    for name in ("ESP32TASKS_REGISTRY_USER", "ESP32TASKS_REGISTRY_PASSWORD"):
        repo.env.pop(name, None)
    if user is not None:
        repo.env.update({"ESP32TASKS_REGISTRY_USER": user,
                         "ESP32TASKS_REGISTRY_PASSWORD": PASSWORDS[user]})


def grants(registry: TokenRegistry) -> Counter[str]:
    return Counter(f"{r.grant} {r.user or 'anonymous'} {','.join(r.granted)}"
                   for r in registry.token_requests)


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_release_with_bearer_tokens_is_pulled_back_byte_for_byte(
        repo: Repo, token_registry: TokenRegistry, tmp_path: Path) -> None:
    path = token_registry.fresh_path()
    configure(repo, token_registry, path)
    login(repo, PUSHER)
    run = repo.doit("release")
    assert {f"push:{t}" for t in TARGETS} | {"push-index"} <= set(run.executed)
    scope = f"repository:{path}:pull,push"
    # one token for the run: the first 401 taught the scheme, every later request had it
    assert grants(token_registry) == Counter({f"GET {PUSHER} {scope}": 1})
    sent = token_registry.requests()
    assert sum(r.status == 401 for r in sent) == 1, "\n".join(map(str, sent))

    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (ci/setup installs it)")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    for target in TARGETS:
        layout = tmp_path / f"pulled-{target}"
        subprocess.run(
            ["skopeo", "--policy", str(policy), "copy", "--src-tls-verify=false",
             "--src-creds", f"{PUSHER}:{PASSWORDS[PUSHER]}", "--override-os", "custom",
             "--override-arch", target, f"docker://{token_registry.host}/{path}:{INDEX_TAG}",
             f"oci:{layout}:{target}"], check=True, capture_output=True, timeout=120)
        index = json.loads((layout / "index.json").read_text())
        manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0][
            "digest"].split(":")[1]).read_text())
        app = receipt(repo, f"app-{target}", AppReceipt)
        layer = manifest["layers"][0]["digest"].split(":")[1]
        pulled = (layout / "blobs" / "sha256" / layer).read_bytes()
        ours = (repo.path / "build" / "oci" / "blobs" / "sha256" / layer).read_bytes()
        assert pulled == ours, target
        assert app.app.sha256  # the layer holds this app (verify checks the file itself)

    # the no-op: no request at all, no token
    before = len(token_registry.token_requests)
    assert repo.doit("release").executed == []
    assert len(token_registry.token_requests) == before
    # one target changed: one token again, for its push and the index
    repo.edit("examples/hello/sdkconfig.defaults.esp32c6", '"Hello from', '"Hello again from')
    repo.commit("esp32c6 greets differently")
    repo.env["ESP32TASKS_FORCE"] = "1"  # the index tag moves
    run = repo.doit("release")
    assert "push:esp32c6" in run.executed
    assert len(token_registry.token_requests) == before + 1


def test_verify_pulls_a_public_repository_anonymously(
        repo: Repo, token_registry: TokenRegistry) -> None:
    path = token_registry.fresh_path("public/hello")
    configure(repo, token_registry, path)
    login(repo, PUSHER)
    repo.doit("release")
    login(repo, None)
    repo.env["DOCKER_CONFIG"] = str(repo.path.parent / "no-docker-config")
    before = len(token_registry.token_requests)
    run = repo.doit("verify")
    assert "esp32c3: ok" in run.output, run.output
    anonymous = token_registry.token_requests[before:]
    assert {(r.user, r.granted) for r in anonymous} == {(None, (f"repository:{path}:pull",))}


def held_at_the_index(registry: TokenRegistry, seconds: float) -> FlakyProxy:
    """A proxy in front of the registry that holds the answer to push-index's HEAD (just
    before the index PUT, the release's last request) until ``seconds`` after the run's
    first token: the release outlives it."""
    proxy = FlakyProxy(registry)
    wait = threading.Event()

    def hold(method: str, path: str, status: int) -> None:
        if method == "HEAD" and path.endswith(f"/manifests/{INDEX_TAG}") and status != 401:
            first = registry.token_requests[0].at
            wait.wait(max(0.0, first + seconds - time.time()))

    proxy.on_answer = hold
    return proxy


def test_a_token_that_expires_mid_release_is_renewed(
        repo: Repo, token_registry: TokenRegistry) -> None:
    """Tokens advertise 61 s but the registry refuses them after about 1: the refusal
    brings a fresh token, and the release finishes."""
    proxy = held_at_the_index(token_registry, 2.5)
    try:
        path = token_registry.fresh_path()
        configure(repo, proxy.host, path, insecure=True)
        login(repo, PUSHER)
        repo.doit("build")
        with token_registry.expiry(61, lifetime=1):
            run = repo.doit("release")
    finally:
        proxy.close()
    assert "push-index" in run.executed
    tokens = len(token_registry.token_requests)
    assert tokens >= 2  # at least the index PUT's dead token was replaced
    answered = token_registry.requests()
    refused = [i for i, r in enumerate(answered) if r.status == 401]
    # Learning Bearer, then a refusal for each dead token: every token answers a refusal
    # (none is fetched early: they advertise 61 s). Requests in flight together may share
    # one dead token, and one renewal serves them all, so refusals may outnumber tokens.
    assert tokens <= len(refused)
    for i in refused:  # and every refused request went through on its retry
        r = answered[i]
        assert any(later.method == r.method and later.path == r.path
                   and later.status != 401 for later in answered[i + 1:]), r


def test_the_leeway_trick_is_met_by_honouring_expires_in(
        repo: Repo, token_registry: TokenRegistry) -> None:
    """exp = iat + TTL - 60 while expires_in = TTL (distribution adds 60 s of leeway): a
    client that renews before expires_in runs out never sends a dead token."""
    proxy = held_at_the_index(token_registry, 2.5)
    try:
        path = token_registry.fresh_path()
        configure(repo, proxy.host, path, insecure=True)
        login(repo, PUSHER)
        repo.doit("build")
        with token_registry.expiry(3, leeway_trick=True):
            run = repo.doit("release")
    finally:
        proxy.close()
    assert "push-index" in run.executed
    assert len(token_registry.token_requests) >= 2  # renewed before the first died
    assert len([r for r in token_registry.requests() if r.status == 401]) == 1  # learning


def test_a_pull_only_user_is_refused_before_anything_is_written(
        repo: Repo, token_registry: TokenRegistry) -> None:
    path = token_registry.fresh_path()
    configure(repo, token_registry, path)
    login(repo, READER)
    run = repo.doit("release", check=False)
    assert run.code != 0
    [line] = errors(run.stderr)
    # the preflight's HEAD authenticates (a token is granted, for pull only: tokens are
    # opaque, so what it may do shows at the first write), and no write goes through
    assert re.match(r"error: push:esp32(c3|c6|h2): registry ", line), line
    assert (f"the token server {token_registry.realm} did not grant "
            f"repository:{path}:pull,push to the credentials from ESP32TASKS_REGISTRY_USER/"
            "ESP32TASKS_REGISTRY_PASSWORD (insufficient_scope); they may not push to this "
            "repository") in line
    assert PASSWORDS[READER] not in run.output
    written = [r for r in token_registry.requests() if r.method in ("POST", "PUT", "PATCH")
               and r.status < 300]
    assert written == []
    assert not (repo.path / "build/receipts/push-esp32c3.json").exists()


def test_an_identity_token_goes_through_the_oauth2_refresh_grant(
        repo: Repo, token_registry: TokenRegistry, tmp_path: Path) -> None:
    path = token_registry.fresh_path()
    configure(repo, token_registry, path)
    login(repo, None)
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps(token_registry.docker_config(
        PUSHER, identity=True)))
    repo.env["DOCKER_CONFIG"] = str(config)
    run = repo.doit("release")
    assert "push-index" in run.executed
    assert [(r.method, r.grant) for r in token_registry.token_requests] == [
        ("POST", "refresh_token")]
    identity = json.loads((config / "config.json").read_text())["auths"][
        token_registry.host]["identitytoken"]
    for leftover in (repo.path / "build").rglob("*"):
        if leftover.is_file():
            assert identity.encode() not in leftover.read_bytes(), leftover


def test_a_wrong_password_is_the_token_servers_refusal_in_one_line(
        repo: Repo, token_registry: TokenRegistry) -> None:
    path = token_registry.fresh_path()
    configure(repo, token_registry, path)
    repo.env.update({"ESP32TASKS_REGISTRY_USER": PUSHER,
                     "ESP32TASKS_REGISTRY_PASSWORD": "wrong-Pa55word"})
    run = repo.doit("release", check=False)
    assert errors(run.stderr) == [
        f"error: preflight: the token server {token_registry.realm} of registry "
        f"{token_registry.host} refused the user and password from "
        "ESP32TASKS_REGISTRY_USER/ESP32TASKS_REGISTRY_PASSWORD (401); check them (or "
        "`docker login` again)"]
    assert "wrong-Pa55word" not in run.output
