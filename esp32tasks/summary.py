"""What a release did, for people and CI: a table on the console, ``build/release-summary.json``
(schema below) and, on GitHub Actions, a Markdown table in ``$GITHUB_STEP_SUMMARY``.

Made from the receipts after the run, and from what the run did (which tasks ran, the bytes
each sent). ``release-summary.json``, schema ``esp32tasks.summary/v1``::

    {"format": "esp32tasks.summary/v1", "version": "1.0.1", "snapshot": false,
     "dirty": false, "revision": "<sha>",
     "index": {"tag": "hello-1.0.1", "digest": "sha256:…",
               "reference": "<repository>:hello-1.0.1"},   # what a device pulls
     "targets": [{"target": "esp32c3", "tag": "esp32c3-hello-1.0.1-abc1234",
                  "digest": "sha256:…", "app_size": 123456, "changed": true,
                  "sent": 4096}],                            # bytes this run sent
     "channels": ["stable"],                                 # moved by this run
     "store": "s3://bucket/prefix/hello/hello-1.0.1/", "sent": 8192}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from esp32tasks.files import write_atomic
from esp32tasks.plan import BUILD_DIR, Plan, Step, Variant

__all__ = ["FILE", "FORMAT", "collect", "markdown", "nothing_changed", "text", "write"]

FORMAT: Final = "esp32tasks.summary/v1"
FILE: Final = BUILD_DIR / "release-summary.json"


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def reference(plan: Plan, index_tag: str) -> str:
    """What a device (esp32-flashjob's ``FIRMWARE``) pulls: the registry's, else the
    local layout's."""
    registry = plan.release.registry
    if registry is not None:
        return f"{registry.repository}:{index_tag}"
    return f"oci:{plan.oci_dir}:{index_tag}"


def digests(plan: Plan) -> dict[str, str | None]:
    """Each target's image digest now (read before the run, to see what changed)."""
    root = plan.release.root
    found: dict[str, str | None] = {}
    for step in _steps(plan):
        image = _load(root / step.image_receipt)
        digest = image.get("manifest", {}).get("digest") if image else None
        found[step.name] = digest if isinstance(digest, str) else None
    return found


def collect(plan: Plan, before: Mapping[str, str | None], ran: set[str],
            sent: Mapping[str, int]) -> dict[str, Any]:
    """The summary: ``before`` is :func:`digests` before the run, ``ran`` the tasks whose
    actions ran, ``sent`` the bytes each publishing task sent."""
    root = plan.release.root
    targets = []
    for step in _steps(plan):
        image = _load(root / step.image_receipt) or {}
        app = _load(root / step.app_receipt) or {}
        digest = image.get("manifest", {}).get("digest")
        targets.append({
            "target": step.name,
            "tag": image.get("tag", step.tag),
            "digest": digest,
            "app_size": app.get("app", {}).get("size"),
            "changed": digest is not None and digest != before.get(step.name),
            "sent": sent.get(f"push:{step.name}", 0) + sent.get(f"upload:{step.name}", 0),
        })
    indexes = [] if plan.sharded else [_index(plan, variant) for variant in plan.variants]
    store = plan.release.store
    return {
        "format": FORMAT,
        "version": plan.release.project.version,
        "snapshot": plan.snapshot,
        "dirty": plan.git.dirty,
        "revision": plan.git.revision,
        "index": indexes[0] if indexes else None,
        "indexes": indexes,
        "shard": list(plan.release.shard) if plan.sharded and plan.release.shard else None,
        "targets": targets,
        "channels": [c.task for c in plan.channels if f"channel:{c.task}" in ran],
        "store": f"{store.url.rstrip('/')}/{plan.release_prefix}",
        "sent": sum(sent.values()),
    }


def _steps(plan: Plan) -> tuple[Step, ...]:
    """The steps a run reports: a shard's own, else every published one."""
    return plan.local_published if plan.sharded else plan.published


def _index(plan: Plan, variant: Variant) -> dict[str, Any]:
    index = _load(plan.release.root / variant.index_receipt) or {}
    return {"tag": variant.index_tag, "digest": index.get("index", {}).get("digest"),
            "reference": reference(plan, variant.index_tag)}


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MiB"


def _short(digest: str | None) -> str:
    return digest.removeprefix("sha256:")[:12] if digest else "?"


def _rows(summary: Mapping[str, Any]) -> list[list[str]]:
    return [[t["target"], t["tag"], _short(t["digest"]), _size(t["app_size"]),
             "changed" if t["changed"] else "same", _size(t["sent"])]
            for t in summary["targets"]]


_HEADER: Final = ["target", "tag", "digest", "app", "firmware", "sent"]


def _footer(summary: Mapping[str, Any]) -> list[str]:
    lines = [f"index: {index['reference']} ({_short(index['digest'])})"
             for index in summary["indexes"]]
    if summary["channels"]:
        lines.append("channels moved: " + ", ".join(summary["channels"]))
    lines.append(f"store: {summary['store']}")
    return lines


def text(summary: Mapping[str, Any]) -> str:
    """The console table."""
    rows = [_HEADER, *_rows(summary)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    return "\n".join([*lines, *_footer(summary)]) + "\n"


def markdown(summary: Mapping[str, Any]) -> str:
    """GitHub Actions' job summary."""
    title = f"### {summary['index']['tag']}" if summary["index"] else \
        f"### {summary['version']}, shard {', '.join(summary['shard'] or ())}"
    rows = [_HEADER, ["---"] * len(_HEADER), *_rows(summary)]
    table = ["| " + " | ".join(row) + " |" for row in rows]
    footer = [f"- {line}" for line in _footer(summary)]
    return "\n".join([title, "", *table, "", *footer]) + "\n\n"


def nothing_changed(plan: Plan) -> str:
    """A no-op's one line: what a device pulls, as it stands (reads one receipt)."""
    if plan.sharded:
        return "nothing changed: shard " + ", ".join(s.tag for s in plan.local_published) + "\n"
    return "nothing changed: " + ", ".join(
        f"{index['reference']} ({_short(index['digest'])})"
        for index in (_index(plan, v) for v in plan.variants)) + "\n"


def write(plan: Plan, summary: Mapping[str, Any], step_summary: str) -> None:
    write_atomic(plan.release.root / FILE,
                 json.dumps(summary, indent=2, sort_keys=True).encode() + b"\n")
    if step_summary:
        with Path(step_summary).open("a", encoding="utf-8") as out:
            out.write(markdown(summary))
