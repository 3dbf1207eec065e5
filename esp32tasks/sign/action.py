"""The ``sign:<target>@<key>`` action: the target's app (and, for Secure Boot v2, its
bootloader) signed with one key, the first-flash image merged anew from the signed files.

It writes receipts of the build's own kinds (a ``build`` receipt listing every artifact,
an ``app`` receipt for the signed app), so that ``tag``, ``upload`` and the rest treat a
signed variant exactly as the unsigned build. The unsigned files stay where the build
left them; the signed ones go to ``build/<target>@<key>/``. Like every action it removes
its receipts first and writes them last.

The private key is read here, when the action runs, from the variable or file the key
names (:func:`esp32tasks.sign.keys.load`): never earlier, never into a file under the
repository, never into a receipt, a message or a child's argv.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from esp32tasks import bundle, secureboot
from esp32tasks.config import Key
from esp32tasks.errors import PublishError
from esp32tasks.files import remove, sha256_file, write_atomic
from esp32tasks.plan import Plan, Step

if TYPE_CHECKING:
    from esp32tasks.receipts import Artifact

__all__ = ["FLASHER_ARGS", "public_pem", "sign", "signs"]

FLASHER_ARGS = "flasher_args.json"


def signs(scheme: str, kind: str) -> bool:
    """Which artifacts a scheme signs: the app always; the bootloader with Secure Boot v2
    (a v1 bootloader is protected by the chip's own digest, not a signature)."""
    return kind == "app" or (kind == "bootloader" and secureboot.secure_boot_version(scheme) == 2)


def public_pem(key: Key, root: Path) -> bytes:
    """The key's public PEM: the committed ``public_key``, else the private key's (read
    from where the key names, as :func:`sign` does)."""
    from esp32tasks.sign import keys

    if key.public_key is not None:
        return (root / key.public_key).read_bytes()
    return keys.load(key, root, os.environ).public_pem


def sign(plan: Plan, step: Step) -> None:
    """Sign ``step``'s target with ``step.key``; write its build and app receipts."""
    from esp32tasks.receipts import AppReceipt, BuildReceipt, load, write
    from esp32tasks.sign import image, keys

    key, signed_dir = step.signing
    root = plan.release.root
    remove(root / step.build_receipt, root / step.app_receipt)
    unsigned = plan.build_of(step)
    built = load(root / unsigned.build_receipt, BuildReceipt,
                 unsigned.build_receipt.as_posix())
    app = load(root / unsigned.app_receipt, AppReceipt, unsigned.app_receipt.as_posix())
    loaded = keys.load(key, root, os.environ)
    out = root / signed_dir
    out.mkdir(parents=True, exist_ok=True)
    build_dir = root / step.build_dir
    artifacts: list[Artifact] = []
    instead: dict[str, Path] = {}
    factory = None
    for artifact in built.artifacts:
        if artifact.kind == "factory":
            factory = artifact
            continue
        if not signs(key.scheme, artifact.kind):
            artifacts.append(artifact)
            continue
        source = root / artifact.path
        data = source.read_bytes()
        if sha256_file(source) != artifact.sha256:
            remove(root / unsigned.app_receipt)  # build:<t> runs again (its target)
            raise PublishError(f"{artifact.path} changed after its build; run `doit release` "
                               f"again: build:{unsigned.name} runs first")
        signed = image.sign(loaded, data, os.environ, target=step.target.name)
        path = out / artifact.name
        write_atomic(path, signed)
        artifacts.append(_artifact(root, artifact.kind, path))
        instead[source.relative_to(build_dir).as_posix()] = path
    if factory is not None:  # the first flash, of the signed files
        merged = bundle.merge(build_dir, build_dir / FLASHER_ARGS, out / factory.name,
                              instead=instead)
        artifacts.append(_artifact(root, "factory", merged.path))
    signed_app = next(a for a in artifacts if a.kind == "app")
    write(root / step.app_receipt, AppReceipt(
        target=step.name, chip=step.target.chip, app=signed_app, app_desc=app.app_desc))
    write(root / step.build_receipt, BuildReceipt(
        target=step.name, chip=step.target.chip, artifacts=tuple(artifacts)))


def _artifact(root: Path, kind: str, path: Path) -> Artifact:
    from esp32tasks.receipts import Artifact

    return Artifact(kind=kind, name=path.name, path=path.relative_to(root).as_posix(),
                    size=path.stat().st_size, sha256=sha256_file(path))

