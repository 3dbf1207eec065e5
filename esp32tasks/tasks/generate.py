"""The plan as doit task dicts.

Each task declares ``file_dep`` (content, via doit's MD5 checker), ``targets`` (its
receipts), one ``config_changed`` over everything else that decides its output, a check
that its receipts still read back (:class:`ReceiptsCurrent`) and one that the outputs they
list are still there (:class:`OutputsPresent`: build artifacts, layout blobs and refs, a
local store's copies), so a release where nothing changed runs no action at all, and a
stale receipt or a lost output re-runs the task that made it.
Every action is an :class:`~esp32tasks.tasks.boundary.Action`: a plain function, named in
``doit info`` and ``doit clean``.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from doit.tools import config_changed

from esp32tasks import bundle, images, plan, summary
from esp32tasks.build import action as build_action
from esp32tasks.build import builders
from esp32tasks.config import Key, RegistryConfig
from esp32tasks.errors import Esp32TasksError, ReleaseRefused, VerifyFailed
from esp32tasks.files import remove
from esp32tasks.plan import Delta, Plan, Step, Variant
from esp32tasks.receiptfile import all_current
from esp32tasks.registry import push, referrers
from esp32tasks.registry import verify as registry_verify
from esp32tasks.sign import action as sign_action
from esp32tasks.store import manifest, patches, shards, upload
from esp32tasks.store import verify as store_verify
from esp32tasks.tasks import cached, channels
from esp32tasks.tasks.boundary import Action
from esp32tasks.tasks.session import ASSEMBLE, Session

__all__ = [
    "OutputsPresent",
    "ReceiptsCurrent",
    "build_tasks",
    "channel_tasks",
    "delta_tasks",
    "index_tasks",
    "manifest_task",
    "preflight",
    "preflight_task",
    "publish_index_task",
    "push_delta_tasks",
    "push_index_tasks",
    "push_tasks",
    "release_task",
    "rmtree",
    "shards_task",
    "share_tasks",
    "sign_tasks",
    "tag_tasks",
    "upload_tasks",
    "verify",
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


class OutputsPresent:
    """``uptodate``: False when an output the task's receipt lists is gone or has another
    size, so the task makes it again. ``check`` stats, never hashes (the no-op budget)."""

    __slots__ = ("args", "check")

    def __init__(self, check: Callable[..., bool], *args: Any) -> None:
        self.check = check
        self.args = args

    def __call__(self) -> bool:
        return self.check(*self.args)

    def __str__(self) -> str:
        return f"outputs present: {self.check.__module__}.{self.check.__qualname__}"


def rmtree(path: Path) -> None:
    """A clean action: remove a directory we made, if it is there."""
    shutil.rmtree(path, ignore_errors=True)


def _task(task: Task) -> Task:
    """``doit info`` lists the names of the task's actions under ``meta``."""
    task["meta"] = {"actions": [a.name for a in task.get("actions") or []]}
    return task


def _producer(s: Session, *, basename: str, name: str | None, doc: str, action: Action,
              file_dep: list[str], receipts: Sequence[tuple[PurePosixPath, str]],
              settings: Mapping[str, Any], outputs: Sequence[str] = (),
              present: OutputsPresent | None = None, clean: Sequence[Action] = (),
              setup: Sequence[str] = ()) -> Task:
    """A task that writes receipts: they are its targets (with ``outputs``), stale ones
    re-run it, and so do lost outputs its receipts list (``present``); ``settings`` is its
    one ``config_changed``, and clean removes them (after ``clean``)."""
    root = s.release.root
    task: Task = {
        "basename": basename,
        "doc": doc,
        "actions": [action],
        "file_dep": file_dep,
        "targets": [*outputs, *(str(path) for path, _ in receipts)],
        "uptodate": [config_changed(dict(settings)), ReceiptsCurrent(root, *receipts),
                     *([] if present is None else [present])],
        "clean": [*clean, Action(remove, *(root / path for path, _ in receipts))],
    }
    if setup:
        task["setup"] = list(setup)
    if name is not None:
        task["name"] = name
    return _task(task)


def _registry_identity(config: RegistryConfig) -> dict[str, Any]:
    # what decides where an image lands; credentials, force and allow_dirty do not
    return {"repository": config.repository, "insecure": config.insecure}


def build_tasks(s: Session, doc: str | None) -> Iterator[Task]:
    yield {"basename": "build", "name": None, "doc": doc}
    release = s.release
    for step in s.plan.local_steps:
        yield _producer(
            s, basename="build", name=step.name,
            doc=f"build the app for {step.name} (chip {step.target.chip}) into "
                f"{step.build_dir}",
            action=Action(build_action.build, release, step) if release.cache is None else
            Action(cached.build, release, step, s.toolchain),
            file_dep=[*step.sources, *s.toolchain],
            outputs=[f"{step.build_dir}/{n}" for n in builders.CONTRACT_FILES],
            receipts=[(step.build_receipt, "build"), (step.app_receipt, "app")],
            settings=builders.settings(release, step.target, step.build_dir.as_posix()),
            present=OutputsPresent(build_action.outputs_present, release.root, step),
            clean=[Action(rmtree, release.root / step.build_dir)])


def sign_tasks(s: Session, doc: str | None) -> Iterator[Task]:
    yield {"basename": "sign", "name": None, "doc": doc}
    p = s.plan
    for step in p.local_signed:
        key, signed_dir = step.signing
        unsigned = p.build_of(step)
        yield _producer(
            s, basename="sign", name=step.name,
            doc=f"sign {step.target.name}'s app{_and_bootloader(key.scheme)} with key "
                f"{key.name} ({key.scheme}) into {signed_dir}",
            action=Action(sign_action.sign, p, step) if p.release.cache is None else
            Action(cached.sign, p, step, s.fingerprint(key)),
            file_dep=[str(unsigned.build_receipt), str(unsigned.app_receipt),
                      *([key.public_key.as_posix()] if key.public_key is not None else [])],
            receipts=[(step.build_receipt, "build"), (step.app_receipt, "app")],
            # the public key's fingerprint, never private material: a rotated key re-signs
            settings={"key": key.name, "scheme": key.scheme,
                      "fingerprint": s.fingerprint(key), "command": list(key.sign_command),
                      "dir": signed_dir.as_posix()},
            present=OutputsPresent(build_action.outputs_present, p.release.root, step),
            clean=[Action(rmtree, p.release.root / signed_dir)])


def _and_bootloader(scheme: str) -> str:
    return " and bootloader" if sign_action.signs(scheme, "bootloader") else ""


def tag_tasks(s: Session, doc: str | None) -> Iterator[Task]:
    yield {"basename": "tag", "name": None, "doc": doc}
    p = s.plan
    for step in p.local_published:
        yield _producer(
            s, basename="tag", name=step.name,
            doc=f"OCI image of {step.name}'s app, tagged {step.tag}",
            action=Action(images.tag, p, step),
            file_dep=[str(step.app_receipt)],
            receipts=[(step.image_receipt, "image")],
            settings={"tag": step.tag, "layout": p.oci_dir.as_posix()},
            present=OutputsPresent(images.image_present, p, step))


def index_tasks(s: Session) -> Iterator[Task]:
    p = s.plan
    for variant in () if p.sharded else p.variants:
        yield _producer(
            s, basename=variant.index_task, name=None,
            doc=f"OCI image index of all {_signed_by(variant)}targets, tagged "
                f"{variant.index_tag}",
            action=Action(images.index, p, variant),
            file_dep=[str(step.image_receipt) for step in variant.steps],
            receipts=[(variant.index_receipt, "index")],
            settings={"tag": variant.index_tag,
                      "annotations": plan.index_annotations(p, variant)},
            present=OutputsPresent(images.index_present, p, variant),
            clean=[Action(rmtree, p.release.root / p.oci_dir)])


def _signed_by(variant: Variant) -> str:
    return "" if variant.key is None else f"{variant.key.name}-signed "


def _index_tasks(p: Plan) -> list[str]:
    return [] if p.sharded else [v.index_task for v in p.variants]


def preflight(plan: Plan, registry: RegistryConfig | None) -> None:
    """The ``preflight`` action: every refusal that can be known before the run's first
    remote write (a dirty tree, the version's index tag or release.json from another
    commit, credentials that may not push), checked together, so that a refused release
    writes nothing anywhere. doit runs it as a ``setup`` task: only when some publishing
    task is about to run (a no-op sends nothing)."""
    if plan.git.dirty and not plan.release.project.allow_dirty:
        raise push.dirty_refused("this release")
    checks: list[Callable[[], None]] = [lambda: manifest.preflight(plan),
                                        lambda: channels.check(plan, registry)]
    if registry is not None:
        checks.insert(0, lambda: push.preflight(plan, registry))
    failed: list[Esp32TasksError] = []
    for check in checks:
        try:
            check()
        except Esp32TasksError as exc:
            failed.append(exc)
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise ReleaseRefused("\n".join(map(str, failed)))


def _remote(s: Session) -> bool:
    """Something is written outside the checkout, or a channel moves."""
    return s.release.registry is not None or s.release.store.is_s3 or bool(s.plan.channels)


def _setup(s: Session) -> list[str]:
    """The preflight, for a task that writes somewhere remote."""
    return ["preflight"] if _remote(s) else []


def preflight_task(s: Session) -> Task:
    p = s.plan
    return _task({
        "basename": "preflight",
        "doc": "check before the first remote write that nothing will be refused",
        "actions": [Action(preflight, p, p.release.registry)] if _remote(s) else None,
        # the index's digest is what its tag must point at, or nothing
        "task_dep": _index_tasks(p) if p.release.registry is not None else [],
        "uptodate": [False],
    })


def delta_tasks(s: Session, doc: str | None) -> Iterator[Task]:
    yield {"basename": "delta", "name": None, "doc": doc}
    p = s.plan
    config, store = p.release.delta, p.release.store
    for delta in p.local_deltas:
        yield _producer(
            s, basename="delta", name=delta.name,
            doc=f"delta OTA patches of {delta.name}'s app from "
                f"{_bases(delta.bases, 0 if config is None else config.latest)}",
            action=Action(make_patches, p, delta, p.release.registry),
            file_dep=[str(delta.step.app_receipt)],
            receipts=[(delta.receipt, "delta")],
            settings={"bases": list(delta.base_manifests), "store": store.url,
                      "endpoint": store.endpoint_url,
                      "max_ratio": None if config is None else config.max_ratio,
                      "latest": None if config is None else config.latest},
            present=OutputsPresent(patches.present, p.release.root, delta),
            clean=[Action(rmtree, p.release.root / delta.dir)])


def make_patches(plan: Plan, delta: Delta, registry: RegistryConfig | None) -> None:
    """The ``delta:<t>`` action: the store's patches action, pulling a base app the store
    lost from the registry when one is configured."""
    pull = None if registry is None else functools.partial(referrers.pull_app,
                                                          plan.release.root, registry)
    patches.make(plan, delta, pull)


def _bases(bases: tuple[str, ...], latest: int) -> str:
    return ", ".join([*bases, *([f"the {latest} newest in the store"] if latest else [])])


def _delta_receipt(p: Plan, step: Step) -> list[str]:
    delta = p.delta_of(step)
    return [] if delta is None else [str(delta.receipt)]


def upload_tasks(s: Session, doc: str | None) -> Iterator[Task]:
    yield {"basename": "upload", "name": None, "doc": doc}
    p = s.plan
    store = p.release.store
    for step in p.local_published:
        yield _producer(
            s, basename="upload", name=step.name,
            doc=f"artifacts of {step.name} to {store.url}/{step.store_prefix}",
            action=Action(upload.upload, p, step),
            file_dep=[str(step.build_receipt), *_delta_receipt(p, step)],
            receipts=[(step.upload_receipt, "upload")],
            settings={"store": store.url, "endpoint": store.endpoint_url,
                      "prefix": step.store_prefix},
            # a local store's copies are a stat away; an S3 store is not asked on a no-op
            present=None if store.is_s3 else OutputsPresent(upload.objects_present, p, step),
            # a local store is ours to clean; a remote one never is
            clean=[] if store.is_s3 else
            [Action(rmtree, p.release.root / store.url / step.store_prefix)],
            setup=_setup(s))


def push_tasks(s: Session, doc: str | None) -> Iterator[Task]:
    yield {"basename": "push", "name": None, "doc": doc}
    p = s.plan
    cfg = p.release.registry
    if cfg is None:
        return
    for step in p.local_published:
        yield _producer(
            s, basename="push", name=step.name,
            doc=f"{step.name}'s image to {cfg.repository}:{step.tag}",
            action=Action(push.push_image, p, step, cfg),
            file_dep=[str(step.image_receipt)],
            receipts=[(step.push_receipt, "push")],
            settings={**_registry_identity(cfg), "tag": step.tag},
            setup=_setup(s))


def push_delta_tasks(s: Session, doc: str | None) -> Iterator[Task]:
    yield {"basename": "push-delta", "name": None, "doc": doc}
    p = s.plan
    cfg = p.release.registry
    if cfg is None:
        return
    for delta in p.local_deltas:
        yield _producer(
            s, basename="push-delta", name=delta.name,
            doc=f"{delta.name}'s patches as referrers of its image in {cfg.repository}",
            action=Action(referrers.push_patches, p, delta, cfg),
            file_dep=[str(delta.receipt), str(delta.step.image_receipt),
                      str(delta.step.push_receipt)],
            receipts=[(delta.push_receipt, "push-delta")],
            settings=_registry_identity(cfg),
            setup=_setup(s))


def push_index_tasks(s: Session) -> Iterator[Task]:
    p = s.plan
    cfg = p.release.registry
    for variant in () if p.sharded else p.variants:
        if cfg is None:
            yield {"basename": variant.push_index_task,
                   "doc": "no registry: set [registry] in targets.toml", "actions": None}
            continue
        yield _producer(
            s, basename=variant.push_index_task, name=None,
            doc=f"the index to {cfg.repository}:{variant.index_tag}",
            action=Action(push.push_index, p, variant, cfg),
            file_dep=[str(variant.index_receipt),
                      *(str(step.push_receipt) for step in variant.steps)],
            receipts=[(variant.push_index_receipt, "push-index")],
            settings={**_registry_identity(cfg), "tag": variant.index_tag},
            setup=_setup(s))


def _publish_deps(s: Session) -> list[str]:
    """What ``release`` adds when a registry is configured."""
    if s.release.registry is None:
        return []
    return [*([] if s.plan.sharded else (v.push_index_task for v in s.plan.variants)),
            *(f"push-delta:{d.name}" for d in s.plan.local_deltas)]


def manifest_task(s: Session) -> Task:
    p = s.plan
    if p.sharded:
        return {"doc": f"a shard writes no {manifest.MANIFEST_NAME}: `doit publish-index` does",
                "actions": None}
    root = p.release.root
    store = p.release.store
    pushed = s.release.registry is not None  # push receipts go in, too
    clean = [Action(remove, root / manifest.RECEIPT)]
    if not store.is_s3:  # a remote store is never ours to clean
        clean.append(Action(remove, root / store.url / manifest.manifest_key(p),
                            *(root / store.url / v.prefix / bundle.WEB_MANIFEST
                              for v in p.variants)))
    return _task({
        "doc": f"{manifest.MANIFEST_NAME} to {store.url}/{p.release_prefix}",
        "actions": [Action(manifest.publish, p, pushed, s.fingerprints())],
        "file_dep": [str(f) for f in manifest.inputs(p, pushed=pushed)],
        # after every upload, the index and (with a registry) every push
        "task_dep": [*_index_tasks(p), *(f"upload:{step.name}" for step in p.local_published),
                     *_publish_deps(s)],
        "targets": [str(manifest.RECEIPT)],
        "setup": _setup(s),
        "uptodate": [config_changed({
            "store": store.url, "endpoint": store.endpoint_url, "key": manifest.manifest_key(p),
            "git": [p.git.revision, p.git.commit_time, p.git.dirty], "pushed": pushed,
            "keys": {k.name: [k.scheme, s.fingerprint(k)] for k in p.release.keys}}),
            *([] if store.is_s3 else [OutputsPresent(manifest.published_present, p)])],
        "clean": clean,
    })


def channel_tasks(s: Session, doc: str | None) -> Iterator[Task]:
    yield {"basename": "channel", "name": None, "doc": doc}
    for variant in s.plan.variants:
        yield from _channel_tasks(s, variant)


def _channel_tasks(s: Session, variant: Variant) -> Iterator[Task]:
    p = s.plan
    registry = p.release.registry
    for channel in variant.channels:
        yield _task({
            "basename": "channel",
            "name": channel.task,
            "doc": f"move {channel.tag} (and the store's {channel.pointer_key}) to "
                   f"{variant.index_tag}",
            "actions": [Action(channels.move, p, variant, registry, channel)],
            "file_dep": [str(variant.index_receipt), str(manifest.RECEIPT),
                         *([str(variant.push_index_receipt)] if registry is not None else [])],
            "task_dep": ["manifest"],  # the release is complete before a channel names it
            "targets": [channels.receipt_path(channel)],
            "setup": _setup(s),
            "uptodate": [config_changed({
                "tag": channel.tag, "pointer": channel.pointer_key, "index": variant.index_tag,
                "store": p.release.store.url, "endpoint": p.release.store.endpoint_url,
                "registry": None if registry is None else _registry_identity(registry)})],
            "clean": [Action(remove, p.release.root / channels.receipt_path(channel))],
        })


def release_task(s: Session, doc: str | None) -> Task:
    p = s.plan
    local = [*(f"upload:{step.name}" for step in p.local_published), *_publish_deps(s)]
    if p.sharded:  # its images and artifacts, then its receipts for publish-index
        local += [*(f"push:{step.name}" for step in p.local_published
                    if s.release.registry is not None),
                  *(f"share:{step.name}" for step in p.local_published)]
        return {"doc": doc, "actions": None, "task_dep": local,
                "clean": [Action(remove, s.release.root / summary.FILE)]}
    return {
        "doc": doc,
        "actions": None,
        "clean": [Action(remove, s.release.root / summary.FILE)],
        "task_dep": [*_index_tasks(p), *local, "manifest",
                     *(f"channel:{c.task}" for c in p.channels)],
    }


def share_tasks(s: Session, doc: str | None) -> Iterator[Task]:
    yield {"basename": "share", "name": None, "doc": doc}
    p = s.plan
    if not p.sharded:
        return
    pushed = s.release.registry is not None
    for step in p.local_published:
        yield _producer(
            s, basename="share", name=step.name,
            doc=f"{step.name}'s receipts to {p.release.store.url}/{p.shard_key(step)}",
            action=Action(shards.share, p, step, pushed),
            file_dep=[str(path) for path in
                      shards.receipts_of(p, step, pushed=pushed).values()],
            receipts=(), outputs=[str(p.share_receipt(step))],
            settings={"store": p.release.store.url, "endpoint": p.release.store.endpoint_url,
                      "key": p.shard_key(step)},
            clean=[Action(remove, p.release.root / p.share_receipt(step))],
            setup=_setup(s))


def shards_task(s: Session) -> Task:
    """``doit publish-index``'s first step: the shards' receipts from the store."""
    p = s.plan
    if not p.assembling:
        return {"doc": "(with `doit publish-index`) take every shard's receipts from the store",
                "actions": None}
    pushed = s.release.registry is not None
    return _task({
        "doc": f"every shard's receipts from {p.release.store.url}/{p.release_prefix}"
               f"{plan.SHARDS}/",
        "actions": [Action(shards.collect, p, pushed)],
        "targets": [str(path) for step in p.published
                    for path in shards.receipts_of(p, step, pushed=pushed).values()],
        "uptodate": [False],  # a shard may have run again since
    })


def publish_index_task(s: Session, doc: str | None) -> Task:
    p = s.plan
    if not p.assembling:
        return {"basename": ASSEMBLE, "doc": doc, "actions": None}
    return {
        "basename": ASSEMBLE,
        "doc": doc,
        "actions": None,
        "clean": [Action(remove, s.release.root / summary.FILE)],
        "task_dep": ["shards", *_index_tasks(p), *_publish_deps(s), "manifest",
                     *(f"channel:{c.task}" for c in p.channels)],
    }


def verify(plan: Plan, registry: RegistryConfig | None) -> None:
    """The ``verify`` action: the registry (when one is configured), then the store, each
    checked and reported even when the other fails."""
    checks: list[Callable[[], None]] = [lambda: store_verify.verify(plan)]
    if registry is None:
        print("no registry configured: checking the store only")
    else:
        signatures = {k.name: _signature_check(plan, k) for k in plan.release.keys}
        checks.insert(0, lambda: registry_verify.verify(plan, registry, signatures))
    failed: list[Esp32TasksError] = []
    for check in checks:
        try:
            check()
        except Esp32TasksError as exc:
            failed.append(exc)
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise VerifyFailed("\n".join(map(str, failed)))


def _signature_check(plan: Plan, key: Key) -> Callable[[bytes], str | None]:
    """A device's check of an app signed by ``key`` (espsecure verify-signature with its
    public key: the committed ``public_key``, else the private key's)."""
    from esp32tasks.sign import image

    root = plan.release.root

    def check(app: bytes) -> str | None:
        try:
            image.verify(sign_action.public_pem(key, root), key.scheme, app)
        except (OSError, Esp32TasksError) as exc:
            return f"signature: {exc}"
        return None

    return check


def verify_task(s: Session, doc: str | None) -> Task:
    return _task({
        "basename": "verify",
        "doc": doc,
        "actions": [Action(verify, s.plan, s.release.registry)],
        "uptodate": [False],
        "verbosity": 2,
    })
