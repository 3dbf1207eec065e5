"""``build:<t>`` and ``sign:<t>@<k>`` through the build cache (``[cache]``).

Each task's input digest covers everything that decides its outputs: for a build, its
sources' and own files' contents, the effective build settings (doit's
``config_changed``), the toolchain (its programs' contents, hashed once per run, or the
identity ``[cache] toolchain`` declares) and esp32tasks' version; for a signature, the
unsigned build's every artifact, the key's scheme and public fingerprint and its signer.
On a hit the outputs and receipts come from the cache (each file checked by SHA-256) and
nothing compiles or signs; after a miss they are saved (with ``ESP32TASKS_CACHE_WRITE``).
Without ``[cache]`` these are the plain actions.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from esp32tasks import __version__
from esp32tasks.build import action as build_action
from esp32tasks.build import builders
from esp32tasks.config import Release
from esp32tasks.files import remove, sha256_file, write_atomic
from esp32tasks.plan import Plan, Step
from esp32tasks.runcache import per_run
from esp32tasks.sign import action as sign_action
from esp32tasks.store import cache as build_cache

__all__ = ["build", "build_inputs", "sign", "sign_inputs"]


@per_run
def _hashes() -> dict[str, tuple[int, int, str]]:
    """path -> (mtime_ns, size, sha256): each file hashed once per run."""
    return {}


def _sha256(path: Path) -> str:
    found = os.stat(path)  # noqa: PTH116
    known = _hashes().get(str(path))
    if known is not None and known[:2] == (found.st_mtime_ns, found.st_size):
        return known[2]
    digest = sha256_file(path)
    _hashes()[str(path)] = (found.st_mtime_ns, found.st_size, digest)
    return digest


def toolchain_identity(release: Release, toolchain: tuple[str, ...]) -> Any:
    """``[cache] toolchain`` as declared, else each program's name and content hash (and,
    for the idf builder, the hash of the ESP-IDF tree's version files)."""
    if release.cache is not None and release.cache.toolchain:
        return release.cache.toolchain
    found = sorted([Path(p).name, _sha256(Path(p))] for p in toolchain)
    found += [[name, _sha256(path)] for name, path in builders.idf_version_files(release)]
    return found


def build_inputs(release: Release, step: Step, toolchain: tuple[str, ...]) -> dict[str, Any]:
    """What decides ``build:<t>``'s outputs (never a path outside the checkout)."""
    root = release.root
    return {
        "format": "esp32tasks.build-input/v1",
        "esp32tasks": __version__,
        "project": release.project.name,
        "step": step.name,
        "settings": builders.settings(release, step.target, step.build_dir.as_posix()),
        "sources": [[f, _sha256(root / f)] for f in step.sources],
        "toolchain": toolchain_identity(release, toolchain),
    }


def sign_inputs(plan: Plan, step: Step, fingerprint: str) -> dict[str, Any]:
    """What decides ``sign:<t>@<k>``'s outputs: the unsigned images and the public key
    (a randomized signer then gives every runner the same signed bytes)."""
    from esp32tasks.receipts import BuildReceipt, load

    key, signed_dir = step.signing
    unsigned = plan.build_of(step)
    built = load(plan.release.root / unsigned.build_receipt, BuildReceipt,
                 unsigned.build_receipt.as_posix())
    return {
        "format": "esp32tasks.sign-input/v1",
        "esp32tasks": __version__,
        "step": step.name,
        "dir": signed_dir.as_posix(),
        "scheme": key.scheme,
        "fingerprint": fingerprint,
        "sign_command": list(key.sign_command),
        "unsigned": [[a.kind, a.path, a.sha256] for a in built.artifacts],
    }


def build(release: Release, step: Step, toolchain: tuple[str, ...]) -> None:
    """The ``build:<t>`` action."""
    if release.cache is None:
        build_action.build(release, step)
        return
    cache = build_cache.for_run(release.cache, release.root)
    digest = build_cache.input_digest(build_inputs(release, step, toolchain))
    task = f"build:{step.name}"
    if _restored(cache, digest, task, release.root, step, own=step.build_dir):
        return
    build_action.build(release, step)
    _save(cache, digest, task, release.root, step,
          extra=[f"{step.build_dir.as_posix()}/{builders.PROJECT_DESCRIPTION}"])


def sign(plan: Plan, step: Step, fingerprint: str) -> None:
    """The ``sign:<t>@<k>`` action."""
    release = plan.release
    if release.cache is None or not fingerprint:  # no public key: signing says why
        sign_action.sign(plan, step)
        return
    cache = build_cache.for_run(release.cache, release.root)
    digest = build_cache.input_digest(sign_inputs(plan, step, fingerprint))
    task = f"sign:{step.name}"
    _key, signed_dir = step.signing
    if _restored(cache, digest, task, release.root, step, own=signed_dir):
        return
    sign_action.sign(plan, step)
    _save(cache, digest, task, release.root, step)


def _receipts(step: Step) -> Mapping[str, PurePosixPath]:
    return {"build": step.build_receipt, "app": step.app_receipt}


def _restored(cache: build_cache.Cache, digest: str, task: str, root: Path, step: Step, *,
              own: PurePosixPath) -> bool:
    """The step's outputs and receipts from the cache, when an entry is there and sound."""
    from esp32tasks.receipts import AppReceipt, BuildReceipt, decode

    entry = cache.lookup(digest, task)
    if entry is None:
        return False
    raw = entry.receipts
    built = decode(raw.get("build", b""), BuildReceipt)
    app = decode(raw.get("app", b""), AppReceipt)
    files = {(f.path, f.sha256) for f in entry.files}
    if built is None or app is None or built.target != step.name or app.target != step.name \
            or any((a.path, a.sha256) not in files for a in built.artifacts) \
            or app.app not in built.artifacts:
        sys.stderr.write(f"warning: cache: {task}: entry of {digest[:19]}… ignored: its "
                         "receipts do not match its files or this step; compiling\n")
        return False
    paths = _receipts(step)
    remove(*(root / p for p in paths.values()))  # a failed restore leaves no receipt
    if not cache.restore(entry, root, own):
        return False
    for role in ("app", "build"):  # the build receipt last, as the action writes them
        write_atomic(root / paths[role], raw[role])
    sys.stderr.write(f"{task}: from the build cache {cache.where} (input {digest[:19]}…, "
                     f"{len(entry.files)} files checked), nothing "
                     f"{'signed' if step.key is not None else 'compiled'}\n")
    return True


def _save(cache: build_cache.Cache, digest: str, task: str, root: Path, step: Step, *,
          extra: list[str] | None = None) -> None:
    from esp32tasks.receipts import BuildReceipt, load

    built = load(root / step.build_receipt, BuildReceipt, step.build_receipt.as_posix())
    cache.save(digest, task, root, [*(a.path for a in built.artifacts), *(extra or [])],
               {role: root / path for role, path in _receipts(step).items()})
