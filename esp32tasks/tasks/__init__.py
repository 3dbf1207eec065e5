"""The doit face of esp32tasks. A firmware repository's ``dodo.py`` star-imports it::

    from esp32tasks.tasks import *  # noqa: F403

and, to set doit options of its own, keeps ours with :func:`doit_config`::

    from esp32tasks.tasks import doit_config
    DOIT_CONFIG = doit_config(verbosity=2)

This package is the only one that imports doit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from esp32tasks.plan import STATE_FILE
from esp32tasks.tasks import generate
from esp32tasks.tasks.reporter import Reporter
from esp32tasks.tasks.session import current

__all__ = [
    "DOIT_CONFIG",
    "doit_config",
    "task_build",
    "task_channel",
    "task_delta",
    "task_index",
    "task_manifest",
    "task_preflight",
    "task_publish_index",
    "task_push",
    "task_push_delta",
    "task_push_index",
    "task_release",
    "task_shards",
    "task_share",
    "task_sign",
    "task_tag",
    "task_upload",
    "task_verify",
]

Task = dict[str, Any]


def doit_config(**options: Any) -> dict[str, Any]:
    """Our doit settings (state file and backend, MD5 checker, reporter, ``release`` as the
    default task) with ``options`` added or overriding them."""
    return {
        "default_tasks": ["release"],
        "dep_file": STATE_FILE,
        "backend": "sqlite3-durable",
        "check_file_uptodate": "md5",
        "reporter": Reporter,
        **options,
    }


DOIT_CONFIG: dict[str, Any] = doit_config()


# doit reads each task_* function's source to order them: keep these one-liners.
def task_build() -> Iterator[Task]:
    """Build the app for each target (ESP-IDF's idf.py or the configured command)."""
    return generate.build_tasks(current(), task_build.__doc__)


def task_sign() -> Iterator[Task]:
    """Sign each target's app (and v2 bootloader) with each key in [[keys]]."""
    return generate.sign_tasks(current(), task_sign.__doc__)


def task_delta() -> Iterator[Task]:
    """Make each target's delta OTA patches from the [delta] bases' published apps."""
    return generate.delta_tasks(current(), task_delta.__doc__)


def task_tag() -> Iterator[Task]:
    """Package each target's app binary as an OCI image in build/oci, tagged per commit."""
    return generate.tag_tasks(current(), task_tag.__doc__)


def task_index() -> Iterator[Task]:
    """Combine every target's image into one OCI image index in build/oci (one per key)."""
    return generate.index_tasks(current())


def task_preflight() -> Task:
    """Check that nothing will be refused, before the first remote write (run as needed)."""
    return generate.preflight_task(current())


def task_upload() -> Iterator[Task]:
    """Copy every build artifact of each target to the store."""
    return generate.upload_tasks(current(), task_upload.__doc__)


def task_push() -> Iterator[Task]:
    """Push each target's image to the registry under its per-commit tag."""
    return generate.push_tasks(current(), task_push.__doc__)


def task_push_delta() -> Iterator[Task]:
    """Push each target's delta OTA patches as OCI referrers of its image."""
    return generate.push_delta_tasks(current(), task_push_delta.__doc__)


def task_push_index() -> Iterator[Task]:
    """Push the multi-target index (after every target's image) to the registry (one per key)."""
    return generate.push_index_tasks(current())


def task_manifest() -> Task:
    """Write release.json beside the targets in the store, last: its presence means complete."""
    return generate.manifest_task(current())


def task_channel() -> Iterator[Task]:
    """Move each channel asked for (channel=..., [project] channels) to this release."""
    return generate.channel_tasks(current(), task_channel.__doc__)


def task_release() -> Task:
    """Build, package, index and upload everything (the default task)."""
    return generate.release_task(current(), task_release.__doc__)


def task_share() -> Iterator[Task]:
    """In a shard (targets=...): leave each target's receipts in the store for publish-index."""
    return generate.share_tasks(current(), task_share.__doc__)


def task_shards() -> Task:
    """Take every shard's receipts from the store (the first step of publish-index)."""
    return generate.shards_task(current())


def task_publish_index() -> Task:
    """Assemble the release the shards pushed: every index, release.json and channel."""
    return generate.publish_index_task(current(), task_publish_index.__doc__)


def task_verify() -> Task:
    """Read the release back from the store, and from any registry as esp32-flashjob does."""
    return generate.verify_task(current(), task_verify.__doc__)
