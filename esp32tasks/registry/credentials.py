"""Registry credentials: our variables (already read by config), else the docker config.

The lookup follows the docker CLI, in the file config resolved
(``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``): ``credHelpers[<host>]``
wins, else ``credsStore``, else the ``auths`` entry (base64 ``user:password`` in ``auth``,
or ``username``/``password``, or an ``identitytoken``). An identity token (a helper's
``Username`` of ``<token>``, or ``identitytoken``) is an OAuth2 refresh token: only a
registry with token auth takes it (:mod:`.auth`).
Helpers are run as ``docker-credential-<name> get`` with the host on stdin, as docker does.
Nothing here writes a file, logs a secret, or puts one in an exception message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from esp32tasks.config import Login
from esp32tasks.errors import ConfigError, RegistryAuthError

__all__ = ["Credentials", "lookup"]

_ENV_USER: Final = "ESP32TASKS_REGISTRY_USER"
_ENV_PASSWORD: Final = "ESP32TASKS_REGISTRY_PASSWORD"  # noqa: S105  # a variable's name
HELPER_TIMEOUT: Final = 30.0
#: What credential helpers print when they hold nothing for the host (docker-credential-helpers).
_NOT_FOUND: Final = "credentials not found in native keychain"


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str
    """Where they came from, for messages (never the secret itself)."""
    identity_token: str | None = field(default=None, repr=False)
    """An OAuth2 refresh token for the registry's token server (``docker login``'s
    ``identitytoken``), instead of a password."""

    def basic(self) -> str:
        """The ``Authorization`` header value."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


def lookup(host: str, login: Login | None, docker_config: str) -> Credentials | None:
    """Credentials for ``host`` (``name[:port]``), or None for anonymous access.

    ``login`` (our variables) wins; else the docker config file ``docker_config``.
    """
    if login is not None:
        return Credentials(login.username, login.password, f"{_ENV_USER}/{_ENV_PASSWORD}")
    path = Path(docker_config)
    config = _read_config(path)
    if config is None:
        return None
    helper = _helper_for(config, host, path)
    if helper is not None:
        return _from_helper(helper, host)
    return _from_auths(config, host, path)


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{path}: cannot read the docker config ({type(exc).__name__}); "
                           "fix the file or set DOCKER_CONFIG to another directory"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a JSON object"])
    return data


def _helper_for(config: dict[str, Any], host: str, path: Path) -> str | None:
    helpers = config.get("credHelpers") or {}
    if not isinstance(helpers, dict):
        raise ConfigError([f"{path}: credHelpers: expected an object"])
    for key, name in helpers.items():
        if _hostname(key) == host and isinstance(name, str) and name:
            return name
    store = config.get("credsStore")
    return store if isinstance(store, str) and store else None


def _from_helper(name: str, host: str) -> Credentials | None:
    program = f"docker-credential-{name}"
    try:
        # the helper's own environment is ours, as docker passes it (keyrings need it)
        proc = subprocess.run([program, "get"], input=host.encode(), capture_output=True,
                              env=dict(os.environ), timeout=HELPER_TIMEOUT, check=False)
    except FileNotFoundError:
        raise RegistryAuthError(f"credential helper '{program}' (from the docker config) is "
                                "not on PATH; install it or remove it from the docker config") \
            from None
    except subprocess.TimeoutExpired:
        raise RegistryAuthError(f"credential helper '{program}' did not answer within "
                                f"{HELPER_TIMEOUT:.0f} s (is it waiting for a keyring unlock?)") \
            from None
    if proc.returncode != 0:
        said = (proc.stdout or proc.stderr).decode(errors="replace").strip()
        if _NOT_FOUND in said:
            return None
        # never its output: a helper's stdout or stderr may hold the secret it guards
        raise RegistryAuthError(
            f"credential helper '{program}' failed for {host} (exit code {proc.returncode});"
            f" run `echo {host} | {program} get` to see why (its output is not repeated here)")
    try:
        payload = json.loads(proc.stdout)
        username, secret = payload["Username"], payload["Secret"]
    except (ValueError, KeyError, TypeError):
        raise RegistryAuthError(f"credential helper '{program}' printed no Username/Secret "
                                f"JSON for {host}") from None
    if not isinstance(username, str) or not isinstance(secret, str):
        raise RegistryAuthError(f"credential helper '{program}' printed no Username/Secret "
                                f"JSON for {host}")
    if username == "<token>":
        return Credentials("", "", program, identity_token=secret) if secret else None
    if not username and not secret:
        return None
    return Credentials(username, secret, program)


def _from_auths(config: dict[str, Any], host: str, path: Path) -> Credentials | None:
    auths = config.get("auths") or {}
    if not isinstance(auths, dict):
        raise ConfigError([f"{path}: auths: expected an object"])
    # docker tries the exact key first, then any key whose hostname matches
    entry: Any = auths.get(host)
    if entry is None:
        entry = next((v for k, v in auths.items() if _hostname(k) == host), None)
    if not isinstance(entry, dict):
        return None
    where = f"docker config {path} auths['{host}']"
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError([f"{path}: auths['{host}'].auth is not base64 of "
                               "user:password; run `docker login` again"]) from None
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            raise ConfigError([f"{path}: auths['{host}'].auth is not base64 of "
                               "user:password; run `docker login` again"])
        identity = entry.get("identitytoken")
        return Credentials(username, password, where,
                           identity_token=identity if isinstance(identity, str) and identity
                           else None)
    user, secret = entry.get("username"), entry.get("password")
    if isinstance(user, str) and isinstance(secret, str) and user:
        return Credentials(user, secret, where)
    identity = entry.get("identitytoken")
    if isinstance(identity, str) and identity:
        return Credentials(user if isinstance(user, str) else "", "", where,
                           identity_token=identity)
    return None


def _hostname(key: str) -> str:
    """docker's ``ConvertToHostname``: ``https://host:5000/v1/`` to ``host:5000``."""
    for scheme in ("http://", "https://"):
        if key.startswith(scheme):
            key = key[len(scheme):]
            break
    return key.split("/", 1)[0]
