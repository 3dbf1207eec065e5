"""The per-run session: ``targets.toml`` with its overrides, git, and the plan, read once.

doit calls every ``task_*`` function of a run in one process; they share one
:class:`Session` (:func:`current`). Bad input while it is made is one ``error:`` line and
exit code 2 (:func:`~esp32tasks.tasks.boundary.generating`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, NamedTuple

from esp32tasks import config, gitinfo
from esp32tasks.build import builders
from esp32tasks.config import Key, Release
from esp32tasks.errors import ConfigError, Esp32TasksError
from esp32tasks.plan import BUILD_DIR, GIT_CACHE, Plan, expand
from esp32tasks.runcache import per_run
from esp32tasks.tasks.boundary import generating
from esp32tasks.version import GIT

__all__ = ["CONFIG_FILE", "DOIT_KEYS", "Session", "check_doit_config", "current",
           "open_session"]

CONFIG_FILE: Final = "targets.toml"
#: The task that assembles a sharded release: asked for on doit's command line, the run
#: builds nothing (every step's receipts come from the shards).
ASSEMBLE: Final = "publish-index"
#: The DOIT_CONFIG keys esp32tasks needs (see :func:`esp32tasks.tasks.doit_config`).
DOIT_KEYS: Final = ("default_tasks", "dep_file", "backend", "check_file_uptodate", "reporter")


class Session(NamedTuple):  # cheaper to create than a dataclass, on every no-op
    plan: Plan
    toolchain: tuple[str, ...]
    """Absolute paths of the toolchain programs (file_dep of every build)."""

    @property
    def release(self) -> Release:
        return self.plan.release

    def fingerprint(self, key: Key) -> str:
        """``sha256:<hex>`` of the key's public key (what the sign tasks' ``config_changed``
        holds, never private material), read once per run; empty when the key cannot be
        read now (its ``sign`` task then says why, when it runs)."""
        found = _fingerprints()
        if key.name not in found:
            found[key.name] = _fingerprint(self.release.root, key)
        return found[key.name]

    def fingerprints(self) -> dict[str, str]:
        """Key name -> :meth:`fingerprint`, for every key."""
        return {key.name: self.fingerprint(key) for key in self.release.keys}


@per_run
def _fingerprints() -> dict[str, str]:
    return {}


def _fingerprint(root: Path, key: Key) -> str:
    from esp32tasks.sign import keys
    from esp32tasks.sign.action import public_pem

    try:
        return keys.fingerprint(public_pem(key, root))
    except (OSError, Esp32TasksError):
        return ""


def open_session(root: Path, environ: Mapping[str, str], cli: Mapping[str, str | None],
                 *, state: Path | None = None, assemble: bool = False) -> Session:
    """Read config (with overrides), git and the plan for the repository at ``root``.

    ``state`` is doit's state file (``dep_file``, ``--db-file``): git's stat cache lives
    beside it (``build/gitstate.json`` by default), so a no-op release of a read-only
    checkout whose state is elsewhere writes nothing in the checkout.
    """
    release = config.load(root / CONFIG_FILE, environ, cli)
    if assemble:
        if release.shard is not None:
            raise ConfigError([f"{ASSEMBLE} assembles every target; drop targets= (and "
                               "ESP32TASKS_TARGETS) from its run"])
        release = replace(release, assemble=True)
    own = [BUILD_DIR.as_posix()]
    if not release.store.is_s3:
        own.append(release.store.url)
    cache = root / GIT_CACHE
    if state is not None:
        cache = (root / state).parent / GIT_CACHE.name
        own.extend(_outside_build(root, (state, Path(f"{state}-journal"),
                                         Path(f"{state}.lock"), cache)))
    git = gitinfo.read(root, release.project.app_dir, own, cache=cache,
                       describe=release.project.version == GIT)
    release = config.resolve_version(release, git.described)
    return Session(plan=expand(release, git),
                   toolchain=tuple(builders.resolve_toolchain(release)))


def _outside_build(root: Path, files: tuple[Path, ...]) -> list[str]:
    """The state's files that are in the checkout but not in build/: neither sources nor
    changes, or every release from it would be dirty."""
    found = []
    for file in files:
        try:
            rel = Path(os.path.abspath(root / file)).relative_to(root)  # noqa: PTH100
        except ValueError:
            continue  # outside the checkout
        if rel.parts and rel.parts[0] != BUILD_DIR.as_posix():
            found.append(rel.as_posix())
    return found


@per_run
def current() -> Session:
    """This run's session, for the repository doit runs in."""
    from doit import get_var

    with generating():
        check_doit_config(sys.modules.values())
        cli = {name: _text(get_var(name)) for name in config.CLI_PARAMETERS}
        session = open_session(Path.cwd(), os.environ, cli, state=_state_file(),
                               assemble=ASSEMBLE in sys.argv[1:])
        for warning in session.plan.warnings:
            sys.stderr.write(f"warning: {warning}\n")
        return session


def _state_file() -> Path | None:
    """doit's state file for this run: it opens the state before it asks for tasks."""
    from doit.globals import Globals

    name = getattr(Globals.dep_manager, "name", None)  # the documented attribute
    return Path(name) if isinstance(name, str) and name else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def check_doit_config(modules: Any) -> None:
    """Refuse a ``dodo.py`` whose own ``DOIT_CONFIG`` dropped our settings.

    A star import hands doit our ``DOIT_CONFIG``; a ``DOIT_CONFIG = {...}`` written after it
    replaces it whole, and doit would then keep its state in the repository root and run
    every task (``verify`` too) by default. ``doit_config(...)`` keeps ours and adds yours.
    """
    for module in list(modules):
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict) or module.__name__.startswith("esp32tasks."):
            continue
        release = namespace.get("task_release")
        if getattr(release, "__module__", None) != "esp32tasks.tasks":
            continue
        settings = namespace.get("DOIT_CONFIG")
        missing = [k for k in DOIT_KEYS if not isinstance(settings, dict) or k not in settings]
        if missing:
            where = Path(getattr(module, "__file__", None) or "dodo.py").name
            raise ConfigError([
                f"{where}: DOIT_CONFIG lacks esp32tasks' {', '.join(missing)}: doit would keep "
                "its state in the repository root and run every task by default; write "
                "`DOIT_CONFIG = doit_config(...)` (from esp32tasks.tasks import doit_config), "
                "which keeps them and adds yours"])
