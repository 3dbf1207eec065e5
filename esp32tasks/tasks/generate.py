"""The plan as doit task dicts.

Each task declares ``file_dep`` (content, via doit's MD5 checker), ``targets`` (its
receipts), one ``config_changed`` over everything else that decides its output, and a
check that its receipts still read back (:class:`ReceiptsCurrent`), so a release where
nothing changed runs no action at all and a stale receipt re-runs the task that wrote it.
Every action is an :class:`~esp32tasks.tasks.boundary.Action`: a plain function, named in
``doit info`` and ``doit clean``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from doit.tools import config_changed

from esp32tasks import images, plan
from esp32tasks.build import action as build_action
from esp32tasks.build import builders
from esp32tasks.config import RegistryConfig
from esp32tasks.files import remove
from esp32tasks.receiptfile import all_current
from esp32tasks.registry import push, verify
from esp32tasks.store import manifest, upload
from esp32tasks.tasks.boundary import Action
from esp32tasks.tasks.session import Session

__all__ = [
    "ReceiptsCurrent",
    "build_tasks",
    "index_task",
    "manifest_task",
    "push_index_task",
    "push_tasks",
    "release_task",
    "rmtree",
    "tag_tasks",
    "upload_tasks",
    "verify_task",
]

Task = dict[str, Any]


class ReceiptsCurrent:
    """``uptodate``: False when one of the task's receipts no longer reads back (stale:
    hand-edited, truncated, or from another esp32tasks version), so the task runs again."""

    __slots__ = ("receipts", "root")

    def __init__(self, root: Path, *receipts: tuple[PurePosixPath, str]) -> None:
        self.root = root
        self.receipts = receipts

    def __call__(self) -> bool:
        return all_current((self.root / path, kind) for path, kind in self.receipts)

    def __str__(self) -> str:
        return "receipts read back: " + ", ".join(p.as_posix() for p, _ in self.receipts)


def rmtree(path: Path) -> None:
    """A clean action: remove a directory we made, if it is there."""
    shutil.rmtree(path, ignore_errors=True)


def _task(task: Task) -> Task:
    """Every action and clean action is an :class:`Action`; doit info lists their names."""
    actions = task.get("actions") or []
    task["meta"] = {"actions": [a.name for a in actions]}
    return task


def _registry_identity(config: RegistryConfig) -> dict[str, Any]:
    # what decides where an image lands; credentials, force and allow_dirty do not
    return {"repository": config.repository, "insecure": config.insecure}


def build_tasks(s: Session, doc: str | None) -> Iterator[Task]:
    yield {"basename": "build", "name": None, "doc": doc}
    release = s.release
    root = release.root
    for step in s.plan.steps:
        yield _task({
            "basename": "build",
            "name": step.name,
            "doc": f"build the app for {step.name} (chip {step.target.chip}) into {step.build_dir}",
            "actions": [Action(build_action.build, release, step)],
            "file_dep": [*step.sources, *s.toolchain],
            "targets": [*(f"{step.build_dir}/{n}" for n in builders.CONTRACT_FILES),
                        str(step.build_receipt), str(step.app_receipt)],
            "uptodate": [config_changed(builders.settings(release, step.target,
                                                          step.build_dir.as_posix())),
                         ReceiptsCurrent(root, (step.build_receipt, "build"),
                                         (step.app_receipt, "app"))],
            "clean": [Action(rmtree, root / step.build_dir),
                      Action(remove, root / step.build_receipt, root / step.app_receipt)],
        })


def tag_tasks(s: Session, doc: str | None) -> Iterator[Task]:
    yield {"basename": "tag", "name": None, "doc": doc}
    p = s.plan
    root = p.release.root
    for step in p.steps:
        yield _task({
            "basename": "tag",
            "name": step.name,
            "doc": f"OCI image of {step.name}'s app, tagged {step.tag}",
            "actions": [Action(images.tag, p, step)],
            "file_dep": [str(step.app_receipt)],
            "targets": [str(step.image_receipt)],
            "uptodate": [config_changed({"tag": step.tag, "layout": p.oci_dir.as_posix()}),
                         ReceiptsCurrent(root, (step.image_receipt, "image"))],
            "clean": [Action(remove, root / step.image_receipt)],
        })


def index_task(s: Session) -> Task:
    p = s.plan
    root = p.release.root
    return _task({
        "doc": f"OCI image index of all targets, tagged {p.index_tag}",
        "actions": [Action(images.index, p)],
        "file_dep": [str(step.image_receipt) for step in p.steps],
        "targets": [str(p.index_receipt)],
        "uptodate": [config_changed({"tag": p.index_tag,
                                     "annotations": plan.index_annotations(p)}),
                     ReceiptsCurrent(root, (p.index_receipt, "index"))],
        "clean": [Action(remove, root / p.index_receipt), Action(rmtree, root / p.oci_dir)],
    })


def upload_tasks(s: Session, doc: str | None) -> Iterator[Task]:
    yield {"basename": "upload", "name": None, "doc": doc}
    p = s.plan
    root = p.release.root
    store = p.release.store
    for step in p.steps:
        clean = [Action(remove, root / step.upload_receipt)]
        if not store.is_s3:  # a local store is ours to clean; a remote one never is
            clean.append(Action(rmtree, root / store.url / step.store_prefix))
        yield _task({
            "basename": "upload",
            "name": step.name,
            "doc": f"artifacts of {step.name} to {store.url}/{step.store_prefix}",
            "actions": [Action(upload.upload, p, step)],
            "file_dep": [str(step.build_receipt)],
            "targets": [str(step.upload_receipt)],
            "uptodate": [config_changed({"store": store.url, "endpoint": store.endpoint_url,
                                         "prefix": step.store_prefix}),
                         ReceiptsCurrent(root, (step.upload_receipt, "upload"))],
            "clean": clean,
        })


def push_tasks(s: Session, doc: str | None) -> Iterator[Task]:
    yield {"basename": "push", "name": None, "doc": doc}
    p = s.plan
    cfg = p.release.registry
    if cfg is None:
        return
    root = p.release.root
    for step in p.steps:
        yield _task({
            "basename": "push",
            "name": step.name,
            "doc": f"{step.name}'s image to {cfg.repository}:{step.tag}",
            "actions": [Action(push.push_image, p, step, cfg)],
            "file_dep": [str(step.image_receipt)],
            "targets": [str(step.push_receipt)],
            "uptodate": [config_changed({**_registry_identity(cfg), "tag": step.tag}),
                         ReceiptsCurrent(root, (step.push_receipt, "push"))],
            "clean": [Action(remove, root / step.push_receipt)],
        })


def push_index_task(s: Session) -> Task:
    p = s.plan
    cfg = p.release.registry
    if cfg is None:
        return {"basename": "push-index", "doc": "no registry: set [registry] in targets.toml",
                "actions": None}
    root = p.release.root
    return _task({
        "basename": "push-index",
        "doc": f"the index to {cfg.repository}:{p.index_tag}",
        "actions": [Action(push.push_index, p, cfg)],
        "file_dep": [str(p.index_receipt), *(str(step.push_receipt) for step in p.steps)],
        "targets": [str(p.push_index_receipt)],
        "uptodate": [config_changed({**_registry_identity(cfg), "tag": p.index_tag}),
                     ReceiptsCurrent(root, (p.push_index_receipt, "push-index"))],
        "clean": [Action(remove, root / p.push_index_receipt)],
    })


def _publish_deps(s: Session) -> list[str]:
    """What ``release`` adds when a registry is configured."""
    return ["push-index"] if s.release.registry is not None else []


def manifest_task(s: Session) -> Task:
    p = s.plan
    root = p.release.root
    store = p.release.store
    pushed = s.release.registry is not None  # push receipts go in, too
    clean = [Action(remove, root / manifest.RECEIPT)]
    if not store.is_s3:  # a remote store is never ours to clean
        clean.append(Action(remove, root / store.url / manifest.manifest_key(p)))
    return _task({
        "doc": f"{manifest.MANIFEST_NAME} to {store.url}/{p.release_prefix}",
        "actions": [Action(manifest.publish, p, pushed)],
        "file_dep": [str(f) for f in manifest.inputs(p, pushed=pushed)],
        # after every upload, the index and (with a registry) every push
        "task_dep": ["index", *(f"upload:{step.name}" for step in p.steps), *_publish_deps(s)],
        "targets": [str(manifest.RECEIPT)],
        "uptodate": [config_changed({
            "store": store.url, "endpoint": store.endpoint_url, "key": manifest.manifest_key(p),
            "git": [p.git.revision, p.git.commit_time, p.git.dirty], "pushed": pushed})],
        "clean": clean,
    })


def release_task(s: Session, doc: str | None) -> Task:
    return {
        "doc": doc,
        "actions": None,
        "task_dep": ["index", *(f"upload:{step.name}" for step in s.plan.steps),
                     *_publish_deps(s), "manifest"],
    }


def verify_task(s: Session, doc: str | None) -> Task:
    return _task({
        "basename": "verify",
        "doc": doc,
        "actions": [Action(verify.verify, s.plan, s.release.registry)],
        "uptodate": [False],
        "verbosity": 2,
    })
