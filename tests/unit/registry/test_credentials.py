"""Registry credentials: our login (from config) first, else the docker config, read-only."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path, PurePosixPath

import pytest

from esp32tasks.config import Builder, Login, Project, RegistryConfig, Release, apply_overrides
from esp32tasks.errors import ConfigError, RegistryAuthError
from esp32tasks.registry.credentials import Credentials, lookup

HOST = "registry.test:5000"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_config(directory: Path, config: object) -> str:
    """The docker config file ``directory/config.json``, as config resolves it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return str(directory / "config.json")


def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, stdout: str,
           code: int = 0) -> None:
    """A ``docker-credential-<name>`` on PATH that records its stdin and prints ``stdout``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"#!/bin/sh\ncat > {tmp_path}/stdin-{name}\nprintf '%s' '{stdout}'\n"
                      f"exit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


@pytest.fixture(autouse=True)
def _no_helpers_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credential helper of this machine answers a test (helpers are found on PATH)."""
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))


def test_our_login_comes_first(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {HOST: {"auth": b64("file:pw")}},
                                   "credsStore": "never-run"})
    creds = lookup(HOST, Login("env", "pw2"), path)
    assert creds is not None
    assert (creds.username, creds.password, creds.source) == \
        ("env", "pw2", "ESP32TASKS_REGISTRY_USER/ESP32TASKS_REGISTRY_PASSWORD")


def test_password_is_not_in_repr() -> None:
    creds = Credentials("u", "hunter2", "test")
    assert "hunter2" not in repr(creds)
    assert creds.basic() == "Basic " + b64("u:hunter2")
    assert "hunter2" not in repr(Login("u", "hunter2"))


@pytest.mark.parametrize("key", [HOST, f"https://{HOST}", f"https://{HOST}/v1/",
                                 f"http://{HOST}/v2/"])
def test_auths_entry_by_docker_key_forms(tmp_path: Path, key: str) -> None:
    path = write_config(tmp_path, {"auths": {key: {"auth": b64("u:p:with:colons")}}})
    creds = lookup(HOST, None, path)
    assert creds is not None
    assert (creds.username, creds.password) == ("u", "p:with:colons")
    assert creds.source == f"docker config {path} auths['{HOST}']"


def test_auths_username_password_fields(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {HOST: {"username": "u", "password": "p"}}})
    creds = lookup(HOST, None, path)
    assert creds is not None
    assert (creds.username, creds.password) == ("u", "p")


def test_other_hosts_do_not_match(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {"registry.test:5001": {"auth": b64("u:p")},
                                             "registry.test": {"auth": b64("u:p")}}})
    assert lookup(HOST, None, path) is None


def test_no_config_file_is_anonymous(tmp_path: Path) -> None:
    assert lookup(HOST, None, str(tmp_path / "none" / "config.json")) is None


def config_for(environ: dict[str, str]) -> RegistryConfig:
    """The registry settings config makes from ``environ`` (the docker config path)."""
    release = Release(path=Path("/repo/targets.toml"),
                      project=Project(name="hello", app_type="hello", version="1.0.0",
                                      app_dir=PurePosixPath(".")),
                      builder=Builder(kind="command", command=("make",)), targets=(),
                      registry=RegistryConfig(repository=f"{HOST}/cloud-iot/hello"))
    registry = apply_overrides(release, environ, {}).registry
    assert registry is not None
    return registry


def test_docker_config_directory_as_config_resolves_it(tmp_path: Path) -> None:
    write_config(tmp_path / "dc", {"auths": {HOST: {"auth": b64("d:p")}}})
    registry = config_for({"DOCKER_CONFIG": str(tmp_path / "dc"), "HOME": str(tmp_path)})
    assert registry.docker_config == str(tmp_path / "dc" / "config.json")
    creds = lookup(registry.host, registry.login, registry.docker_config)
    assert creds is not None
    assert creds.username == "d"


def test_home_is_the_fallback(tmp_path: Path) -> None:
    write_config(tmp_path / ".docker", {"auths": {HOST: {"auth": b64("h:p")}}})
    registry = config_for({"HOME": str(tmp_path)})
    assert registry.docker_config == str(tmp_path / ".docker" / "config.json")
    creds = lookup(registry.host, registry.login, registry.docker_config)
    assert creds is not None
    assert creds.username == "h"


def test_bad_base64_names_the_file_not_the_value(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {HOST: {"auth": "%%%not-base64"}}})
    with pytest.raises(ConfigError) as info:
        lookup(HOST, None, path)
    assert "config.json: auths['registry.test:5000'].auth is not base64" in str(info.value)
    assert str(info.value) == (f"{path}: auths['registry.test:5000'].auth is not base64 of "
                               "user:password; run `docker login` again")
    assert "%%%" not in str(info.value)


def test_invalid_json(tmp_path: Path) -> None:
    tmp_path.joinpath("config.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot read the docker config") as info:
        lookup(HOST, None, str(tmp_path / "config.json"))
    assert str(info.value) == (f"{tmp_path / 'config.json'}: cannot read the docker config "
                               "(JSONDecodeError); fix the file or set DOCKER_CONFIG to another "
                               "directory")


def test_cred_helper_for_the_host_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, {"auths": {HOST: {"auth": b64("file:pw")}},
                                   "credsStore": "other",
                                   "credHelpers": {HOST: "mine"}})
    helper(tmp_path, monkeypatch, "mine", json.dumps(
        {"ServerURL": HOST, "Username": "helped", "Secret": "s"}))
    creds = lookup(HOST, None, path)
    assert creds is not None
    assert (creds.username, creds.password, creds.source) == \
        ("helped", "s", "docker-credential-mine")
    assert (tmp_path / "stdin-mine").read_text() == HOST


def test_creds_store_for_other_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, {"credsStore": "store",
                                   "credHelpers": {"elsewhere.test": "mine"}})
    helper(tmp_path, monkeypatch, "store", json.dumps({"Username": "st", "Secret": "s"}))
    creds = lookup(HOST, None, path)
    assert creds is not None
    assert creds.username == "st"


def test_helper_not_found_entry_is_anonymous(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, {"credsStore": "store"})
    helper(tmp_path, monkeypatch, "store", "credentials not found in native keychain", 1)
    assert lookup(HOST, None, path) is None


def test_helper_failure_is_an_auth_error(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, {"credsStore": "store"})
    helper(tmp_path, monkeypatch, "store", "keyring locked; secret was s3cr3t-token", 1)
    with pytest.raises(RegistryAuthError) as info:
        lookup(HOST, None, path)
    assert str(info.value) == (
        "credential helper 'docker-credential-store' failed for registry.test:5000 (exit "
        "code 1); run `echo registry.test:5000 | docker-credential-store get` to see why "
        "(its output is not repeated here)")
    assert "s3cr3t" not in str(info.value)


def test_identity_tokens_are_held_for_the_token_flow(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, {"credsStore": "store"})
    helper(tmp_path, monkeypatch, "store",
           json.dumps({"Username": "<token>", "Secret": "s3cr3t-id"}))
    found = lookup(HOST, None, path)
    assert found is not None
    assert (found.username, found.password, found.identity_token) == ("", "", "s3cr3t-id")
    assert "s3cr3t" not in repr(found)
    path = write_config(tmp_path, {"auths": {HOST: {"identitytoken": "id-token"}}})
    found = lookup(HOST, None, path)
    assert found is not None
    assert found.identity_token == "id-token"
    assert "id-token" not in repr(found)


def test_missing_helper(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"credsStore": "absent"})
    with pytest.raises(RegistryAuthError, match=r"'docker-credential-absent' .* not on PATH"):
        lookup(HOST, None, path)


def test_lookup_never_writes(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {HOST: {"auth": b64("u:p")}}})
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    lookup(HOST, None, path)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before

