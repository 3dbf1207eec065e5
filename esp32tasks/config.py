"""``targets.toml`` to frozen dataclasses, validated once, every problem reported in one pass.

Messages have the shape ``<file>: <key path>: <problem>; <fix>`` so a user can go
straight to the line. Nothing downstream reads raw TOML.

This is also the one place that reads our overrides: every ``ESP32TASKS_*`` variable
(:data:`VARIABLES`) and every doit command-line parameter (:data:`CLI_PARAMETERS`) is read
here, once, with one boolean parser (:func:`parse_bool`), into the frozen
:class:`Release`. Nothing else reads the environment for our settings.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import string
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal, TypeVar, cast, get_args

from esp32tasks import secureboot
from esp32tasks.errors import ConfigError
from esp32tasks.secureboot import Scheme
from esp32tasks.version import GIT, TAG_PATTERN, from_describe
from esp32tasks.version import parse as parse_version

__all__ = [
    "CLI_PARAMETERS",
    "DEFAULT_STORE",
    "KNOWN_CHIPS",
    "MAX_TAG_LENGTH",
    "MAX_VERSION_BYTES",
    "PLACEHOLDERS",
    "VARIABLES",
    "Builder",
    "CacheConfig",
    "Chip",
    "Login",
    "Project",
    "RegistryConfig",
    "Release",
    "StoreConfig",
    "Target",
    "apply_overrides",
    "cache_url_problem",
    "channel_problem",
    "load",
    "parse",
    "parse_bool",
    "resolve_version",
    "substitute",
    "version_problem",
]

Chip = Literal[
    "esp32",
    "esp32s2",
    "esp32s3",
    "esp32c2",
    "esp32c3",
    "esp32c5",
    "esp32c6",
    "esp32c61",
    "esp32h2",
    "esp32p4",
]
KNOWN_CHIPS: Final[tuple[str, ...]] = get_args(Chip)
BuilderKind = Literal["idf", "command"]

#: ``esp_app_desc_t.version`` is ``char[32]``: 31 bytes and the terminating NUL.
MAX_VERSION_BYTES: Final = 31
#: The OCI distribution spec's tag grammar: ``[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}``.
MAX_TAG_LENGTH: Final = 128
#: What the commit part of a per-target tag can add at most: ``-<sha7>-dirty``.
TAG_SUFFIX_MAX: Final = len("-0123456-dirty")

PLACEHOLDERS: Final = ("target", "chip", "build_dir", "version")
#: The store directory when ``[store] url`` is not set (relative to the repository root).
DEFAULT_STORE: Final = "build/store"
#: distribution's ``NameTotalLengthMax``: a repository name (host included) is at most this.
MAX_REPOSITORY_LENGTH: Final = 255

_TAG_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_TARGET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_PROJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# distribution's reference grammar (distribution/reference/regexp.go): host[:port]/path.
# Host: domain components, an IPv4 address or a bracketed IPv6 address; path components are
# lower-case alphanumerics joined by '.', '_', '__' or dashes. See _repository_problem.
_PATH_COMPONENT: Final = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_DOMAIN_COMPONENT: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*")
_HOST_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>.*))?")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+")
_NOT_A_REPOSITORY: Final = ("not host[:port]/path with a lower-case path (e.g. "
                            "harbor.example.com/cloud-iot/hello)")
_PSRAM_SUFFIX = re.compile(r"r[28]$")


VERSION_IN_CONFIG: Final = "[project] version in targets.toml"


@dataclass(frozen=True, kw_only=True, slots=True)
class Project:
    name: str
    app_type: str
    version: str
    """A semver release or pre-release, a snapshot, or ``"git"`` until the session resolves
    it (:func:`resolve_version`): everything downstream sees the version itself."""
    app_dir: PurePosixPath
    """The app's directory, relative to the repository root."""
    source: str | None = None
    """Optional URL of the source repository (``org.opencontainers.image.source``)."""
    version_source: str = VERSION_IN_CONFIG
    """Where ``version`` came from, for messages about it."""
    channels: tuple[str, ...] = ()
    """Channels this release moves (``<app_type>-<channel>``), after its index is pushed."""
    channels_source: str = ""
    """Who asked for ``channels`` when not ``[project] channels`` (``ESP32TASKS_CHANNEL=…``,
    ``doit release channel=…``): asked for, a dirty tree's release is refused; by default,
    its channels are left where they are."""
    force_channel: bool = False
    """Move a channel backwards (``ESP32TASKS_FORCE_CHANNEL``; never ``ESP32TASKS_FORCE``)."""
    allow_dirty: bool = False
    """Publish an uncommitted tree, under names that end in ``-dirty``."""
    exclude: tuple[str, ...] = ()
    """gitignore-style patterns, relative to ``app_dir``, of files that are no source."""
    publish_unsigned: bool = False
    """With ``[[keys]]``: publish the unsigned variant too (by default only signed ones)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Builder:
    kind: BuilderKind
    command: tuple[str, ...]
    """argv template (``command`` builder) or the ``idf.py`` program (``idf`` builder)."""
    env: tuple[tuple[str, str], ...] = ()
    sdkconfig_defaults: tuple[str, ...] = ()
    toolchain: tuple[str, ...] = ()
    """Programs whose content identifies the toolchain; changing one rebuilds every target."""
    pass_env: tuple[str, ...] = ()
    """Variables passed to the build even though they look like our secrets."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    name: str
    chip: Chip
    env: tuple[tuple[str, str], ...] = ()
    files: tuple[str, ...] = ()
    """Per-target files, relative to the app dir: dependencies of this target only."""
    sdkconfig_defaults: tuple[str, ...] = ()
    pass_env: tuple[str, ...] = ()

    @property
    def own_files(self) -> tuple[str, ...]:
        """Files only this target depends on (relative to the app dir)."""
        return tuple(dict.fromkeys(self.files + self.sdkconfig_defaults))


@dataclass(frozen=True, kw_only=True, slots=True)
class Key:
    """A ``[[keys]]`` entry: how one Secure Boot key signs. Holds where the private key is,
    never the key itself (that is read when a ``sign`` task runs)."""

    name: str
    """The tag, index and task part: ``[a-z][a-z0-9]*``, not ``dirty``."""
    scheme: Scheme
    where: str
    """``keys[0] in targets.toml``: for messages."""
    private_key_env: str | None = None
    """A variable holding the PEM."""
    private_key_file: Path | None = None
    """An absolute path outside the repository."""
    sign_command: tuple[str, ...] = ()
    """An external signer: the digest on stdin, the signature on stdout."""
    public_key: PurePosixPath | None = None
    """Root-relative, committed; required with ``sign_command``."""
    targets: tuple[str, ...] = ()
    """The targets it signs; empty: every target."""

    @property
    def private_key_place(self) -> str:
        """Where the private key is looked for, for messages (never its content)."""
        if self.private_key_env is not None:
            return f"the variable {self.private_key_env}"
        if self.private_key_file is not None:
            return f"the file {self.private_key_file}"
        return "the sign_command " + " ".join(self.sign_command[:1])


@dataclass(frozen=True, kw_only=True, slots=True)
class DeltaConfig:
    """``[delta]``: patches from earlier releases that devices apply instead of the app."""

    bases: tuple[str, ...] = ()
    """Released versions of this project to make patches from (their apps, from the store)."""
    max_ratio: float = 0.9
    """A patch not smaller than this share of the full app is not published."""
    latest: int = 0
    """Also the N newest releases in the store older than this version (found when the
    patches are made)."""


@dataclass(frozen=True, slots=True)
class Login:
    """Registry credentials from ``ESP32TASKS_REGISTRY_USER`` / ``..._PASSWORD``."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, kw_only=True, slots=True)
class RegistryConfig:
    repository: str
    """``host[:port]/path``."""
    source: str = "[registry] repository in targets.toml"
    """Where ``repository`` came from, for messages about it."""
    insecure: bool = False
    ca_bundle: str | None = None
    timeout: float = 10.0
    allow_dirty: bool = False
    """Push images of an uncommitted tree (tags end in ``-dirty``)."""
    force: bool = False
    """Overwrite a released tag that points at other content (released versions are immutable)."""
    login: Login | None = field(default=None, repr=False)
    """Credentials from our variables; None: the docker config decides."""
    docker_config: str = ""
    """The docker config file to read credentials from (``$DOCKER_CONFIG/config.json``, else
    ``~/.docker/config.json``), as docker finds it."""

    @property
    def host(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def path(self) -> str:
        return self.repository.split("/", 1)[1]


@dataclass(frozen=True, kw_only=True, slots=True)
class StoreConfig:
    url: str = DEFAULT_STORE
    """``s3://bucket/prefix`` or a directory inside the repository, relative to its root and
    normalised (``./dist``, ``dist/`` and ``dist`` are all ``dist``)."""
    endpoint_url: str | None = None
    region: str | None = None
    create_bucket: bool = False
    force: bool = False
    """``ESP32TASKS_FORCE``: overwrite a release.json another revision wrote."""

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")


@dataclass(frozen=True, kw_only=True, slots=True)
class CacheConfig:
    """``[cache]``: the remote build cache, shared by runners (a ``store`` of its own)."""

    store: StoreConfig
    """Where entries and blobs live: ``s3://bucket/prefix`` (with ``[store]``'s endpoint and
    credential rules) or an absolute directory."""
    toolchain: str = ""
    """The toolchain's declared identity (a version string, a container image digest):
    instead of hashing the toolchain programs' content."""
    write: bool = False
    """``ESP32TASKS_CACHE_WRITE``: upload after a compile (trusted branches only)."""
    key: bytes = field(default=b"", repr=False)
    """``ESP32TASKS_CACHE_KEY``: entries carry an HMAC-SHA256 under it, and only entries
    with a valid one are used."""
    source: str = "[cache] url in targets.toml"


@dataclass(frozen=True, kw_only=True, slots=True)
class Release:
    path: Path
    """The ``targets.toml`` this was read from."""
    project: Project
    builder: Builder
    targets: tuple[Target, ...]
    registry: RegistryConfig | None = None
    store: StoreConfig = field(default_factory=StoreConfig)
    keys: tuple[Key, ...] = ()
    """Secure Boot keys: each signs its targets into a variant of the release."""
    delta: DeltaConfig | None = None
    """Delta OTA patches, with ``[delta]``."""
    cache: CacheConfig | None = None
    """The remote build cache, with ``[cache]`` (or ``ESP32TASKS_CACHE``)."""
    shard: tuple[str, ...] | None = None
    """``targets=`` / ``ESP32TASKS_TARGETS``: this run is a shard that publishes only these
    targets (and leaves their receipts in the store); None: every target."""
    assemble: bool = False
    """``doit publish-index``: build nothing, assemble the release from the shards'
    receipts."""
    actor: str = ""
    """Who runs the release, where the CI says (``GITHUB_ACTOR``, ``GITLAB_USER_LOGIN``)."""
    step_summary: str = ""
    """GitHub Actions' job summary file (``GITHUB_STEP_SUMMARY``): the summary goes there too."""

    @property
    def root(self) -> Path:
        return self.path.parent


#: Every ``ESP32TASKS_*`` variable we read (README.md's "Overrides" table lists the same).
VARIABLES: Final = (
    "ESP32TASKS_REGISTRY",            # [registry] repository
    "ESP32TASKS_REGISTRY_INSECURE",   # [registry] insecure
    "ESP32TASKS_REGISTRY_CA_BUNDLE",  # [registry] ca_bundle
    "ESP32TASKS_REGISTRY_USER",       # the registry user, with ..._PASSWORD
    "ESP32TASKS_REGISTRY_PASSWORD",
    "ESP32TASKS_ALLOW_DIRTY",         # [registry] allow_dirty
    "ESP32TASKS_FORCE",               # [registry] force, and the store's release check
    "ESP32TASKS_VERSION",             # [project] version
    "ESP32TASKS_CHANNEL",             # [project] channels
    "ESP32TASKS_FORCE_CHANNEL",       # [project] force_channel
    "ESP32TASKS_TARGETS",             # this run's shard: the targets it publishes
    "ESP32TASKS_CACHE",               # [cache] url
    "ESP32TASKS_CACHE_WRITE",         # upload to the build cache (trusted branches)
    "ESP32TASKS_CACHE_KEY",           # the build cache's HMAC key (never printed or stored)
)
#: ``doit release <name>=<value>`` parameters; each beats its variable.
#: What a ``sign_command`` gets in its environment (set by us, never read: README.md,
#: "Secure Boot signing").
SIGNER_VARIABLES: Final = ("ESP32TASKS_SIGN_KEY", "ESP32TASKS_SIGN_SCHEME",
                           "ESP32TASKS_SIGN_DIGEST", "ESP32TASKS_SIGN_TARGET")

CLI_PARAMETERS: Final = ("registry", "version", "channel", "targets")
#: A channel's name: ``<app_type>-<channel>`` is a moving index tag.
_CHANNEL = re.compile(r"[a-z][a-z0-9]*")
#: Names a channel cannot take (``-dirty`` marks an uncommitted tree's names).
RESERVED_CHANNELS: Final = frozenset({"dirty"})
#: Not key names: ``dirty`` ends names already, ``unsigned`` names the variant without one.
RESERVED_KEYS: Final = frozenset({"dirty", "unsigned"})
_TRUE: Final = ("1", "true", "yes", "on")
_FALSE: Final = ("0", "false", "no", "off")


def parse_bool(name: str, value: str | None) -> bool | None:
    """The one boolean parser: None when unset or empty, else ``1/true/yes/on`` or
    ``0/false/no/off`` (any case, surrounding blanks ignored); anything else is an error
    naming ``name``."""
    if value is None or not value.strip():
        return None
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise _error([f"{name}={value!r}: not a boolean; use 1, true, yes or on (or 0, "
                   "false, no or off)"])


def load(path: Path, environ: Mapping[str, str] | None = None,
         cli: Mapping[str, str | None] | None = None) -> Release:
    """Read and validate ``targets.toml``, then apply the overrides of ``environ``
    (default: the process environment) and ``cli`` (doit's command-line parameters).

    Raises :class:`ConfigError` listing every problem.
    """
    release = _read(path)
    return apply_overrides(release, os.environ if environ is None else environ, cli or {})


def _read(path: Path) -> Release:
    try:
        text = path.read_bytes().decode()
    except FileNotFoundError:
        raise _error(
            [f"{path}: not found; create it (see README.md) or run doit at the repository root"]
        ) from None
    except IsADirectoryError:
        raise _error([f"{path}: is a directory, not a file; esp32tasks reads the release "
                      "from the file targets.toml at the repository root"]) from None
    except OSError as exc:
        raise _error([f"{path}: cannot be read ({exc.strerror or type(exc).__name__}); "
                      "check its permissions"]) from None
    except UnicodeDecodeError as exc:
        raise _error([f"{path}: not UTF-8 ({exc.reason}); save it as UTF-8"]) from None
    return parse(text, path)


#: tomllib's position suffix: "Invalid value (at line 2, column 8)".
_TOML_POSITION = re.compile(r"^(?P<what>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$")


def parse(text: str, path: Path) -> Release:
    """Validate the TOML ``text`` of ``path``. A UTF-8 byte order mark is accepted (editors
    on Windows write one; tomllib alone would call it an invalid statement)."""
    try:
        data = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_POSITION.match(str(exc))
        if found is None:
            raise _error([f"{path.name}: invalid TOML: {exc}"]) from None
        what = found["what"][:1].lower() + found["what"][1:]
        raise _error([f"{path.name}:{found['line']}:{found['column']}: invalid TOML: "
                      f"{what}; fix the syntax there (https://toml.io)"]) from None
    except RecursionError:  # tomllib recurses once per level of nested arrays/inline tables
        raise _error([f"{path.name}: invalid TOML: arrays or inline tables nested too deeply; "
                      "flatten them"]) from None
    reader = _Reader(path)
    release = reader.release(data)
    if reader.problems or release is None:
        raise _error(reader.problems)
    return release


_T = TypeVar("_T")
_MISSING: Final = object()


class _Reader:
    """Typed getters over the raw TOML that collect problems instead of stopping."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []

    def fail(self, key: str, message: str) -> None:
        where = f"{self.path.name}: {key}: " if key else f"{self.path.name}: "
        self.problems.append(_one_line(where + message))

    def table(self, data: Mapping[str, Any], key: str, where: str, allowed: tuple[str, ...]) -> \
            dict[str, Any] | None:
        value = data.get(key, _MISSING)
        if value is _MISSING:
            return None
        path = f"{where}.{key}" if where else key
        if not isinstance(value, dict):
            self.fail(path, f"expected a table, got {_type_name(value)}")
            return None
        self.keys(value, path, allowed)
        return value

    def keys(self, data: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key in allowed:
                continue
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
            self.fail(f"{where}.{key}" if where else key, f"unknown key; {hint}")

    def get(self, data: Mapping[str, Any], key: str, where: str, kind: type[_T],
            default: _T | None = None, *, required: bool = False) -> _T | None:
        value = data.get(key, _MISSING)
        path = f"{where}.{key}" if where else key
        if value is _MISSING:
            if required:
                self.fail(path, f"missing; add `{key} = ...` to [{where}]")
            return default
        # bool is an int in Python: keep the two apart
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                return cast("_T", float(value))
            self.fail(path, f"expected {kind.__name__}, got {_type_name(value)}")
            return default
        return value

    def checked(self, table: Mapping[str, Any], key: str,
                problem: Callable[[str], str | None]) -> tuple[str, ...]:
        """``[project] key``, a list of strings, each one checked by ``problem``."""
        values = self.strings(table, key, "project")
        for value in values:
            found = problem(value)
            if found is not None:
                self.fail(f"project.{key}", found)
        return values

    def strings(self, data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = self.get(data, key, where, list) or []
        if not all(isinstance(item, str) for item in value):
            self.fail(f"{where}.{key}", "expected a list of strings")
            return ()
        return tuple(value)

    def env(self, data: Mapping[str, Any], where: str) -> tuple[tuple[str, str], ...]:
        value = self.get(data, "env", where, dict) or {}
        result = []
        for name, item in sorted(value.items()):
            if not _ENV_NAME.fullmatch(name):
                self.fail(f"{where}.env.{name}", "not a valid environment variable name")
            elif not isinstance(item, str):
                self.fail(f"{where}.env.{name}", f"expected str, got {_type_name(item)}")
            elif "\0" in item:
                self.no_nul((item,), f"{where}.env.{name}")
            else:
                result.append((name, item))
        return tuple(result)

    def relative_files(self, names: tuple[str, ...], where: str) -> None:
        for name in names:
            if not _is_relative_inside(name):
                self.fail(where, f"'{name}' must be a relative path inside the app directory")

    def no_nul(self, values: tuple[str, ...], where: str) -> None:
        for value in values:
            if "\0" in value:
                self.fail(where, f"'{value}' contains a NUL character, which no program "
                          "argument or environment value can hold; remove it")

    def resolved(self, key: str, name: str, relative: PurePosixPath, fix: str, *,
                 directory: bool = False) -> PurePosixPath | None:
        """``relative`` (lexically inside the repository) with symbolic links followed: a
        problem when it leaves the repository, or, for a ``directory``, when it is not where
        its name says (git, our ignore list and `doit clean` go by the name)."""
        root = self.path.parent
        try:
            top = root.resolve()
            real = (root / relative).resolve()
        except RuntimeError:  # pathlib's "Symlink loop"
            self.fail(key, f"'{name}' cannot be resolved (a symbolic link loop); fix the path")
            return None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            self.fail(key, f"'{name}' cannot be resolved ({reason}); fix the path")
            return None
        if not real.is_relative_to(top):
            self.fail(key, f"'{name}' resolves to {real}, outside the repository; {fix}")
            return None
        inside = PurePosixPath(real.relative_to(top).as_posix())
        if directory and inside != relative:
            self.fail(key, f"'{name}' resolves to '{inside}' through a symbolic link; write "
                      f"'{inside}'")
            return None
        return inside

    def resolved_files(self, names: tuple[str, ...], where: str,
                       app_dir: PurePosixPath) -> None:
        for name in names:
            if _is_relative_inside(name):
                self.resolved(where, name, app_dir / name,
                              "list files inside the repository")

    # -- sections -----------------------------------------------------------------

    def release(self, data: dict[str, Any]) -> Release | None:
        self.keys(data, "", ("project", "builder", "targets", "registry", "store", "keys",
                             "delta", "cache"))
        project = self.project(data)
        builder = self.builder(data)
        targets = self.targets(data, project)
        registry = self.registry(data)
        store = self.store(data)
        keys = self.signing_keys(data, targets)
        delta = self.delta(data)
        cache = self.cache(data)
        if project is not None:
            self.inside_repository(project, builder, targets, store)
        if project is None or builder is None or self.problems:
            return None
        return Release(path=self.path, project=project, builder=builder, targets=targets,
                       registry=registry, store=store, keys=keys, delta=delta, cache=cache)

    def cache(self, data: dict[str, Any]) -> CacheConfig | None:
        table = self.table(data, "cache", "", ("url", "endpoint_url", "region", "toolchain"))
        if table is None:
            return None
        url = self.get(table, "url", "cache", str, required=True) or ""
        endpoint = self.get(table, "endpoint_url", "cache", str)
        region = self.get(table, "region", "cache", str)
        toolchain = self.get(table, "toolchain", "cache", str, "") or ""
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            self.fail("cache.endpoint_url", f"'{endpoint}' must start with http:// or https://")
        if url:
            problem = cache_url_problem(url)
            if problem is not None:
                self.fail("cache.url", problem)
        if toolchain and (len(toolchain) > 200 or not toolchain.isprintable()):
            self.fail("cache.toolchain", "must be one printable line of at most 200 "
                      "characters (a version string or an image digest)")
        return CacheConfig(store=StoreConfig(url=url, endpoint_url=endpoint, region=region),
                           toolchain=toolchain)

    def delta(self, data: dict[str, Any]) -> DeltaConfig | None:
        table = self.table(data, "delta", "", ("bases", "latest", "max_ratio"))
        if table is None:
            return None
        bases = self.strings(table, "bases", "delta")
        for base in bases:
            problem = version_problem(base)
            if problem is not None:
                self.fail("delta.bases", problem)
        latest = self.get(table, "latest", "delta", int, 0)
        if latest is not None and not 0 <= latest <= 20:
            self.fail("delta.latest", f"{latest} is out of range; use 0 to 20 releases")
        if not bases and not latest:
            self.fail("delta", 'no bases; list the released versions devices update from '
                      '(bases = ["1.0.0"]) and/or take the newest from the store (latest = 2)')
        ratio = self.get(table, "max_ratio", "delta", float, 0.9)
        if ratio is not None and not 0 < ratio <= 1:
            self.fail("delta.max_ratio", f"{ratio} is out of range; use a share of the app "
                      "above 0 and at most 1 (e.g. 0.9)")
        return DeltaConfig(bases=tuple(dict.fromkeys(bases)), max_ratio=ratio or 0.9,
                           latest=latest or 0)

    def signing_keys(self, data: dict[str, Any], targets: tuple[Target, ...]) -> \
            tuple[Key, ...]:
        """``[[keys]]``: each one's private key in exactly one place, and every target it
        signs on a chip that verifies its scheme (ESP-IDF's table, :mod:`secureboot`)."""
        raw = data.get("keys", _MISSING)
        if raw is _MISSING:
            return ()
        if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
            self.fail("keys", "expected an array of tables ([[keys]])")
            return ()
        by_name = {t.name: t for t in targets}
        seen: dict[str, int] = {}
        found = [self.signing_key(index, item, by_name, seen) for index, item in enumerate(raw)]
        return tuple(key for key in found if key is not None)

    def signing_key(self, index: int, item: dict[str, Any], targets: Mapping[str, Target],
                    seen: dict[str, int]) -> Key | None:
        where = f"keys[{index}]"
        self.keys(item, where, ("name", "scheme", "private_key_env", "private_key_file",
                                "sign_command", "public_key", "targets"))
        name = self.key_name(item, index, seen)
        scheme = self.get(item, "scheme", where, str, required=True)
        env = self.get(item, "private_key_env", where, str)
        file = self.get(item, "private_key_file", where, str)
        command = self.strings(item, "sign_command", where)
        if scheme is not None and scheme not in secureboot.SCHEMES:
            self.fail(f"{where}.scheme", f"unknown scheme '{scheme}'; use one of "
                      f"{', '.join(secureboot.SCHEMES)}")
            scheme = None
        places = [k for k, v in (("private_key_env", env), ("private_key_file", file),
                                 ("sign_command", command)) if v]
        if len(places) != 1:
            self.fail(where, "set exactly one of private_key_env, private_key_file and "
                      f"sign_command (found {', '.join(places) or 'none'})")
        if env is not None and not _ENV_NAME.fullmatch(env):
            self.fail(f"{where}.private_key_env", f"'{env}' is not a variable name")
        key_file = None if file is None else self.outside(f"{where}.private_key_file", file)
        self.no_nul(command, f"{where}.sign_command")
        public = self.public_key(item, where, required=bool(command))
        signs = self.strings(item, "targets", where)
        for signed in signs:
            if signed not in targets:
                self.fail(f"{where}.targets", f"'{signed}' is no target in "
                          f"{self.path.name} (targets: {', '.join(targets)})")
        if name is None or scheme is None:
            return None
        for target in [targets[t] for t in signs if t in targets] or targets.values():
            if scheme not in secureboot.accepted(target.chip):
                self.fail(f"{where}.scheme", f"key '{name}' ({scheme}) cannot sign target "
                          f"'{target.name}': chip {target.chip} verifies "
                          f"{' or '.join(secureboot.accepted(target.chip)) or 'no scheme'}; "
                          f"use a key of that scheme, or list the targets it signs in "
                          f"{where}.targets")
        return Key(name=name, scheme=cast("Scheme", scheme), where=f"{where} in {self.path.name}",
                   private_key_env=env, private_key_file=key_file, sign_command=command,
                   public_key=public, targets=tuple(dict.fromkeys(signs)))

    def key_name(self, item: dict[str, Any], index: int, seen: dict[str, int]) -> str | None:
        where = f"keys[{index}]"
        name = self.get(item, "name", where, str, required=True)
        if name is None:
            return None
        if not _CHANNEL.fullmatch(name) or name in RESERVED_KEYS:
            self.fail(f"{where}.name", f"'{name}' is not a key name; use a lower-case letter "
                      "then letters and digits ([a-z][a-z0-9]*), not 'dirty' or 'unsigned'")
            return None
        if name in seen:
            self.fail(f"{where}.name", f"duplicate key '{name}' (also keys[{seen[name]}]); "
                      "give each key a unique name")
            return None
        seen[name] = index
        return name

    def public_key(self, item: dict[str, Any], where: str, *, required: bool) -> \
            PurePosixPath | None:
        """A key's committed public PEM, inside the repository."""
        public = self.get(item, "public_key", where, str)
        if public is None:
            if required:
                self.fail(f"{where}.public_key", "missing; a sign_command needs the public "
                          "key it signs for, committed (e.g. keys/prod.pub.pem)")
            return None
        if not _is_relative_inside(public):
            self.fail(f"{where}.public_key", f"'{public}' must be a relative path inside the "
                      "repository (the committed public key)")
            return None
        path = self.resolved(f"{where}.public_key", public, PurePosixPath(public),
                             "commit the public key inside the repository")
        if path is not None and not (self.path.parent / path).is_file():
            self.fail(f"{where}.public_key", f"file '{public}' does not exist; commit the "
                      "key's public PEM there (espsecure extract-public-key writes it)")
            return None
        return path

    def outside(self, key: str, name: str) -> Path | None:
        """A secret's file: absolute, and outside the repository (never committed, never
        under our build/)."""
        path = Path(name)
        if not path.is_absolute():
            self.fail(key, f"'{name}' must be an absolute path outside the repository (a "
                      "private key never lives in it, e.g. /run/secrets/prod.pem)")
            return None
        try:
            real, top = path.resolve(), self.path.parent.resolve()
        except (OSError, RuntimeError, ValueError):
            return path
        if real.is_relative_to(top):
            self.fail(key, f"'{name}' is inside the repository; keep private keys outside it "
                      "(e.g. /run/secrets/prod.pem) or use private_key_env")
            return None
        return path

    def inside_repository(self, project: Project, builder: Builder | None,
                          targets: tuple[Target, ...], store: StoreConfig) -> None:
        """Listed files resolve inside the repository, and the store holds no sources."""
        app_dir = project.app_dir
        if builder is not None:
            self.resolved_files(builder.sdkconfig_defaults, "builder.sdkconfig_defaults",
                                app_dir)
        for index, target in enumerate(targets):
            self.resolved_files(target.files, f"targets[{index}].files", app_dir)
            self.resolved_files(target.sdkconfig_defaults,
                                f"targets[{index}].sdkconfig_defaults", app_dir)
        if not store.is_s3 and PurePosixPath(store.url) in (app_dir, *app_dir.parents):
            self.fail("store.url", f"'{store.url}' contains the app directory '{app_dir}'; "
                      'name a directory outside it (e.g. "dist")')

    def project(self, data: dict[str, Any]) -> Project | None:
        table = self.table(data, "project", "", ("name", "app_type", "version", "app_dir",
                                                  "source", "channels", "force_channel",
                                                  "allow_dirty", "exclude",
                                                  "publish_unsigned"))
        if table is None:
            self.fail("project", "missing; add a [project] table with name, app_type, version")
            return None
        name = self.get(table, "name", "project", str, required=True)
        app_type = self.get(table, "app_type", "project", str, required=True)
        version = self.get(table, "version", "project", str, required=True)
        app_dir = self.get(table, "app_dir", "project", str, ".")
        source = self.get(table, "source", "project", str)
        if name is not None and not _PROJECT_NAME.fullmatch(name):
            self.fail("project.name", f"'{name}' is not a safe path component; use letters, "
                      "digits, '.', '_' and '-', starting with a letter or digit")
        if app_type is not None and not _TAG_PART.fullmatch(app_type):
            self.fail("project.app_type", f"'{app_type}' cannot be part of an OCI tag; use "
                      "letters, digits, '.', '_' and '-', not starting with '.' or '-'")
        if version is not None:
            problem = version_problem(version, allow_git=True)
            if problem is not None:
                self.fail("project.version", problem)
        channels = self.checked(table, "channels", channel_problem)
        force_channel = bool(self.get(table, "force_channel", "project", bool, False))
        exclude = self.checked(table, "exclude", _pattern_problem)
        allow_dirty = bool(self.get(table, "allow_dirty", "project", bool, False))
        publish_unsigned = bool(self.get(table, "publish_unsigned", "project", bool, False))
        app_path: PurePosixPath | None = None
        if app_dir is not None:
            if not _is_relative_inside(app_dir, allow_dot=True):
                self.fail("project.app_dir", f"'{app_dir}' must be a relative path inside "
                          "the repository")
            else:
                app_path = self.resolved("project.app_dir", app_dir, PurePosixPath(app_dir),
                                         "point it at a directory inside the repository",
                                         directory=True)
                if app_path is not None and not _is_dir(self.path.parent / app_path):
                    self.fail("project.app_dir", f"directory '{app_dir}' does not exist; "
                              "create it or fix the path (relative to the repository root)")
                    app_path = None
        if name is None or app_type is None or version is None or app_path is None:
            return None
        return Project(name=name, app_type=app_type, version=version, app_dir=app_path,
                       source=source, channels=tuple(dict.fromkeys(channels)),
                       force_channel=force_channel, allow_dirty=allow_dirty,
                       exclude=exclude, publish_unsigned=publish_unsigned)

    def builder(self, data: dict[str, Any]) -> Builder | None:
        table = self.table(data, "builder", "", ("kind", "command", "env", "sdkconfig_defaults",
                                                  "toolchain", "pass_env"))
        if table is None:
            self.fail("builder", 'missing; add [builder] with kind = "idf" or kind = "command"')
            return None
        kind = self.get(table, "kind", "builder", str, required=True)
        if kind is None:
            return None
        if kind not in get_args(BuilderKind):
            self.fail("builder.kind", f"unknown builder '{kind}'; use \"idf\" or \"command\"")
            return None
        command = self.strings(table, "command", "builder")
        if kind == "command":
            if not command:
                self.fail("builder.command", "missing; the command builder needs an argv list, "
                          'e.g. ["python3", "build.py", "--build-dir", "{build_dir}"]')
            for arg in command:
                problem = _placeholder_problem(arg)
                if problem is not None:
                    self.fail("builder.command", problem)
        elif len(command) > 1:
            self.fail("builder.command", "the idf builder takes one program (the idf.py to run)")
        self.no_nul(command, "builder.command")
        sdkconfig_defaults = self.strings(table, "sdkconfig_defaults", "builder")
        self.relative_files(sdkconfig_defaults, "builder.sdkconfig_defaults")
        toolchain = self.strings(table, "toolchain", "builder")
        self.no_nul(toolchain, "builder.toolchain")
        return Builder(
            kind=cast("BuilderKind", kind),
            command=command or ("idf.py",),
            env=self.env(table, "builder"),
            sdkconfig_defaults=sdkconfig_defaults,
            toolchain=toolchain,
            pass_env=self.strings(table, "pass_env", "builder"),
        )

    def targets(self, data: dict[str, Any], project: Project | None) -> tuple[Target, ...]:
        raw = data.get("targets", _MISSING)
        if raw is _MISSING or raw == []:
            self.fail("targets", 'missing; add at least one [[targets]] with name = "esp32c3"')
            return ()
        if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
            self.fail("targets", "expected an array of tables ([[targets]])")
            return ()
        targets: list[Target] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(raw):
            where = f"targets[{index}]"
            self.keys(item, where, ("name", "chip", "env", "files", "sdkconfig_defaults",
                                    "pass_env"))
            name = self.get(item, "name", where, str, required=True)
            if name is None:
                continue
            if not _TARGET_NAME.fullmatch(name) or ".." in name:
                self.fail(f"{where}.name", f"'{name}' is not a safe path and tag component; "
                          "use lower-case letters, digits, '.', '_' and '-' (e.g. esp32s3r8)")
                continue
            if name in seen:
                self.fail(f"{where}.name", f"duplicate target '{name}' (also "
                          f"targets[{seen[name]}]); give each target a unique name")
                continue
            seen[name] = index
            chip = self.get(item, "chip", where, str) or _PSRAM_SUFFIX.sub("", name)
            if chip not in KNOWN_CHIPS:
                close = difflib.get_close_matches(chip, KNOWN_CHIPS, n=1)
                hint = f"did you mean '{close[0]}'?" if close else "set chip = one of them"
                key = f"{where}.chip" if "chip" in item else f"{where}.name"
                self.fail(key, f"unknown chip '{chip}' (known: {', '.join(KNOWN_CHIPS)}); {hint}")
                continue
            files = self.strings(item, "files", where)
            self.relative_files(files, f"{where}.files")
            defaults = self.strings(item, "sdkconfig_defaults", where)
            self.relative_files(defaults, f"{where}.sdkconfig_defaults")
            targets.append(Target(name=name, chip=cast("Chip", chip), env=self.env(item, where),
                                  files=files, sdkconfig_defaults=defaults,
                                  pass_env=self.strings(item, "pass_env", where)))
        return tuple(targets)

    def registry(self, data: dict[str, Any]) -> RegistryConfig | None:
        table = self.table(data, "registry", "", ("repository", "insecure", "ca_bundle",
                                                   "timeout", "allow_dirty", "force"))
        if table is None:
            return None
        repository = self.get(table, "repository", "registry", str, required=True)
        insecure = self.get(table, "insecure", "registry", bool, False)
        ca_bundle = self.get(table, "ca_bundle", "registry", str)
        timeout = self.get(table, "timeout", "registry", float, 10.0)
        allow_dirty = bool(self.get(table, "allow_dirty", "registry", bool, False))
        force = bool(self.get(table, "force", "registry", bool, False))
        problem = None if repository is None else _repository_problem(repository)
        if problem is not None:
            self.fail("registry.repository", f"'{repository}' is {problem}"
                      if problem == _NOT_A_REPOSITORY else f"'{repository}': {problem}")
            return None
        if timeout is not None and not 0 < timeout <= 300:
            self.fail("registry.timeout", f"{timeout} is out of range; use 1 to 300 seconds")
        if repository is None or insecure is None or timeout is None:
            return None
        return RegistryConfig(repository=repository, insecure=insecure, ca_bundle=ca_bundle,
                              timeout=timeout, allow_dirty=allow_dirty, force=force)

    def store_dir(self, url: str) -> str:
        """A local store: a directory inside the repository (not .git, not the root itself),
        written the one normalised way our ignore list and `doit clean` compare."""
        if not _is_relative_inside(url, allow_dot=True):
            self.fail("store.url", f"'{url}' is not a directory inside the repository; write a "
                      'path relative to the repository root (e.g. "dist") or an s3:// URL')
            return DEFAULT_STORE
        path = PurePosixPath(url)
        if path.parts == ():
            self.fail("store.url", f"'{url}' is the repository root itself; name a directory "
                      'in it (e.g. "dist")')
            return DEFAULT_STORE
        if ".git" in path.parts:
            self.fail("store.url", f"'{url}' is inside .git; name a directory outside it (e.g. "
                      '"dist")')
            return DEFAULT_STORE
        # build/ is ours: where it lives (a CI cache may link it elsewhere) is not the store's
        if path != PurePosixPath(DEFAULT_STORE) and self.resolved(
                "store.url", url, path, 'name a directory inside the repository (e.g. "dist") '
                "or use an s3:// URL", directory=True) is None:
            return DEFAULT_STORE
        return path.as_posix()

    def store(self, data: dict[str, Any]) -> StoreConfig:
        table = self.table(data, "store", "", ("url", "endpoint_url", "region", "create_bucket"))
        if table is None:
            return StoreConfig()
        url = self.get(table, "url", "store", str, DEFAULT_STORE) or ""
        endpoint = self.get(table, "endpoint_url", "store", str)
        region = self.get(table, "region", "store", str)
        create = self.get(table, "create_bucket", "store", bool, False)
        if not url:
            self.fail("store.url", "empty; remove the key for the default directory "
                      f'{DEFAULT_STORE}, or name a directory (e.g. "dist") or an s3:// URL')
            url = DEFAULT_STORE
        elif url.startswith("s3://"):
            bucket = url[5:].split("/", 1)[0]
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                self.fail("store.url", f"'{bucket}' is not a valid S3 bucket name (3 to 63 "
                          "lower-case letters, digits, '.' and '-')")
        elif "://" in url:
            self.fail("store.url", f"'{url}': only s3:// URLs and local directories are "
                      "supported")
        else:
            url = self.store_dir(url)
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            self.fail("store.endpoint_url", f"'{endpoint}' must start with http:// or https://")
        return StoreConfig(url=url, endpoint_url=endpoint, region=region,
                           create_bucket=bool(create))


def apply_overrides(release: Release, environ: Mapping[str, str],
                    cli: Mapping[str, str | None]) -> Release:
    """``release`` with our variables and command-line parameters applied (pure).

    ``registry=`` on the doit command line beats ``ESP32TASKS_REGISTRY``, which beats
    ``[registry] repository``; each other variable overrides its key.
    """
    problems: list[str] = []

    def flag(name: str) -> bool | None:
        try:
            return parse_bool(name, environ.get(name))
        except ConfigError as exc:
            problems.extend(exc.problems)
            return None

    force = flag("ESP32TASKS_FORCE")
    allow_dirty = flag("ESP32TASKS_ALLOW_DIRTY")
    insecure = flag("ESP32TASKS_REGISTRY_INSECURE")
    force_channel = flag("ESP32TASKS_FORCE_CHANNEL")
    cache_write = flag("ESP32TASKS_CACHE_WRITE")
    project = _project_overrides(release.project, environ, cli, problems)
    cache = _cache_overrides(release.cache, environ, cache_write, problems)
    shard = _shard(release, environ, cli, problems)
    if allow_dirty is not None:
        project = replace(project, allow_dirty=allow_dirty)
    elif release.registry is not None and release.registry.allow_dirty:
        project = replace(project, allow_dirty=True)  # [registry] allow_dirty, as before
    if force_channel is not None:
        project = replace(project, force_channel=force_channel)
    release = replace(release, project=project, actor=_actor(environ), cache=cache,
                      shard=shard, step_summary=environ.get("GITHUB_STEP_SUMMARY", ""))
    registry = release.registry
    cli_repository = cli.get("registry") or None
    env_repository = environ.get("ESP32TASKS_REGISTRY") or None
    repository, source = ((cli_repository, "doit release registry=…") if cli_repository
                          else (env_repository, "ESP32TASKS_REGISTRY"))
    if repository is not None:
        shown = f"registry={repository}" if cli_repository else \
            f"ESP32TASKS_REGISTRY={repository}"
        problem = _repository_problem(repository)
        if problem is not None:
            problems.append(f"{shown}: {problem}")
        else:
            registry = (RegistryConfig(repository=repository, source=source) if registry is None
                        else replace(registry, repository=repository, source=source))
    # credentials matter only where there is a registry to send them to
    login = _login(environ, problems) if registry is not None else None
    if problems:
        raise _error(problems)
    store = replace(release.store, force=True) if force else release.store
    if registry is None:
        return replace(release, store=store)
    changes: dict[str, object] = {"docker_config": _docker_config(environ), "login": login}
    for key, value in (("force", force), ("allow_dirty", allow_dirty), ("insecure", insecure)):
        if value is not None:
            changes[key] = value
    if environ.get("ESP32TASKS_REGISTRY_CA_BUNDLE"):
        changes["ca_bundle"] = environ["ESP32TASKS_REGISTRY_CA_BUNDLE"]
    return replace(release, store=store, registry=replace(registry, **changes))  # type: ignore[arg-type]


def _project_overrides(project: Project, environ: Mapping[str, str],
                       cli: Mapping[str, str | None], problems: list[str]) -> Project:
    """``version=`` beats ``ESP32TASKS_VERSION``, which beats ``[project] version``;
    ``channel=`` beats ``ESP32TASKS_CHANNEL`` (comma-separated), which beats ``channels``."""
    version = cli.get("version") or None
    shown = f"doit release version={version}"
    if version is None:
        version = environ.get("ESP32TASKS_VERSION") or None
        shown = "ESP32TASKS_VERSION"
    if version is not None:
        problem = version_problem(version, allow_git=True)
        if problem is not None:
            problems.append(f"{shown}: {problem}")
        else:
            project = replace(project, version=version, version_source=shown)
    channel = cli.get("channel") or None
    shown = f"doit release channel={channel}"
    if channel is None:
        channel = environ.get("ESP32TASKS_CHANNEL") or None
        shown = f"ESP32TASKS_CHANNEL={channel}"
    if channel is not None:
        channels = tuple(dict.fromkeys(c.strip() for c in channel.split(",") if c.strip()))
        bad = [p for p in map(channel_problem, channels) if p is not None]
        problems.extend(f"{shown}: {p}" for p in bad)
        if not bad:
            project = replace(project, channels=channels, channels_source=shown)
    return project


def cache_url_problem(url: str) -> str | None:
    """``[cache] url``: an S3 URL, or an absolute directory that the checkouts of one
    machine share (never inside a checkout: it would be a source)."""
    if url.startswith("s3://"):
        bucket = url[5:].split("/", 1)[0]
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            return (f"'{bucket}' is not a valid S3 bucket name (3 to 63 lower-case letters, "
                    "digits, '.' and '-')")
        return None
    if "://" in url:
        return f"'{url}': only s3:// URLs and absolute directories are supported"
    if not Path(url).is_absolute():
        return (f"'{url}' must be an s3:// URL or an absolute directory shared by the "
                "checkouts of this machine (e.g. /var/cache/esp32tasks)")
    return None


def _cache_overrides(cache: CacheConfig | None, environ: Mapping[str, str],
                     write: bool | None, problems: list[str]) -> CacheConfig | None:
    """``ESP32TASKS_CACHE`` beats ``[cache] url``; ``..._WRITE`` and ``..._KEY`` are only
    variables (a CI sets them per branch)."""
    url = environ.get("ESP32TASKS_CACHE") or None
    if url is not None:
        problem = cache_url_problem(url)
        if problem is not None:
            problems.append(f"ESP32TASKS_CACHE={url}: {problem}")
            return cache
        store = StoreConfig(url=url) if cache is None else replace(cache.store, url=url)
        cache = CacheConfig(store=store, source="ESP32TASKS_CACHE") if cache is None else \
            replace(cache, store=store, source="ESP32TASKS_CACHE")
    if cache is None:
        return None
    key = environ.get("ESP32TASKS_CACHE_KEY") or ""
    return replace(cache, write=bool(write), key=key.encode())


def _shard(release: Release, environ: Mapping[str, str], cli: Mapping[str, str | None],
           problems: list[str]) -> tuple[str, ...] | None:
    """``targets=`` beats ``ESP32TASKS_TARGETS``: comma-separated names of targets.toml's
    targets, in its order."""
    value = cli.get("targets") or None
    shown = f"doit release targets={value}"
    if value is None:
        value = environ.get("ESP32TASKS_TARGETS") or None
        shown = f"ESP32TASKS_TARGETS={value}"
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    known = [t.name for t in release.targets]
    unknown = [n for n in names if n not in known]
    if unknown:
        problems.append(f"{shown}: no target {', '.join(repr(n) for n in unknown)} in "
                        f"{release.path.name} (its targets: {', '.join(known)})")
        return None
    if not names:
        problems.append(f"{shown}: names no target; list some of {', '.join(known)}")
        return None
    return tuple(n for n in known if n in names)


def _actor(environ: Mapping[str, str]) -> str:
    if environ.get("GITHUB_ACTOR"):
        return f"{environ['GITHUB_ACTOR']} (GitHub Actions)"
    if environ.get("GITLAB_USER_LOGIN"):
        return f"{environ['GITLAB_USER_LOGIN']} (GitLab CI)"
    return ""


def version_problem(version: str, *, allow_git: bool = False) -> str | None:
    """What is wrong with ``version`` as a release's version, if anything."""
    if allow_git and version == GIT:
        return None
    if "+" in version:
        return (f"'{version}' has build metadata ('+'), which an OCI tag cannot hold; drop "
                "it or make it a pre-release (e.g. 1.4.0-rc.1)")
    if parse_version(version) is None:
        hint = ' or "git" (git describe --tags --match \'v[0-9]*\')' if allow_git else ""
        return (f"'{version}' is not a version: use semver MAJOR.MINOR.PATCH[-PRERELEASE] "
                f"(e.g. 1.4.0 or 1.4.0-rc.1){hint}")
    if len(version.encode()) > MAX_VERSION_BYTES:
        return (f"'{version}' is {len(version.encode())} bytes; esp_app_desc_t.version "
                f"holds at most {MAX_VERSION_BYTES}")
    return None


def _pattern_problem(pattern: str) -> str | None:
    import pathspec  # a no-op with no exclude never imports it

    try:
        pathspec.GitIgnoreSpec.from_lines([pattern])
    except (ValueError, TypeError) as exc:
        return f"'{pattern}' is not a gitignore pattern ({exc})"
    return None


def channel_problem(channel: str) -> str | None:
    if channel in RESERVED_CHANNELS:
        return f"'{channel}' is reserved (it marks an uncommitted tree's names); pick another"
    if not _CHANNEL.fullmatch(channel):
        return (f"'{channel}' is not a channel name: a lower-case letter, then lower-case "
                "letters and digits (e.g. stable, beta, dev)")
    return None


def resolve_version(release: Release, described: str | None) -> Release:
    """``release`` with ``project.version = "git"`` replaced by what git describe said
    (``described``: ``git describe --tags --long --abbrev=7 --match 'v[0-9]*'``, or None
    when no such tag reaches HEAD)."""
    project = release.project
    if project.version != GIT:
        return release
    where = f"{release.path.name}: project.version"
    if project.version_source != VERSION_IN_CONFIG:
        where = project.version_source
    if described is None:
        raise _error([f"{where} = \"git\": no tag matching '{TAG_PATTERN}' reaches HEAD; tag "
                      "a release (git tag v0.1.0) or set a literal version"])
    found = from_describe(described)
    if found is None:
        tag = described.rsplit("-", 2)[0]
        raise _error([f"{where} = \"git\": git describe found the tag '{tag}', whose "
                      "version is not semver MAJOR.MINOR.PATCH[-PRERELEASE]; tag the commit "
                      "v<version> (e.g. v1.4.0) or set a literal version"])
    version = str(found)
    problem = version_problem(version)
    if problem is not None:
        raise _error([f"{where} = \"git\" ({described}): {problem}"])
    return replace(release, project=replace(project, version=version,
                                            version_source=f"{where} = \"git\" ({described})"))


def _login(environ: Mapping[str, str], problems: list[str]) -> Login | None:
    user = environ.get("ESP32TASKS_REGISTRY_USER")
    password = environ.get("ESP32TASKS_REGISTRY_PASSWORD")
    if not (user or password):
        return None
    if not (user and password):
        missing = "ESP32TASKS_REGISTRY_PASSWORD" if user else "ESP32TASKS_REGISTRY_USER"
        problems.append(f"{missing} is not set; set both ESP32TASKS_REGISTRY_USER and "
                        "ESP32TASKS_REGISTRY_PASSWORD, or neither to use the docker config")
        return None
    return Login(user, password)


def _docker_config(environ: Mapping[str, str]) -> str:
    """Where docker keeps its config: ``$DOCKER_CONFIG/config.json``, else the home's."""
    if environ.get("DOCKER_CONFIG"):
        return str(Path(environ["DOCKER_CONFIG"]) / "config.json")
    home = environ.get("HOME") or str(Path.home())
    return str(Path(home) / ".docker" / "config.json")


def _type_name(value: object) -> str:
    return {dict: "table", list: "array", str: "str", bool: "bool", int: "int",
            float: "float"}.get(type(value), type(value).__name__)


def _is_relative_inside(name: str, *, allow_dot: bool = False) -> bool:
    path = PurePosixPath(name)
    if not name or "\0" in name or path.is_absolute() or "\\" in name or ".." in path.parts:
        return False
    return allow_dot or path.parts != ()


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long for the file system, say: not a directory of ours
        return False


def _placeholder_problem(arg: str) -> str | None:
    """What is wrong with the placeholders of the argv template ``arg``, if anything.

    Exactly ``{target}``, ``{chip}``, ``{build_dir}`` and ``{version}``, and ``{{``/``}}``
    for braces: str.format would also look up attributes (``{target.__class__}``) and
    indexes, and apply conversions and format specs.
    """
    known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
    try:
        fields = [(name, conversion, spec) for _, name, spec, conversion
                  in string.Formatter().parse(arg) if name is not None]
    except ValueError as exc:
        return (f"'{arg}': not a valid template ({exc}); write {{{{ and }}}} for literal "
                "braces")
    for name, conversion, spec in fields:
        written = "{" + name + (f"!{conversion}" if conversion else "") + \
            (f":{spec}" if spec else "") + "}"
        base = re.split(r"[.\[]", name, maxsplit=1)[0]
        if base not in PLACEHOLDERS:
            return f"'{arg}': bad placeholder '{name}'; known placeholders: {known}"
        if name != base:
            return (f"'{arg}': placeholder '{written}' looks up an attribute or index; write "
                    f"just {{{base}}}")
        if conversion or spec:
            return (f"'{arg}': placeholder '{written}' has a conversion or format spec; write "
                    f"just {{{base}}}")
    return None


def substitute(template: str, values: Mapping[str, str]) -> str:
    """``template`` with its placeholders replaced by ``values`` and ``{{``/``}}`` by braces:
    names only, never an attribute, index, conversion or format spec (str.format does all
    of them). Raises :class:`ConfigError` for a template :func:`parse` would refuse."""
    problem = _placeholder_problem(template)
    if problem is not None:
        raise _error([f"builder.command: {problem}"])
    return "".join(literal + ("" if name is None else values[name])
                   for literal, name, _, _ in string.Formatter().parse(template))


def _repository_problem(repository: str) -> str | None:
    """What keeps ``repository`` from being a ``host[:port]/path`` of distribution's
    reference grammar that oras-py parses the same way, if anything."""
    host_port, slash, path = repository.partition("/")
    found = _HOST_PORT.fullmatch(host_port)
    host, port = (found["host"], found["port"]) if found else ("", None)
    if not (slash and host and _REPOSITORY_PATH.fullmatch(path)) or \
            (port is not None and not (port.isascii() and port.isdigit())):
        problem: str | None = _NOT_A_REPOSITORY
    elif port is not None and (len(port.lstrip("0")) > 5 or not 1 <= int(port) <= 65535):
        problem = f"port {port} is out of range; use a port from 1 to 65535"
    elif not _valid_host(host):
        problem = (f"host '{host}' is not a domain name, an IPv4 address or a bracketed IPv6 "
                   "address; fix the host (e.g. harbor.example.com, 10.0.0.5:5000 or "
                   "[fd00::5]:5000)")
    elif port is None and "." not in host and not host.startswith("["):
        # oras-py (like docker) reads a first component without '.' or ':' as a path
        problem = (f"host '{host}' has no '.' and no port, so registry clients would read it "
                   "as part of the path; write the full host name (harbor.example.com) or add "
                   "the port (localhost:5000)")
    elif len(repository) > MAX_REPOSITORY_LENGTH:
        problem = (f"{len(repository)} characters, over the {MAX_REPOSITORY_LENGTH} a "
                   "repository name may have; shorten it")
    else:
        problem = None
    return problem


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        inner = host[1:-1]
        try:
            return _IPV6.fullmatch(inner) is not None and bool(ipaddress.IPv6Address(inner))
        except ValueError:
            return False
    if not _DOMAIN.fullmatch(host):
        return False
    if host.rsplit(".", 1)[-1].isdigit():  # no top-level domain is numeric: an IPv4 address
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
    return True


#: What a message must not carry raw: line breaks, other control characters, invisible
#: format characters (a right-to-left override) and lone surrogates (unprintable).
_UNPRINTABLE: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _one_line(text: str) -> str:
    """``text`` with every character of :data:`_UNPRINTABLE` written as its escape: a
    message is one line on any terminal, whatever the file or the environment held."""
    if text.isprintable():
        return text
    return "".join(ascii(ch)[1:-1] if unicodedata.category(ch) in _UNPRINTABLE else ch
                   for ch in text)


def _error(problems: list[str]) -> ConfigError:
    return ConfigError([_one_line(problem) for problem in problems])
