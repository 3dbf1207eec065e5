"""Channels: moving names a device follows (``<repo>:hello-stable``), in the registry and
the store, forward only.

A channel is an index tag ``<app_type>-<channel>`` (the index's bytes under a second tag)
and a pointer ``<project>/channels/<app_type>-<channel>.json`` in the store naming the
version, the index and its release.json. It moves forward in the order of
:meth:`esp32tasks.version.Version.order`, backwards only with ``force_channel``; moving
``stable`` moves ``beta`` too when beta is behind, so beta is never behind stable. Moving a
channel to what it already names sends no write.

The registry half and the store half are both here because a channel is one decision made
over both (as ``verify`` and the preflight are).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from esp32tasks import oci
from esp32tasks.config import RegistryConfig
from esp32tasks.errors import ReleaseRefused
from esp32tasks.files import remove, write_atomic
from esp32tasks.plan import RECEIPTS, Channel, Plan, Variant
from esp32tasks.plan import channel as make_channel
from esp32tasks.version import Version
from esp32tasks.version import parse as parse_version

if TYPE_CHECKING:
    from esp32tasks.registry.client import Client
    from esp32tasks.store import Store

__all__ = ["FOLLOWERS", "FORMAT", "check", "move", "pointer", "receipt_path"]

FORMAT: Final = "esp32tasks.channel/v1"
#: A channel that moving another one also moves, when it is behind.
FOLLOWERS: Final = {"stable": ("beta",)}
_VERSION: Final = "org.opencontainers.image.version"


def receipt_path(channel: Channel) -> str:
    """The local copy of the channel's pointer: the channel task's target."""
    return (RECEIPTS / f"channel-{channel.task}.json").as_posix()


@dataclass(frozen=True, slots=True)
class _Ours:
    version: Version
    text: str
    digest: str
    index_tag: str


def _ours(plan: Plan, variant: Variant) -> _Ours:
    from esp32tasks.receipts import IndexReceipt, load

    index = load(plan.release.root / variant.index_receipt, IndexReceipt,
                 variant.index_receipt.as_posix())
    return _Ours(plan.version, plan.release.project.version, index.index.digest, index.tag)


def pointer(plan: Plan, channel: Channel, ours: _Ours) -> bytes:
    """The store's pointer: deterministic, so the same move is the same bytes."""
    project = plan.release.project
    doc: dict[str, Any] = {
        "format": FORMAT,
        "channel": channel.name,
        "app_type": project.app_type,
        "version": ours.text,
        "index": {"tag": ours.index_tag, "digest": ours.digest},
        "release": plan.release_prefix + "release.json",
        "git": {"revision": plan.git.revision, "commit_time": plan.git.commit_time},
    }
    if plan.release.registry is not None:
        doc["registry"] = {"repository": plan.release.registry.repository,
                           "tag": channel.tag}
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def _followers(plan: Plan, moved: Channel) -> list[Channel]:
    project = plan.release.project
    return [make_channel(project.name, project.app_type, name, moved.key)
            for name in FOLLOWERS.get(moved.name, ())]


class _Where:
    """A channel's current place in the registry and the store (each may be absent)."""

    def __init__(self, plan: Plan, registry: RegistryConfig | None) -> None:
        from esp32tasks.store import open_store

        self.plan = plan
        self.store: Store = open_store(plan.release.store, plan.release.root)
        self.client: Client | None = None
        self.repository = registry.repository if registry is not None else ""
        if registry is not None:
            from esp32tasks.registry.client import shared

            self.client = shared(registry, plan.release.root)

    def registry(self, channel: Channel) -> tuple[str, str | None] | None:
        """(digest, version) the channel tag points at, or None."""
        if self.client is None:
            return None
        digest = self.client.manifest_digest(channel.tag)
        if digest is None:
            return None
        _, data = self.client.get_manifest(channel.tag)
        try:
            version = json.loads(data).get("annotations", {}).get(_VERSION)
        except (ValueError, AttributeError):
            version = None
        return digest, version if isinstance(version, str) else None

    def stored(self, channel: Channel) -> tuple[bytes, str | None] | None:
        """(bytes, version) of the store's pointer, or None."""
        data = self.store.get_bytes(channel.pointer_key)
        if data is None:
            return None
        try:
            version = json.loads(data).get("version")
        except (ValueError, AttributeError):
            version = None
        return data, version if isinstance(version, str) else None


def _behind(ours: Version, theirs: str | None) -> bool:
    """Would moving the channel from ``theirs`` to ``ours`` move it backwards? A channel
    that names no version we can read is not in our order: moving it is not backwards."""
    found = parse_version(theirs) if theirs is not None else None
    return found is not None and ours.order() < found.order()


def _refused(plan: Plan, channel: Channel, where: str, theirs: str) -> ReleaseRefused:
    return ReleaseRefused(
        f"{where} names {theirs}, ahead of this release's {plan.release.project.version}; a "
        f"channel only moves forward: release a later version to {channel.name}, or move it "
        "back with ESP32TASKS_FORCE_CHANNEL=1 (or [project] force_channel = true)")


def check(plan: Plan, registry: RegistryConfig | None) -> None:
    """The preflight's part: refuse a channel move that would be refused (backwards, or
    asked for on a dirty tree), by reading only."""
    project = plan.release.project
    if plan.git.dirty and plan.channels:
        raise ReleaseRefused(
            f"refusing to move channel {', '.join(dict.fromkeys(c.name for c in plan.channels))} "
            f"({project.channels_source}) to a build of a working tree with uncommitted "
            "changes: a dirty tree is never promoted; commit first")
    if not plan.channels or project.force_channel:
        return
    ours = plan.version
    where = _Where(plan, registry)
    for channel in plan.channels:
        _check_one(plan, where, channel, ours)


def _check_one(plan: Plan, where: _Where, channel: Channel, ours: Version) -> None:
    at = where.registry(channel)
    if at is not None and at[1] is not None and _behind(ours, at[1]):
        raise _refused(plan, channel, f"{where.repository}:{channel.tag}", at[1])
    stored = where.stored(channel)
    if stored is not None and stored[1] is not None and _behind(ours, stored[1]):
        raise _refused(plan, channel, where.store.describe(channel.pointer_key), stored[1])


def move(plan: Plan, variant: Variant, registry: RegistryConfig | None,
         moved: Channel) -> None:
    """The ``channel:<name>[@<key>]`` action: the channel (and its followers that are
    behind) to the variant's index, in the registry and the store; a local copy as its
    target."""
    root = plan.release.root
    remove(root / receipt_path(moved))
    check(plan, registry)  # again: another run may have moved it since the preflight
    ours = _ours(plan, variant)
    where = _Where(plan, registry)
    data = _move_one(plan, where, moved, ours)
    for follower in _followers(plan, moved):  # beta is never behind stable
        stored, at = where.stored(follower), where.registry(follower)
        named = [parse_version(v) for v in (stored and stored[1], at and at[1]) if v]
        if any(v is not None and v.order() < ours.version.order() for v in named):
            _move_one(plan, where, follower, ours)
    write_atomic(root / receipt_path(moved), data)


def _move_one(plan: Plan, where: _Where, channel: Channel, ours: _Ours) -> bytes:
    """Point ``channel`` at ours; no write where it already does."""
    if where.client is not None and where.client.manifest_digest(channel.tag) != ours.digest:
        layout = oci.Layout(plan.release.root / plan.oci_dir)
        where.client.put_manifest(channel.tag,
                                  oci.Blob(oci.INDEX_MEDIA_TYPE, layout.read_blob(ours.digest)))
    data = pointer(plan, channel, ours)
    stored = where.stored(channel)
    if stored is None or stored[0] != data:
        where.store.put_bytes(channel.pointer_key, data, check=False)
    return data
