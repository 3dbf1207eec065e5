"""The ``delta:<target>[@<key>]`` action: a delta OTA patch from each base release's app.

A base's app is the exact bytes that were published for the same step (``esp32c3``, or
``esp32c3@prod``: a signed variant's patch is made from the same key's signed app, or it
would not apply on the device), found through the base version's release.json in the
store and checked by its SHA-256 there. Base apps are kept in ``build/delta/<step>/`` so
that a new app of this release fetches nothing already held. Every patch is checked
(:func:`esp32tasks.delta.make` applies it) before its receipt is written; a patch not
smaller than ``[delta] max_ratio`` of the app is left out, and the receipt says why.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from esp32tasks.errors import PublishError
from esp32tasks.files import remove, sha256_file, write_atomic
from esp32tasks.plan import Delta, Plan
from esp32tasks.store import Store, open_store

if TYPE_CHECKING:
    from esp32tasks import delta as patching
    from esp32tasks.receipts import PatchRecord

__all__ = ["Pull", "make", "present"]


def present(root: Path, delta: Delta) -> bool:
    """``uptodate`` of ``delta:<t>``: every patch its receipt lists is there at its size (a
    stat each; the upload hashes them)."""
    try:
        listed = json.loads((root / delta.receipt).read_bytes())["patches"]
        return all((root / p["path"]).stat().st_size == p["size"] for p in listed)
    except (OSError, ValueError, KeyError, TypeError):
        return False


#: The app a per-target image holds, by the image's manifest digest (None: not there).
Pull = Callable[[str], "bytes | None"]


def make(plan: Plan, delta: Delta, pull: Pull | None = None) -> None:
    """Write every base's patch for ``delta.step``'s app, and the delta receipt. ``pull``
    (with a registry) fetches a base's app by the image digest its release.json records,
    when the store no longer holds the object."""
    from esp32tasks import delta as patching
    from esp32tasks.receipts import AppReceipt, DeltaReceipt, load, write

    root = plan.release.root
    remove(root / delta.receipt)
    app = load(root / delta.step.app_receipt, AppReceipt, delta.step.app_receipt.as_posix()).app
    new = (root / app.path).read_bytes()
    if hashlib.sha256(new).hexdigest() != app.sha256:
        raise PublishError(f"{app.path} changed after it was made; run `doit release` again")
    config = plan.release.delta
    max_ratio = 0.9 if config is None else config.max_ratio
    store = open_store(plan.release.store, root)
    out = root / delta.dir
    out.mkdir(parents=True, exist_ok=True)
    patches: list[PatchRecord] = []
    skipped: list[tuple[str, str]] = []
    latest = 0 if config is None else config.latest
    for base, manifest_key in [*delta.base_manifests, *_latest(store, plan, delta, latest)]:
        found = _base_app(store, delta, base, manifest_key, out, pull)
        base_app = found.data
        made = patching.make(base_app, new, base_label=f"{delta.name} {base}",
                             new_label=app.path)
        if made.ratio >= max_ratio:
            skipped.append((base, f"the patch is {made.ratio:.0%} of the app, not below "
                                  f"max_ratio {max_ratio:.0%}"))
            remove(out / delta.patch_name(base))
            continue
        path = out / delta.patch_name(base)
        write_atomic(path, made.data)
        patches.append(_record(root, path, base, found, made))
    write(root / delta.receipt, DeltaReceipt(target=delta.name, app_sha256=app.sha256,
                                             patches=tuple(patches), skipped=tuple(skipped)))


class _Base(NamedTuple):
    sha256: str
    data: bytes
    manifest: str
    """The base image's manifest digest ("" when its release.json names none)."""


def _latest(store: Store, plan: Plan, delta: Delta, count: int) -> list[tuple[str, str]]:
    """``[delta] latest``: (version, release.json key) of the ``count`` newest releases of
    this project in the store, older than this one and not already among the bases. A
    directory without a release.json (a key's variant, a release never finished) is none."""
    from esp32tasks.plan import DIRTY
    from esp32tasks.version import parse as parse_version

    if count == 0:
        return []
    project = plan.release.project
    ours = plan.version.order()
    found = []
    for name in store.directories(f"{project.name}/"):
        version = name.removeprefix(f"{project.app_type}-")
        parsed = parse_version(version)
        if version == name or name.endswith(DIRTY) or version in delta.bases \
                or parsed is None or not parsed.order() < ours:
            continue
        found.append((parsed.order(), version, f"{project.name}/{name}/release.json"))
    picked: list[tuple[str, str]] = []
    for _, version, key in sorted(found, reverse=True):
        if len(picked) == count:
            break
        if store.get_bytes(key) is not None:
            picked.append((version, key))
    return picked


def _record(root: Path, path: Path, base: str, found: _Base,
            made: patching.Patch) -> PatchRecord:
    from esp32tasks.receipts import PatchRecord

    return PatchRecord(base=base, base_app_sha256=found.sha256, base_hash=made.base_sha256,
                       base_manifest=found.manifest,
                       name=path.name, path=path.relative_to(root).as_posix(),
                       size=path.stat().st_size, sha256=sha256_file(path),
                       ratio=round(made.ratio, 4))


def _base_app(store: Store, delta: Delta, base: str, manifest_key: str,  # noqa: PLR0917
              out: Path, pull: Pull | None) -> _Base:
    """(SHA-256, bytes) of the app ``base`` published for this step: from the cache in
    ``out`` when it holds those bytes, else from the store (checked by its SHA-256)."""
    where = store.describe(manifest_key)
    data = store.get_bytes(manifest_key)
    if data is None:
        raise PublishError(f"delta:{delta.name}: base {base} has no {where}; release "
                           f"{base} first, or remove it from [delta] bases")
    try:
        entry = json.loads(data)["targets"].get(delta.name)
        app = None if entry is None else next(a for a in entry["artifacts"]
                                              if a["kind"] == "app")
    except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
        raise PublishError(f"delta:{delta.name}: {where} is not an esp32tasks release "
                           f"manifest; remove {base} from [delta] bases") from None
    if app is None:
        raise PublishError(f"delta:{delta.name}: {base}'s {where} has no {delta.name}; "
                           f"remove {base} from [delta] bases (or release it for "
                           f"{delta.name})")
    sha = str(app["sha256"])
    image = entry.get("image")
    digest = str(image.get("digest", "")) if isinstance(image, dict) else ""
    cached = out / f"base-{base}.bin"
    if cached.is_file() and sha256_file(cached) == sha:
        return _Base(sha, cached.read_bytes(), digest)
    key = posixpath.normpath(posixpath.dirname(manifest_key) + "/" + str(app["path"]))
    got = store.get_bytes(key)
    pushed = entry.get("registry")
    if (got is None or hashlib.sha256(got).hexdigest() != sha) and pull is not None \
            and isinstance(pushed, dict) and isinstance(pushed.get("digest"), str):
        got = pull(pushed["digest"])  # the image the registry holds for that release
    if got is None or hashlib.sha256(got).hexdigest() != sha:
        state = "is missing" if got is None else "has other bytes than its release.json says"
        raise PublishError(f"delta:{delta.name}: {store.describe(key)} {state}; the base "
                           f"{base} cannot be trusted: remove it from [delta] bases")
    write_atomic(cached, got)
    return _Base(sha, got, digest)
