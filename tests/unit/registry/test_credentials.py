"""Registry settings overrides, docker credentials lookup, and the layer reader of verify."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from esp32tasks import dockercreds, oci
from esp32tasks.config import RegistryConfig
from esp32tasks.errors import ConfigError, RegistryAuthError
from esp32tasks.registry import resolve
from esp32tasks.verify import firmware_in_layer

HOST = "registry.test:5000"
FILE = RegistryConfig(repository=f"{HOST}/cloud-iot/hello", ca_bundle="ca.pem", timeout=5.0)


# -- resolve --------------------------------------------------------------------------

def test_no_registry_anywhere() -> None:
    assert resolve(None, {}) is None


def test_file_alone_is_unchanged() -> None:
    assert resolve(FILE, {}) is FILE


def test_env_registry_replaces_only_the_repository() -> None:
    got = resolve(FILE, {"ESP32TASKS_REGISTRY": "ci.test/other/hello"})
    assert got == RegistryConfig(repository="ci.test/other/hello", ca_bundle="ca.pem",
                                 timeout=5.0)


def test_env_registry_without_a_file_table() -> None:
    got = resolve(None, {"ESP32TASKS_REGISTRY": "ci.test:5000/x",
                         "ESP32TASKS_REGISTRY_INSECURE": "1"})
    assert got == RegistryConfig(repository="ci.test:5000/x", insecure=True)


def test_command_line_beats_env() -> None:
    got = resolve(FILE, {"ESP32TASKS_REGISTRY": "env.test/x"}, "cli.test/y")
    assert got is not None
    assert got.repository == "cli.test/y"


@pytest.mark.parametrize(("name", "key"), [("ESP32TASKS_ALLOW_DIRTY", "allow_dirty"),
                                           ("ESP32TASKS_FORCE", "force"),
                                           ("ESP32TASKS_REGISTRY_INSECURE", "insecure")])
@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("0", False),
                                                 ("", False)])
def test_flags(name: str, key: str, value: str, expected: bool) -> None:
    got = resolve(FILE, {name: value})
    assert getattr(got, key) is expected


def test_bad_flag_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"ESP32TASKS_FORCE='yes please': expected 1 or 0"):
        resolve(FILE, {"ESP32TASKS_FORCE": "yes please"})


def test_ca_bundle_from_env() -> None:
    got = resolve(FILE, {"ESP32TASKS_REGISTRY_CA_BUNDLE": "/etc/ssl/corp.pem"})
    assert got is not None
    assert got.ca_bundle == "/etc/ssl/corp.pem"


@pytest.mark.parametrize("bad", ["no-path", "Upper.test/Path", "host/with space", "/x"])
def test_bad_override_names_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match=rf"ESP32TASKS_REGISTRY={bad}: not host\[:port\]/path"):
        resolve(FILE, {"ESP32TASKS_REGISTRY": bad})


# -- docker credentials -----------------------------------------------------------------

def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_config(directory: Path, config: object) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return {"DOCKER_CONFIG": str(directory), "PATH": ""}


def helper(tmp_path: Path, name: str, stdout: str, code: int = 0) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(f"#!/bin/sh\ncat > {tmp_path}/stdin-{name}\nprintf '%s' '{stdout}'\n"
                      f"exit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return f"{bin_dir}:/usr/bin:/bin"


def test_env_credentials_come_first(tmp_path: Path) -> None:
    env = write_config(tmp_path, {"auths": {HOST: {"auth": b64("file:pw")}}})
    env.update(ESP32TASKS_REGISTRY_USER="env", ESP32TASKS_REGISTRY_PASSWORD="pw2")
    creds = dockercreds.lookup(HOST, env)
    assert creds is not None
    assert (creds.username, creds.password) == ("env", "pw2")


@pytest.mark.parametrize("present", ["ESP32TASKS_REGISTRY_USER", "ESP32TASKS_REGISTRY_PASSWORD"])
def test_half_the_env_credentials_is_an_error(present: str) -> None:
    with pytest.raises(ConfigError, match="set both ESP32TASKS_REGISTRY_USER and"):
        dockercreds.lookup(HOST, {present: "x"})


def test_password_is_not_in_repr() -> None:
    creds = dockercreds.Credentials("u", "hunter2", "test")
    assert "hunter2" not in repr(creds)
    assert creds.basic() == "Basic " + b64("u:hunter2")


@pytest.mark.parametrize("key", [HOST, f"https://{HOST}", f"https://{HOST}/v1/",
                                 f"http://{HOST}/v2/"])
def test_auths_entry_by_docker_key_forms(tmp_path: Path, key: str) -> None:
    env = write_config(tmp_path, {"auths": {key: {"auth": b64("u:p:with:colons")}}})
    creds = dockercreds.lookup(HOST, env)
    assert creds is not None
    assert (creds.username, creds.password) == ("u", "p:with:colons")


def test_auths_username_password_fields(tmp_path: Path) -> None:
    env = write_config(tmp_path, {"auths": {HOST: {"username": "u", "password": "p"}}})
    creds = dockercreds.lookup(HOST, env)
    assert creds is not None
    assert (creds.username, creds.password) == ("u", "p")


def test_other_hosts_do_not_match(tmp_path: Path) -> None:
    env = write_config(tmp_path, {"auths": {"registry.test:5001": {"auth": b64("u:p")},
                                            "registry.test": {"auth": b64("u:p")}}})
    assert dockercreds.lookup(HOST, env) is None


def test_no_config_file_is_anonymous(tmp_path: Path) -> None:
    assert dockercreds.lookup(HOST, {"DOCKER_CONFIG": str(tmp_path / "none")}) is None


def test_home_is_the_fallback(tmp_path: Path) -> None:
    write_config(tmp_path / ".docker", {"auths": {HOST: {"auth": b64("h:p")}}})
    creds = dockercreds.lookup(HOST, {"HOME": str(tmp_path)})
    assert creds is not None
    assert creds.username == "h"


def test_bad_base64_names_the_file_not_the_value(tmp_path: Path) -> None:
    env = write_config(tmp_path, {"auths": {HOST: {"auth": "%%%not-base64"}}})
    with pytest.raises(ConfigError) as info:
        dockercreds.lookup(HOST, env)
    assert "config.json: auths['registry.test:5000'].auth is not base64" in str(info.value)
    assert "%%%" not in str(info.value)


def test_invalid_json(tmp_path: Path) -> None:
    tmp_path.joinpath("config.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot read the docker config"):
        dockercreds.lookup(HOST, {"DOCKER_CONFIG": str(tmp_path)})


def test_cred_helper_for_the_host_wins(tmp_path: Path) -> None:
    env = write_config(tmp_path, {"auths": {HOST: {"auth": b64("file:pw")}},
                                  "credsStore": "other",
                                  "credHelpers": {HOST: "mine"}})
    env["PATH"] = helper(tmp_path, "mine", json.dumps(
        {"ServerURL": HOST, "Username": "helped", "Secret": "s"}))
    creds = dockercreds.lookup(HOST, env)
    assert creds is not None
    assert (creds.username, creds.password, creds.source) == \
        ("helped", "s", "docker-credential-mine")
    assert (tmp_path / "stdin-mine").read_text() == HOST


def test_creds_store_for_other_hosts(tmp_path: Path) -> None:
    env = write_config(tmp_path, {"credsStore": "store",
                                  "credHelpers": {"elsewhere.test": "mine"}})
    env["PATH"] = helper(tmp_path, "store", json.dumps({"Username": "st", "Secret": "s"}))
    creds = dockercreds.lookup(HOST, env)
    assert creds is not None
    assert creds.username == "st"


def test_helper_not_found_entry_is_anonymous(tmp_path: Path) -> None:
    env = write_config(tmp_path, {"credsStore": "store"})
    env["PATH"] = helper(tmp_path, "store", "credentials not found in native keychain", 1)
    assert dockercreds.lookup(HOST, env) is None


def test_helper_failure_is_an_auth_error(tmp_path: Path) -> None:
    env = write_config(tmp_path, {"credsStore": "store"})
    env["PATH"] = helper(tmp_path, "store", "keyring locked", 1)
    with pytest.raises(RegistryAuthError, match=r"'docker-credential-store' failed for "
                       r"registry\.test:5000: keyring locked"):
        dockercreds.lookup(HOST, env)


def test_identity_tokens_are_refused_clearly(tmp_path: Path) -> None:
    env = write_config(tmp_path, {"credsStore": "store"})
    env["PATH"] = helper(tmp_path, "store", json.dumps({"Username": "<token>", "Secret": "t"}))
    with pytest.raises(RegistryAuthError, match="holds an identity token"):
        dockercreds.lookup(HOST, env)


def test_missing_helper(tmp_path: Path) -> None:
    env = write_config(tmp_path, {"credsStore": "absent"})
    with pytest.raises(RegistryAuthError, match=r"'docker-credential-absent' .* not on PATH"):
        dockercreds.lookup(HOST, env)


def test_lookup_never_writes(tmp_path: Path) -> None:
    env = write_config(tmp_path, {"auths": {HOST: {"auth": b64("u:p")}}})
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    dockercreds.lookup(HOST, env)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


# -- verify's layer reader --------------------------------------------------------------

def test_firmware_in_our_layer() -> None:
    image = oci.firmware_image(target="esp32c3", app_name="hello.bin", firmware=b"\xe9app")
    assert firmware_in_layer(image.layer.data) == ("firmware/hello.bin", b"\xe9app")


def test_no_firmware_in_layer() -> None:
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("other/app.bin")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    assert firmware_in_layer(oci.deterministic_gzip(out.getvalue())) is None
