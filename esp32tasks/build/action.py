"""The ``build:<target>`` action: run the builder, find its outputs, check the app image.

It removes its receipts first and writes them last, so a failed or killed build leaves
nothing a rerun would trust. :func:`outputs_present` is the task's ``uptodate`` check of
the artifacts themselves: one that is gone or has another size runs the build again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from esp32tasks import bundle
from esp32tasks.build import builders, firmware
from esp32tasks.build.runner import run
from esp32tasks.config import Release
from esp32tasks.files import remove, sha256_file
from esp32tasks.plan import Step

if TYPE_CHECKING:
    from esp32tasks.receipts import BuildReceipt

__all__ = ["build", "outputs_present"]


def _rel(release: Release, path: Path) -> str:
    try:
        return path.relative_to(release.root).as_posix()
    except ValueError:
        return str(path)


def outputs_present(root: Path, step: Step) -> bool:
    """``uptodate`` of ``build:<t>``: every artifact the build receipt lists is there at its
    size. A stat each, no hashing (the no-op budget): other bytes of the same size are
    found by the action that hashes them next, which then removes the app receipt
    (:func:`esp32tasks.images.artifact_changed`), so this task runs again.

    Reads the receipt's JSON without the dataclasses (a no-op never imports them); any
    other shape answers False, and the consumer's ``load`` says what is wrong.
    """
    base = str(root)  # os.stat of a str: a fifth of pathlib's cost, on every no-op
    try:
        artifacts = json.loads((root / step.build_receipt).read_bytes())["artifacts"]
        return all(os.stat(os.path.join(base, a["path"])).st_size  # noqa: PTH116, PTH118
                   == a["size"] for a in artifacts)
    except (OSError, ValueError, KeyError, TypeError):
        return False


#: Outputs of the build's configure step (ESP-IDF writes them when CMake runs, not on
#: every build): a changed one is kept and recorded as it is, as the app's own files are.
_CONFIGURED = frozenset({"sdkconfig", "flasher-args"})


def _drop_changed(root: Path, step: Step, previous: BuildReceipt | None) -> None:
    """Remove the build products that are no longer what the last build made (changed or
    torn behind our back), so the builder makes them anew: an incremental build keeps an
    output it finds newer than its inputs. Only in the target's build directory."""
    if previous is None:
        return
    build_dir = (root / step.build_dir).resolve()
    for artifact in previous.artifacts:
        path = root / artifact.path
        if artifact.kind in _CONFIGURED or not path.is_file() \
                or not path.resolve().is_relative_to(build_dir):
            continue
        if path.stat().st_size != artifact.size or sha256_file(path) != artifact.sha256:
            remove(path)


def build(release: Release, step: Step) -> None:
    """Run the builder, find its outputs, check the app image, write both receipts."""
    from esp32tasks.receipts import AppDesc, AppReceipt, Artifact, BuildReceipt, read, write

    root = release.root
    _drop_changed(root, step, read(root / step.build_receipt, BuildReceipt))
    remove(root / step.build_receipt, root / step.app_receipt)
    build_dir = root / step.build_dir
    app_dir = root / release.project.app_dir
    run(builders.build_argv(release, step.target, str(build_dir)), cwd=app_dir,
        env=builders.build_env(release, step.target), log=root / step.log,
        log_label=step.log.as_posix(), task=f"build:{step.name}")
    artifacts = tuple(
        Artifact(kind=a.kind, name=a.name, path=_rel(release, a.path),
                 size=a.path.stat().st_size, sha256=sha256_file(a.path))
        for a in builders.discover(build_dir, app_dir, step.build_dir.as_posix()))
    app = next(a for a in artifacts if a.kind == "app")
    info = firmware.read_app(root / app.path, chip=step.target.chip,
                             version=release.project.version, label=app.path)
    # the first flash: every part at its offset, in one image (esptool merge-bin)
    factory = bundle.merge(build_dir, build_dir / builders.FLASHER_ARGS,
                           build_dir / bundle.factory_name(release.project.name))
    artifacts += (Artifact(kind="factory", name=factory.path.name,
                           path=_rel(release, factory.path), size=factory.size,
                           sha256=factory.sha256),)
    # Two receipts: the image depends on the app alone, the upload on everything.
    write(root / step.app_receipt, AppReceipt(
        target=step.name, chip=step.target.chip, app=app,
        app_desc=AppDesc(version=info.version, project_name=info.project_name,
                         elf_sha256=info.elf_sha256)))
    write(root / step.build_receipt, BuildReceipt(target=step.name, chip=step.target.chip,
                                                  artifacts=artifacts))
