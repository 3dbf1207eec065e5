"""doit actions that push the layout's images and index to the registry, idempotently.

Order: each target's blobs, then its manifest under its tag (``push:<target>``), then the
index (``push-index``), which distribution rejects until its children are there. Every
action removes its receipt first and writes it last, so a failed or killed push is re-run.

What is sent for an image depends on what our previous push receipt of that target
(``build/receipts/push-<target>.json``) says about the same repository:

- **It knows the repository** (the common case: a new commit). The receipt lists the
  digests our pushes put there. A manifest among them is re-tagged with one PUT; blobs
  among them are not sent; other blobs are new content (their digests are hashes of bytes
  we never pushed there) and go up without asking first (POST + PUT, concurrently).
  The per-commit tag is not HEADed: see :func:`_send_known`.
- **It does not** (first push, receipt missing after a failed push or a lost ``build/``,
  another repository): HEAD the tag (already ours: nothing to send; another digest:
  refused unless it may be overwritten), then each blob concurrently: HEAD, and POST + PUT
  when missing; then PUT the manifest.

Either way the manifest PUT is the proof: distribution refuses it with
``MANIFEST_BLOB_UNKNOWN`` when a blob is missing (deleted behind our back: garbage
collection, a retention policy, a wiped registry), and then every blob is HEADed and
the missing ones sent before the PUT is repeated.

The index tag is the released version: it is always HEADed before its PUT (immutable
unless forced). Its children are there (each push task's PUT succeeded).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from esp32tasks import oci
from esp32tasks.config import RegistryConfig
from esp32tasks.errors import PublishError, RegistryError, ReleaseRefused
from esp32tasks.files import remove
from esp32tasks.plan import Plan, Step, Variant
from esp32tasks.registry.client import BlobsMissing, Client, shared

if TYPE_CHECKING:
    from esp32tasks.receipts import Descriptor, ImageReceipt, PushReceipt

__all__ = ["check_clean", "dirty_refused", "preflight", "push_image", "push_index", "send_image"]


def check_clean(plan: Plan, config: RegistryConfig, what: str) -> None:
    if plan.git.dirty and not plan.release.project.allow_dirty:
        raise dirty_refused(what)


def dirty_refused(what: str) -> ReleaseRefused:
    return ReleaseRefused(
        f"refusing to publish {what} from a working tree with uncommitted changes; commit "
        "them, or allow it with ESP32TASKS_ALLOW_DIRTY=1 (or [project] allow_dirty = true): "
        "every name then ends in -dirty, and no channel moves")


def _immutable(config: RegistryConfig, tag: str, current: str, ours: str, *,
               released_by: str | None = None, note: str = "") -> ReleaseRefused:
    by = f" ({released_by})" if released_by else note
    return ReleaseRefused(
        f"{config.repository}:{tag} already points at {current}{by}, not at this build's "
        f"{ours}; released versions are immutable: bump [project] version, or overwrite "
        "with ESP32TASKS_FORCE=1 (or [registry] force = true)")


def _may_overwrite(config: RegistryConfig, tag: str) -> bool:
    return config.force or tag.endswith("-dirty")


#: How many digests a push receipt remembers (about 16 images: manifest, config, layer).
REMEMBERED = 48


def _known(previous: PushReceipt | None, repository: str) -> tuple[str, ...] | None:
    """Digests our pushes put in ``repository``, newest first, if the receipt says."""
    if previous is None or previous.repository != repository:
        return None
    return previous.pushed


def _upload(client: Client, layout: oci.Layout, descriptor: Descriptor) -> None:
    digest = descriptor.digest
    if not layout.has_blob(digest):
        layout.read_blob(digest)  # raises the message that says how to rebuild the layout
    try:
        client.upload_blob(layout.blob_path(digest), descriptor)
    except RegistryError:
        layout.read_blob(digest)  # a corrupt local blob is the likelier story: say so
        raise


def _send_missing(client: Client, layout: oci.Layout, blobs: list[Descriptor]) -> None:
    """HEAD each blob and send the missing ones, blobs side by side."""
    def one(descriptor: Descriptor) -> None:
        if not client.has_blob(descriptor):
            _upload(client, layout, descriptor)

    client.parallel(one, blobs)


def _put_manifest(client: Client, layout: oci.Layout, image: ImageReceipt,
                  manifest: oci.Blob, checked: list[Descriptor]) -> None:
    """PUT the manifest; if the registry lacks blobs we did not check, check and retry."""
    try:
        client.put_manifest(image.tag, manifest)
    except BlobsMissing:
        unchecked = [b for b in image.blobs if b not in checked]
        if not unchecked:
            raise
        _send_missing(client, layout, unchecked)
        client.put_manifest(image.tag, manifest)


def _send_known(client: Client, layout: oci.Layout, image: ImageReceipt,
                manifest: oci.Blob, *, previous: PushReceipt, known: tuple[str, ...]) -> None:
    tag, digest = image.tag, image.manifest.digest
    # The per-commit tag is not HEADed. If it is the tag of our last push, the receipt says
    # what it points at, and moving a clean tag to other bytes is refused right here. If it
    # is not (a new commit), we never pushed it, and it carries a commit nobody had pushed
    # from here: a clean per-commit tag names the commit's content, which is what we send.
    # Someone else may have pushed that commit (another machine without our receipts would
    # HEAD it); at worst the tag moves to this build of the same commit. The released
    # version is the index tag, which push-index always checks before moving it.
    if previous.tag == tag and previous.digest != digest \
            and not _may_overwrite(client.config, tag):
        raise _immutable(client.config, tag, previous.digest, digest, note=" (our last push)")
    unknown = [] if digest in known else [b for b in image.blobs if b.digest not in known]
    client.parallel(lambda b: _upload(client, layout, b), unknown)
    _put_manifest(client, layout, image, manifest, checked=unknown)


def send_image(client: Client, layout: oci.Layout, image: ImageReceipt,
               previous: PushReceipt | None = None) -> None:
    """Make ``image.tag`` point at ``image.manifest``, sending only what is missing.

    ``previous``: our last push receipt of this target (or None).
    """
    tag, digest = image.tag, image.manifest.digest
    manifest = oci.Blob(oci.MANIFEST_MEDIA_TYPE, layout.read_blob(digest))
    known = _known(previous, client.config.repository)
    if previous is not None and known is not None:
        _send_known(client, layout, image, manifest, previous=previous, known=known)
        return
    current = client.manifest_digest(tag)
    if current not in (None, digest) and not _may_overwrite(client.config, tag):
        current = _confirmed(client, tag, current, digest)  # a verdict needs the bytes
        if current != digest:
            raise _immutable(client.config, tag, str(current), digest)
    if current == digest:
        return
    _send_missing(client, layout, list(image.blobs))
    _put_manifest(client, layout, image, manifest, checked=list(image.blobs))


def _confirmed(client: Client, tag: str, current: str | None, ours: str,
               read: list[bytes] | None = None) -> str | None:
    """What ``tag`` points at, proven by its bytes before it becomes a verdict: a HEAD's
    digest that is not ours is checked by a GET, whose bytes must hash to what the
    registry says (else it serves wrong digests, and says so: never "immutable").
    The bytes read go to ``read``, when given."""
    if current is None or current == ours:
        return current
    digest, data = client.get_manifest(tag)
    if read is not None:
        read.append(data)
    return digest


def _remembered(image: ImageReceipt, known: tuple[str, ...] | None) -> tuple[str, ...]:
    """The receipt's ``pushed``: this image's digests, then older ones, newest first."""
    ours = [image.manifest.digest, *(b.digest for b in image.blobs)]
    return tuple(dict.fromkeys([*ours, *(known or ())]))[:REMEMBERED]


def push_image(plan: Plan, step: Step, config: RegistryConfig) -> dict[str, int]:
    """``push:<target>``: the target's image under its per-commit tag."""
    from esp32tasks.receipts import ImageReceipt, PushReceipt, load, read, write

    root = plan.release.root
    receipt = root / step.push_receipt
    previous = read(receipt, PushReceipt)
    remove(receipt)
    check_clean(plan, config, f"{step.name}'s image")
    image = load(root / step.image_receipt, ImageReceipt, step.image_receipt.as_posix())
    if image.tag != step.tag:
        raise PublishError(f"{step.image_receipt} is for tag {image.tag}, not {step.tag}; "
                           "run `doit release` to re-tag")
    client = shared(config, root)
    before = client.sent
    send_image(client, oci.Layout(root / plan.oci_dir), image, previous)
    write(receipt, PushReceipt(target=step.name, repository=config.repository, tag=image.tag,
                               digest=image.manifest.digest,
                               pushed=_remembered(image, _known(previous, config.repository))))
    return {"sent": client.sent - before}


def push_index(plan: Plan, variant: Variant, config: RegistryConfig) -> dict[str, int]:
    """``push-index``: the index under ``<app_type>-<version>[-<key>]``, after every
    child."""
    from esp32tasks.receipts import IndexReceipt, PushIndexReceipt, PushReceipt, load, write

    root = plan.release.root
    receipt = root / variant.push_index_receipt
    remove(receipt)
    check_clean(plan, config, "the index")
    index = load(root / variant.index_receipt, IndexReceipt, variant.index_receipt.as_posix())
    for step in variant.steps:  # file_dep guarantees them; a hand-deleted one is caught here
        pushed = load(root / step.push_receipt, PushReceipt, step.push_receipt.as_posix())
        child = index.child(step.target.name)
        if child is None or pushed.digest != child.digest:
            raise PublishError(f"{step.push_receipt} does not match {variant.index_receipt}; "
                               "run `doit release` again")
    tag, digest = index.tag, index.index.digest
    client = shared(config, root)
    before = client.sent
    if _index_tag_target(client, tag, digest) != digest:
        blob = oci.Blob(oci.INDEX_MEDIA_TYPE, oci.Layout(root / plan.oci_dir).read_blob(digest))
        client.put_manifest(tag, blob)
    write(receipt, PushIndexReceipt(repository=config.repository, tag=tag, digest=digest,
                                    targets=index.targets))
    return {"sent": client.sent - before}


def _index_tag_target(client: Client, tag: str, digest: str) -> str | None:
    """What the released version's tag points at now (None: nothing), after refusing to
    move it from other content (unless forced or dirty)."""
    config = client.config
    read: list[bytes] = []
    current = client.manifest_digest(tag)
    if current not in (None, digest) and not _may_overwrite(config, tag):
        current = _confirmed(client, tag, current, digest, read)  # a verdict needs the bytes
        if current not in (None, digest):
            raise _immutable(config, tag, current, digest,
                             released_by=_released(read[0]) if read else None)
    return current


def preflight(plan: Plan, config: RegistryConfig) -> None:
    """Before the run's first write: refuse what push-index would refuse at the end (a
    dirty tree, the version's tag on other content), and prove the credentials may push
    (the HEAD asks for pull and push)."""
    from esp32tasks.receipts import IndexReceipt, load

    root = plan.release.root
    check_clean(plan, config, "images")
    for variant in plan.variants:
        if plan.sharded:  # no index here: the one the tag holds must be of this commit
            _shard_check(shared(config, root), plan, variant.index_tag)
            continue
        index = load(root / variant.index_receipt, IndexReceipt,
                     variant.index_receipt.as_posix())
        _index_tag_target(shared(config, root), index.tag, index.index.digest)


def _shard_check(client: Client, plan: Plan, tag: str) -> None:
    """A shard's preflight: the version's index tag is free, or holds an index of this
    very commit (publish-index would make the same one), else the release is refused
    before the shard writes anything."""
    config = client.config
    current = client.manifest_digest(tag)
    if current is None or _may_overwrite(config, tag):
        return
    digest, data = client.get_manifest(tag)
    if _revision(data) != plan.git.revision:
        raise _immutable(config, tag, digest, f"an index of commit {plan.git.short}",
                         released_by=_released(data))


def _revision(index: bytes) -> str | None:
    try:
        found = json.loads(index).get("annotations", {}).get(
            "org.opencontainers.image.revision")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


def _released(index: bytes) -> str | None:
    """Where an index came from, for the refusal message: its commit, commit time and
    whether that tree was dirty (per-commit facts are on the index; who pushed is not, so
    that every runner makes the same index)."""
    try:
        annotations = json.loads(index).get("annotations", {})
        revision = annotations.get("org.opencontainers.image.revision")
        created = annotations.get("org.opencontainers.image.created")
        dirty = annotations.get("dev.esp32tasks.dirty") == "true"
    except (ValueError, AttributeError):
        return None
    if not isinstance(revision, str):
        return None
    when = f", committed {created}" if isinstance(created, str) else ""
    return f"released from commit {revision[:7]}{when}, {'dirty' if dirty else 'clean'}"
