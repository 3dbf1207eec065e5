"""doit glue: the plan as task dicts. A firmware repo's ``dodo.py`` star-imports this module.

Each task declares ``file_dep`` (content, via doit's MD5 checker), ``targets`` (its
receipt) and one ``config_changed`` over everything else that decides its output, so a
release where nothing changed runs no action at all.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from doit.tools import config_changed

from esp32tasks import builders, config, gitinfo, manifest, plan
from esp32tasks.deferred import call
from esp32tasks.errors import Esp32TasksError
from esp32tasks.pushtasks import release_deps, task_push, task_push_index, task_verify
from esp32tasks.receipts import remove
from esp32tasks.reporting import Reporter, fail

__all__ = [
    "DOIT_CONFIG",
    "task_build",
    "task_index",
    "task_manifest",
    "task_push",
    "task_push_index",
    "task_release",
    "task_tag",
    "task_upload",
    "task_verify",
]

CONFIG_FILE = "targets.toml"

DOIT_CONFIG: dict[str, Any] = {
    "default_tasks": ["release"],
    "dep_file": plan.STATE_FILE,
    "backend": "sqlite3-durable",
    "check_file_uptodate": "md5",
    "reporter": Reporter,
}

Task = dict[str, Any]


@functools.cache
def current_plan() -> plan.Plan:
    """Load ``targets.toml`` and git once per doit run; bad input exits with one message."""
    root = Path.cwd()
    try:
        release = config.load(root / CONFIG_FILE)
        own = [plan.BUILD_DIR.as_posix()]
        if not release.store.is_s3:
            own.append(release.store.url)
        git = gitinfo.read(root, release.project.app_dir, own, cache=root / plan.GIT_CACHE)
        return plan.expand(release, git)
    except Esp32TasksError as exc:
        raise fail(str(exc)) from None


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _build_tasks() -> Iterator[Task]:
    p = current_plan()
    release = p.release
    root = release.root
    toolchain = builders.resolve_toolchain(release)
    yield {"basename": "build", "name": None, "doc": task_build.__doc__}
    for step in p.steps:
        settings = builders.settings(release, step.target, step.build_dir.as_posix())
        yield {
            "basename": "build",
            "name": step.name,
            "doc": f"build the app for {step.name} (chip {step.target.chip}) into {step.build_dir}",
            "actions": [(call, ("actions", "build", release, step))],
            "file_dep": [*step.sources, *toolchain],
            "targets": [*(f"{step.build_dir}/{n}" for n in builders.CONTRACT_FILES),
                        str(step.build_receipt), str(step.app_receipt)],
            "uptodate": [config_changed(settings)],
            "clean": [(_rmtree, (root / step.build_dir,)),
                      (remove, (root / step.build_receipt, root / step.app_receipt))],
        }


def _tag_tasks() -> Iterator[Task]:
    p = current_plan()
    root = p.release.root
    yield {"basename": "tag", "name": None, "doc": task_tag.__doc__}
    for step in p.steps:
        yield {
            "basename": "tag",
            "name": step.name,
            "doc": f"OCI image of {step.name}'s app, tagged {step.tag}",
            "actions": [(call, ("actions", "tag", p.release, step, p.oci_dir.as_posix()))],
            "file_dep": [str(step.app_receipt)],
            "targets": [str(step.image_receipt)],
            "uptodate": [config_changed({"tag": step.tag, "layout": p.oci_dir.as_posix()})],
            "clean": [(remove, (root / step.image_receipt,))],
        }


def _index_tasks() -> Task:
    p = current_plan()
    root = p.release.root
    return {
        "doc": f"OCI image index of all targets, tagged {p.index_tag}",
        "actions": [(call, ("actions", "index", p))],
        "file_dep": [str(s.image_receipt) for s in p.steps],
        "targets": [str(p.index_receipt)],
        "uptodate": [config_changed({"tag": p.index_tag,
                                     "annotations": plan.index_annotations(p)})],
        "clean": [(remove, (root / p.index_receipt,)), (_rmtree, (root / p.oci_dir,))],
    }


def _upload_tasks() -> Iterator[Task]:
    p = current_plan()
    release = p.release
    root = release.root
    store = release.store
    yield {"basename": "upload", "name": None, "doc": task_upload.__doc__}
    for step in p.steps:
        clean: list[Any] = [(remove, (root / step.upload_receipt,))]
        if not store.is_s3:  # a local store is ours to clean; a remote one never is
            clean.append((_rmtree, (root / store.url / step.store_prefix,)))
        yield {
            "basename": "upload",
            "name": step.name,
            "doc": f"artifacts of {step.name} to {store.url}/{step.store_prefix}",
            "actions": [(call, ("actions", "upload", p, step))],
            "file_dep": [str(step.build_receipt)],
            "targets": [str(step.upload_receipt)],
            "uptodate": [config_changed({"store": store.url, "endpoint": store.endpoint_url,
                                         "prefix": step.store_prefix})],
            "clean": clean,
        }


def _manifest_tasks() -> Task:
    p = current_plan()
    store = p.release.store
    pushed = bool(release_deps())  # a registry is configured: push receipts go in, too
    return {
        "doc": f"{manifest.MANIFEST_NAME} to {store.url}/{p.release_prefix}",
        "actions": [(call, ("manifest", "publish", p, pushed))],
        "file_dep": [str(f) for f in manifest.inputs(p, pushed=pushed)],
        # after every upload, the index and (with a registry) every push
        "task_dep": ["index", *(f"upload:{s.name}" for s in p.steps), *release_deps()],
        "targets": [str(manifest.RECEIPT)],
        "uptodate": [config_changed({
            "store": store.url, "endpoint": store.endpoint_url, "key": manifest.manifest_key(p),
            "git": [p.git.revision, p.git.commit_time, p.git.dirty], "pushed": pushed})],
        "clean": [(remove, (p.release.root / manifest.RECEIPT,
                             *([] if store.is_s3 else  # a remote store is never ours to clean
                               [p.release.root / store.url / manifest.manifest_key(p)])))],
    }


def _release_tasks() -> Task:
    p = current_plan()
    return {
        "doc": task_release.__doc__,
        "actions": None,
        "task_dep": ["index", *(f"upload:{s.name}" for s in p.steps), *release_deps(),
                     "manifest"],
    }


# doit reads each task_* function's source to order them: keep these one-liners.
def task_build() -> Iterator[Task]:
    """Build the app for each target (ESP-IDF's idf.py or the configured command)."""
    return _build_tasks()


def task_tag() -> Iterator[Task]:
    """Package each target's app binary as an OCI image in build/oci, tagged per commit."""
    return _tag_tasks()


def task_index() -> Task:
    """Combine every target's image into one OCI image index in build/oci."""
    return _index_tasks()


def task_upload() -> Iterator[Task]:
    """Copy every build artifact of each target to the store."""
    return _upload_tasks()


def task_manifest() -> Task:
    """Write release.json beside the targets in the store, last: its presence means complete."""
    return _manifest_tasks()


def task_release() -> Task:
    """Build, package, index and upload everything (the default task)."""
    return _release_tasks()
