"""TLS with our own CA, htpasswd (bcrypt) auth, and where credentials come from."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from esp32tasks.plan import STATE_FILE
from esp32tasks.receipts import IndexReceipt
from tests.servers.registry import PASSWORD, USER, RegistryServer, configure
from tests.support.repo import TARGETS, Repo, receipt

pytestmark = pytest.mark.integration

PATH = "cloud-iot/hello"
WRONG = "not-the-Pa55word-7f3a9c"


def secure(repo: Repo, server: RegistryServer) -> None:
    """[registry] with the test CA committed in the repo as ca_bundle."""
    assert server.ca is not None
    shutil.copy(server.ca, repo.path / "registry-ca.pem")
    configure(repo, server, ca_bundle="registry-ca.pem")


def pushed(repo: Repo, server: RegistryServer) -> bool:
    digest, _ = server.manifest(PATH, "hello-1.0.0")
    return bool(digest == receipt(repo, "index", IndexReceipt).index.digest)


def docker_config(directory: Path, config: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def helper(bin_dir: Path, name: str, log: Path, answer: str, code: int = 0) -> None:
    """A stand-in ``docker-credential-<name>`` that records how it was called."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(' '.join(sys.argv[1:]) + ' ' + sys.stdin.read() + '\\n')\n"
        f"sys.stdout.write({answer!r})\n"
        f"sys.exit({code})\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def with_path(repo: Repo, bin_dir: Path) -> None:
    repo.env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def test_tls_and_basic_auth_from_env_sent_up_front(
        repo: Repo, secure_registry: RegistryServer) -> None:
    secure(repo, secure_registry)
    repo.env.update({"ESP32TASKS_REGISTRY_USER": USER, "ESP32TASKS_REGISTRY_PASSWORD": PASSWORD})
    run = repo.doit("release")
    assert {f"push:{t}" for t in TARGETS} | {"push-index"} <= set(run.executed)
    assert pushed(repo, secure_registry)
    sent = secure_registry.requests()
    assert sent
    # preemptive: not one request was sent without credentials and answered 401
    assert [r for r in sent if r.status == 401] == []


def test_wrong_password_fails_at_once_and_leaks_nowhere(
        repo: Repo, secure_registry: RegistryServer) -> None:
    secure(repo, secure_registry)
    repo.env.update({"ESP32TASKS_REGISTRY_USER": USER, "ESP32TASKS_REGISTRY_PASSWORD": WRONG})
    run = repo.doit("release", check=False)
    assert run.code != 0
    lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert lines == [f"error: preflight: authentication failed for registry "
                     f"{secure_registry.host} (401 to HEAD /v2/{PATH}/manifests/"
                     f"{receipt(repo, 'index', IndexReceipt).tag}); check the user "
                     "and password (from ESP32TASKS_REGISTRY_USER/ESP32TASKS_REGISTRY_PASSWORD)"]
    assert [r.status for r in secure_registry.requests()] == [401]  # one request, no retry
    state = repo.path / STATE_FILE
    assert state.is_file()  # the doit state is among the files checked
    files = sorted({p for p in (repo.path / "build").rglob("*") if p.is_file()} | {state})
    secrets = (WRONG.encode(), b64(f"{USER}:{WRONG}").encode())
    for secret in secrets:
        assert secret not in run.output.encode()
        for path in files:
            assert secret not in path.read_bytes(), path


def test_no_credentials_says_how_to_give_some(
        repo: Repo, secure_registry: RegistryServer) -> None:
    secure(repo, secure_registry)
    run = repo.doit("release", check=False)
    assert run.code != 0
    assert f"registry {secure_registry.host} wants credentials" in run.stderr
    assert "ESP32TASKS_REGISTRY_USER" in run.stderr


def test_unknown_ca_is_a_tls_error(repo: Repo, secure_registry: RegistryServer) -> None:
    configure(repo, secure_registry)  # TLS, but the system CAs do not know ours
    repo.env.update({"ESP32TASKS_REGISTRY_USER": USER, "ESP32TASKS_REGISTRY_PASSWORD": PASSWORD})
    run = repo.doit("release", check=False)
    assert run.code != 0
    assert f"error: preflight: TLS with registry {secure_registry.host} failed " \
        "(certificate verify failed); check [registry] ca_bundle" in run.stderr
    assert secure_registry.requests() == []


def test_tls_is_the_default(repo: Repo, registry: RegistryServer) -> None:
    configure(repo, registry, insecure=False)  # a plain-HTTP registry
    run = repo.doit("release", check=False)
    assert run.code != 0
    assert f"registry {registry.host}" in run.stderr
    assert "insecure = true" in run.stderr


def test_docker_config_auths(repo: Repo, secure_registry: RegistryServer,
                             tmp_path: Path) -> None:
    secure(repo, secure_registry)
    config = docker_config(tmp_path / "dockercfg", {
        "auths": {secure_registry.host: {"auth": b64(f"{USER}:{PASSWORD}")}}})
    before = (config.read_bytes(), config.stat().st_mtime_ns)
    repo.env["DOCKER_CONFIG"] = str(config.parent)
    repo.doit("release")
    assert pushed(repo, secure_registry)
    assert (config.read_bytes(), config.stat().st_mtime_ns) == before  # read-only
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.json"]


def test_home_docker_config_with_a_url_key(repo: Repo,
                                           secure_registry: RegistryServer) -> None:
    secure(repo, secure_registry)
    home = repo.path.parent / "home"  # the repo fixture's HOME
    docker_config(home / ".docker", {
        "auths": {f"https://{secure_registry.host}/v1/": {"auth": b64(f"{USER}:{PASSWORD}")}}})
    repo.doit("release")
    assert pushed(repo, secure_registry)


def test_env_credentials_win_over_docker_config(repo: Repo,
                                                secure_registry: RegistryServer,
                                                tmp_path: Path) -> None:
    secure(repo, secure_registry)
    docker_config(tmp_path / "dockercfg", {
        "auths": {secure_registry.host: {"auth": b64(f"{USER}:{WRONG}")}}})
    repo.env.update({"DOCKER_CONFIG": str(tmp_path / "dockercfg"),
                     "ESP32TASKS_REGISTRY_USER": USER, "ESP32TASKS_REGISTRY_PASSWORD": PASSWORD})
    repo.doit("release")
    assert pushed(repo, secure_registry)


def test_cred_helper_wins_over_auths(repo: Repo, secure_registry: RegistryServer,
                                     tmp_path: Path) -> None:
    secure(repo, secure_registry)
    log = tmp_path / "helper.log"
    helper(tmp_path / "bin", "teststore", log, json.dumps(
        {"ServerURL": secure_registry.host, "Username": USER, "Secret": PASSWORD}))
    with_path(repo, tmp_path / "bin")
    docker_config(tmp_path / "dockercfg", {
        "auths": {secure_registry.host: {"auth": b64(f"{USER}:{WRONG}")}},
        "credHelpers": {secure_registry.host: "teststore"}})
    repo.env["DOCKER_CONFIG"] = str(tmp_path / "dockercfg")
    repo.doit("release")
    assert pushed(repo, secure_registry)
    calls = log.read_text().splitlines()
    # docker's protocol: `get`, the server on stdin; once per run: the push tasks of one
    # doit run share the client
    assert calls == [f"get {secure_registry.host}"]


def test_creds_store(repo: Repo, secure_registry: RegistryServer, tmp_path: Path) -> None:
    secure(repo, secure_registry)
    log = tmp_path / "helper.log"
    helper(tmp_path / "bin", "desktop", log, json.dumps(
        {"ServerURL": secure_registry.host, "Username": USER, "Secret": PASSWORD}))
    with_path(repo, tmp_path / "bin")
    docker_config(tmp_path / "dockercfg", {"credsStore": "desktop"})
    repo.env["DOCKER_CONFIG"] = str(tmp_path / "dockercfg")
    repo.doit("release")
    assert pushed(repo, secure_registry)
    assert log.read_text().splitlines()[0] == f"get {secure_registry.host}"


def test_helper_without_an_entry_means_anonymous(repo: Repo,
                                                 secure_registry: RegistryServer,
                                                 tmp_path: Path) -> None:
    secure(repo, secure_registry)
    helper(tmp_path / "bin", "desktop", tmp_path / "helper.log",
           "credentials not found in native keychain\n", code=1)
    with_path(repo, tmp_path / "bin")
    docker_config(tmp_path / "dockercfg", {"credsStore": "desktop"})
    repo.env["DOCKER_CONFIG"] = str(tmp_path / "dockercfg")
    run = repo.doit("release", check=False)
    assert run.code != 0
    assert f"registry {secure_registry.host} wants credentials" in run.stderr


def test_missing_helper_is_named(repo: Repo, secure_registry: RegistryServer,
                                 tmp_path: Path) -> None:
    secure(repo, secure_registry)
    docker_config(tmp_path / "dockercfg", {"credsStore": "nosuchhelper"})
    repo.env["DOCKER_CONFIG"] = str(tmp_path / "dockercfg")
    run = repo.doit("release", check=False)
    assert run.code != 0
    assert "credential helper 'docker-credential-nosuchhelper' (from the docker config) is " \
        "not on PATH" in run.stderr
    assert secure_registry.requests() == []
