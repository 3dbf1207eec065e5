"""doit glue for the registry: ``push:<target>``, ``push-index`` and ``verify``.

Push tasks depend on the image receipts (content) and on the repository and tag (through
``config_changed``), so a release where nothing changed runs no push action and sends no
request. :mod:`esp32tasks.tasks` re-exports these generators.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from doit.tools import config_changed

from esp32tasks import registry
from esp32tasks.config import RegistryConfig
from esp32tasks.deferred import call
from esp32tasks.errors import Esp32TasksError
from esp32tasks.receipts import remove
from esp32tasks.reporting import fail

__all__ = ["current_registry", "release_deps", "task_push", "task_push_index", "task_verify"]

Task = dict[str, Any]


@functools.cache
def current_registry() -> RegistryConfig | None:
    """``[registry]`` with the overrides of ``doit ... registry=host/path`` and the env."""
    from doit import get_var

    from esp32tasks.tasks import current_plan

    cli = get_var("registry")
    try:
        return registry.resolve(current_plan().release.registry, None,
                                cli if isinstance(cli, str) and cli else None)
    except Esp32TasksError as exc:
        raise fail(str(exc)) from None


def release_deps() -> list[str]:
    """What ``release`` adds when a registry is configured."""
    return ["push-index"] if current_registry() is not None else []



def _identity(config: RegistryConfig) -> dict[str, Any]:
    # what decides where an image lands; credentials, force and allow_dirty do not
    return {"repository": config.repository, "insecure": config.insecure}


def task_push() -> Iterator[Task]:
    """Push each target's image to the registry under its per-commit tag."""
    from esp32tasks.tasks import current_plan

    p = current_plan()
    cfg = current_registry()
    yield {"basename": "push", "name": None, "doc": task_push.__doc__}
    if cfg is None:
        return
    root = p.release.root
    for step in p.steps:
        receipt = step.push_receipt
        yield {
            "basename": "push",
            "name": step.name,
            "doc": f"{step.name}'s image to {cfg.repository}:{step.tag}",
            "actions": [(call, ("push", "push_image", p, step, cfg))],
            "file_dep": [str(step.image_receipt)],
            "targets": [str(receipt)],
            "uptodate": [config_changed({**_identity(cfg), "tag": step.tag})],
            "clean": [(remove, (root / receipt,))],
        }


def task_push_index() -> Task:
    """Push the multi-target index (after every target's image) to the registry."""
    from esp32tasks.tasks import current_plan

    p = current_plan()
    cfg = current_registry()
    if cfg is None:
        return {"basename": "push-index", "doc": "no registry: set [registry] in targets.toml",
                "actions": None}
    return {
        "basename": "push-index",
        "doc": f"the index to {cfg.repository}:{p.index_tag}",
        "actions": [(call, ("push", "push_index", p, cfg))],
        "file_dep": [str(p.index_receipt), *(str(s.push_receipt) for s in p.steps)],
        "targets": [str(p.push_index_receipt)],
        "uptodate": [config_changed({**_identity(cfg), "tag": p.index_tag})],
        "clean": [(remove, (p.release.root / p.push_index_receipt,))],
    }


def task_verify() -> Task:
    """Check the registry serves exactly this build, resolved as esp32-flashjob does."""
    from esp32tasks.tasks import current_plan

    p = current_plan()
    cfg = current_registry()
    if cfg is None:
        return {"doc": task_verify.__doc__, "actions": [(_no_registry, ())],
                "uptodate": [False]}
    return {
        "basename": "verify",
        "doc": task_verify.__doc__,
        "actions": [(call, ("verify", "verify", p, cfg))],
        "uptodate": [False],
        "verbosity": 2,
    }


def _no_registry() -> Any:
    from doit.exceptions import TaskFailed

    return TaskFailed("no registry configured: add [registry] repository = "
                      '"host/path" to targets.toml, or set ESP32TASKS_REGISTRY')
