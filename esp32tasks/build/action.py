"""The ``build:<target>`` action: run the builder, find its outputs, check the app image.

It removes its receipts first and writes them last, so a failed or killed build leaves
nothing a rerun would trust.
"""

from __future__ import annotations

from pathlib import Path

from esp32tasks.build import builders, firmware
from esp32tasks.build.runner import run
from esp32tasks.config import Release
from esp32tasks.files import remove, sha256_file
from esp32tasks.plan import Step

__all__ = ["build"]


def _rel(release: Release, path: Path) -> str:
    try:
        return path.relative_to(release.root).as_posix()
    except ValueError:
        return str(path)


def build(release: Release, step: Step) -> None:
    """Run the builder, find its outputs, check the app image, write both receipts."""
    from esp32tasks.receipts import AppDesc, AppReceipt, Artifact, BuildReceipt, write

    root = release.root
    remove(root / step.build_receipt, root / step.app_receipt)
    build_dir = root / step.build_dir
    app_dir = root / release.project.app_dir
    run(builders.build_argv(release, step.target, str(build_dir)), cwd=app_dir,
        env=builders.build_env(release, step.target), log=root / step.log,
        log_label=step.log.as_posix())
    artifacts = tuple(
        Artifact(kind=a.kind, name=a.name, path=_rel(release, a.path),
                 size=a.path.stat().st_size, sha256=sha256_file(a.path))
        for a in builders.discover(build_dir, app_dir, step.build_dir.as_posix()))
    app = next(a for a in artifacts if a.kind == "app")
    info = firmware.read_app(root / app.path, chip=step.target.chip,
                             version=release.project.version, label=app.path)
    # Two receipts: the image depends on the app alone, the upload on everything.
    write(root / step.app_receipt, AppReceipt(
        target=step.name, chip=step.target.chip, app=app,
        app_desc=AppDesc(version=info.version, project_name=info.project_name,
                         elf_sha256=info.elf_sha256)))
    write(root / step.build_receipt, BuildReceipt(target=step.name, chip=step.target.chip,
                                                  artifacts=artifacts))
