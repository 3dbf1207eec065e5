"""What each task does. Every action first removes its receipt and writes it last.

So a failed or killed action leaves no receipt, doit re-runs it, and nothing downstream
trusts half-done work. Names come from the :class:`~esp32tasks.plan.Plan`, never
re-derived here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from esp32tasks import builders, firmware, oci
from esp32tasks.config import Release
from esp32tasks.errors import PublishError
from esp32tasks.plan import Plan, Step, index_annotations
from esp32tasks.receipts import read_json, read_previous, remove, write_json
from esp32tasks.reporting import reported
from esp32tasks.runner import run
from esp32tasks.store import open_store, sha256_file

__all__ = ["build", "index", "reported", "tag", "upload"]


def _rel(release: Release, path: Path) -> str:
    try:
        return path.relative_to(release.root).as_posix()
    except ValueError:
        return str(path)


@reported
def build(release: Release, step: Step) -> None:
    """Run the builder, find its outputs, check the app image, write both receipts."""
    root = release.root
    remove(root / step.build_receipt, root / step.app_receipt)
    build_dir = root / step.build_dir
    app_dir = root / release.project.app_dir
    run(builders.build_argv(release, step.target, str(build_dir)), cwd=app_dir,
        env=builders.build_env(release, step.target), log=root / step.log,
        log_label=step.log.as_posix())
    artifacts = builders.discover(build_dir, app_dir, step.build_dir.as_posix())
    entries: list[dict[str, Any]] = [
        {"kind": a.kind, "name": a.name, "path": _rel(release, a.path),
         "size": a.path.stat().st_size, "sha256": sha256_file(a.path)}
        for a in artifacts
    ]
    app = next(e for e in entries if e["kind"] == "app")
    info = firmware.read_app(root / app["path"], chip=step.target.chip,
                             version=release.project.version, label=app["path"])
    # Two receipts: the image depends on the app alone, the upload on everything.
    write_json(root / step.app_receipt, {
        "target": step.name, "chip": step.target.chip, **app,
        "app_desc": {"version": info.version, "project_name": info.project_name,
                     "elf_sha256": info.elf_sha256},
    })
    write_json(root / step.build_receipt, {"target": step.name, "chip": step.target.chip,
                                           "artifacts": entries})


@reported
def tag(release: Release, step: Step, oci_dir: str) -> None:
    """Package the app binary as the target's image in the layout, under the step's tag."""
    root = release.root
    receipt_path = root / step.image_receipt
    previous = read_previous(receipt_path)
    remove(receipt_path)
    app = read_json(root / step.app_receipt)
    firmware = {"name": app["name"], "sha256": app["sha256"], "size": app["size"]}
    layout = oci.Layout(root / oci_dir)
    if previous and previous.get("firmware") == firmware \
            and layout.has_blob(previous["manifest"]["digest"]):
        # Same firmware, new tag (a new commit): point the tag at the image we have.
        manifest = oci.Blob(oci.MANIFEST_MEDIA_TYPE,
                            layout.read_blob(previous["manifest"]["digest"]))
        layout.tag(step.tag, manifest, slot=f"image:{step.name}")
        write_json(receipt_path, {**previous, "tag": step.tag})
        return
    path = root / app["path"]
    data = path.read_bytes()
    if oci.Blob("", data).digest != "sha256:" + app["sha256"]:
        raise PublishError(f"{app['path']} changed after its build; run `doit release` again")
    image = oci.firmware_image(target=step.name, app_name=app["name"], firmware=data,
                               annotations={"dev.esp32tasks.chip": step.target.chip})
    for blob in (*image.blobs, image.manifest):
        layout.write_blob(blob)
    layout.tag(step.tag, image.manifest, slot=f"image:{step.name}")
    write_json(receipt_path, {
        "target": step.name,
        "tag": step.tag,
        "manifest": image.manifest.descriptor(),
        "config": image.config.descriptor(),
        "layer": image.layer.descriptor(),
        "firmware": firmware,
    })


@reported
def index(plan: Plan) -> None:
    """The image index of every target, tagged ``<app_type>-<version>`` in the layout."""
    root = plan.release.root
    remove(root / plan.index_receipt)
    children = {}
    for step in plan.steps:
        receipt = read_json(root / step.image_receipt)
        children[step.name] = receipt
    blob = oci.image_index(
        [(name, r["manifest"]["digest"], r["manifest"]["size"]) for name, r in children.items()],
        index_annotations(plan),
    )
    layout = oci.Layout(root / plan.oci_dir)
    layout.write_blob(blob)
    layout.tag(plan.index_tag, blob, slot="index")
    write_json(root / plan.index_receipt, {
        "tag": plan.index_tag,
        "index": blob.descriptor(),
        "targets": {name: {"tag": r["tag"], "digest": r["manifest"]["digest"]}
                    for name, r in sorted(children.items())},
    })


@reported
def upload(plan: Plan, step: Step) -> None:
    """Copy every artifact of the target to the store, sending only what changed.

    The previous receipt records each key's SHA-256 as we uploaded it to this store. When
    this task runs because the build changed, it is trusted: an object whose SHA-256 did
    not change gets no request at all, one whose SHA-256 changed is sent without a HEAD
    first (the release check below covers overwriting another revision's release). When
    nothing is known (no receipt, another store, endpoint or prefix) or the build did
    not change (``doit forget upload:<t>``, ``-a``, a lost doit state: someone wants it
    checked), every object is HEAD-checked and only what is missing or different is sent.
    """
    from esp32tasks import manifest

    release = plan.release
    root = release.root
    receipt = root / step.upload_receipt
    previous = read_previous(receipt)
    remove(receipt)
    artifacts = read_json(root / step.build_receipt)["artifacts"]
    built = sha256_file(root / step.build_receipt)
    store = open_store(release.store, root)
    where = {"store": store.describe(), "endpoint": release.store.endpoint_url or ""}
    known = _known_objects(previous, where, built)
    objects, files = [], []
    for artifact in artifacts:
        key = step.store_prefix + artifact["name"]
        path = root / artifact["path"]
        if sha256_file(path) != artifact["sha256"]:
            raise PublishError(f"{artifact['path']} changed after its build; run "
                               "`doit release` again")
        if known.get(key) != artifact["sha256"]:
            files.append((key, path, artifact["sha256"]))
        objects.append({"key": key, "sha256": artifact["sha256"], "size": artifact["size"]})
    if files and manifest.guards(plan):  # never overwrite what another revision released
        manifest.check_release_once(store, plan, force=manifest.forced())
    store.put_files(files, overwrite={key for key, _, _ in files if key in known})
    write_json(receipt, {"target": step.name, **where, "build": built, "objects": objects})


def _known_objects(previous: dict[str, Any] | None, where: dict[str, str], built: str) -> \
        dict[str, str]:
    """key -> SHA-256 the store held after our last upload, when that can be trusted."""
    if previous is None or any(previous.get(k) != v for k, v in where.items()):
        return {}  # never uploaded there, as far as we know
    if previous.get("build") in (None, built):
        return {}  # the same build uploaded again: asked to re-check, so check
    try:
        return {str(o["key"]): str(o["sha256"]) for o in previous["objects"]}
    except (KeyError, TypeError):
        return {}
