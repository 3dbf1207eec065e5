"""``latest.json`` and ``latest.md``: the numbers, and a table a reviewer can read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.example import table as example_table
from bench.fleet import table as fleet_table

__all__ = ["write"]


def _s(value: Any, unit: str = "s") -> str:
    """``median (min-max)`` of a summary, or the text of a 'not measured' entry."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "median" in value:
        scale, fmt = (1000.0, "{:.0f} ms") if unit == "ms" else (1.0, "{:.3f}")
        med, lo, hi = (value[k] * scale for k in ("median", "min", "max"))
        return f"{fmt.format(med)} ({fmt.format(lo)}-{fmt.format(hi)}; n={value['runs']})"
    return str(value)


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# esp32tasks benchmark",
        "",
        f"{data['mode']} run, {data['started']}, {data['machine']}. "
        "Times are whole processes (`python -m doit ...`), median (min-max; runs).",
        "",
        "## No-op release vs doit's floor, and one changed file",
        "",
        "| N files x T targets | tasks | file_dep | cold build | no-op (ours) | no-op (floor) "
        "| ratio | shared file changed: compiles / T, wall | one target's file: compiles, "
        "wall | that compile alone |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size in data["sizes"]:
        if "skipped" in size:
            lines.append(f"| {size['files']} x {size['targets']} | {size['skipped']} "
                         "| | | | | | | | |")
            continue
        c, n, sh, own = size["cold"], size["noop"], size["shared_change"], size["own_change"]
        lines.append(
            f"| {size['files']} x {size['targets']} | {c['tasks']} | {c['file_dep']} "
            f"| {c['seconds']:.1f} s ({c['compiles']} compiles) "
            f"| {_s(n['ours'], 'ms')} | {_s(n['floor'], 'ms')} | {_s(n['ratio'])} "
            f"| {max(sh['compiles_of_file'])} / {sh['targets_using_it']}, {_s(sh['wall'])} s "
            f"| {max(own['compiles_of_file'])} / {own['targets_using_it']}, "
            f"{_s(own['wall'])} s | {_s(own['compile_alone'], 'ms')} |")
    sc = data["scaling"]
    lines += [
        "",
        "## Scaling of the no-op (least squares over the sizes, x = file_dep entries)",
        "",
        "| | slope (µs per file_dep) | intercept (ms) |",
        "| --- | --- | --- |",
        f"| ours | {sc['ours_slope_us']:.2f} | {sc['ours_intercept_ms']:.0f} |",
        f"| floor | {sc['floor_slope_us']:.2f} | {sc['floor_intercept_ms']:.0f} |",
        "",
        "## Wire cost and push/upload",
        "",
    ]
    wire = data["wire"]
    if isinstance(wire, str):
        lines.append(wire)
    else:
        lines += wire_table(wire)
    patches = data.get("delta")
    if patches is not None:
        lines += ["", "## What a device downloads for one update: full layer vs delta patch", ""]
        lines += [patches] if isinstance(patches, str) else delta_table(patches)
    example = data.get("example")
    if example is not None:
        lines += ["", "## The bundled example: cold, restored state, remote cache hit", ""]
        lines += [example if isinstance(example, str) else example_table(example)]
    fleet = data.get("fleet")
    if fleet is not None:
        lines += ["", "## A fleet of CI runners sharing one build cache", ""]
        lines += [fleet if isinstance(fleet, str) else fleet_table(fleet)]
    return "\n".join(lines) + "\n"


def delta_table(cases: list[dict[str, Any]]) -> list[str]:
    lines = ["| case | app | full layer (gzip) | patch | patch / app | patch / layer "
             "| making the patch |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in cases:
        lines.append(f"| {c['case']} | {c['app']} B | {c['layer']} B | {c['patch']} B "
                     f"| {c['patch'] / c['app']:.1%} | {c['share_of_layer']:.1%} "
                     f"| {c['make_seconds'] * 1000:.1f} ms |")
    return [*lines, "", "- An app over OTA is the whole app (patch / app); the registry's "
            "layer is the app gzipped (patch / layer). The example's patches are mostly the "
            "64-byte header."]


def wire_table(wire: dict[str, Any]) -> list[str]:
    lines = ["| scenario | registry requests | registry bytes sent | S3 requests "
             "| S3 bytes sent | minimum bytes (registry / S3) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, row in wire.get("scenarios", {}).items():
        lines.append(f"| {name} | {row['registry_requests']} | {row['registry_bytes']} "
                     f"| {row['s3_requests']} | {row['s3_bytes']} "
                     f"| {row.get('min_registry_bytes', '-')} / {row.get('min_s3_bytes', '-')} |")
    push = wire.get("push")
    if push:
        lines += ["", "| transfer | ours: whole process | ours: first to last request "
                  "| peer: whole process | peer |", "| --- | --- | --- | --- | --- |"]
        for name, row in push.items():
            lines.append(f"| {name} | {_s(row.get('ours'))} | {_s(row.get('ours_wire'))} "
                         f"| {_s(row.get('peer'))} | {row.get('peer_tool', '')} |")
    for note in wire.get("notes", []):
        lines += ["", f"- {note}"]
    return lines


def write(out: Path, data: dict[str, Any]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "latest.json", out / "latest.md"
    js.write_text(json.dumps(data, indent=2) + "\n")
    md.write_text(markdown(data))
    return js, md
