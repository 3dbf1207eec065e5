"""``doit verify``: resolve the released index the way esp32-flashjob does, and compare.

For each target: the index tag, then the child whose descriptor's platform is
``custom``/``<target>``, then its manifest, config and layer; the first regular file
whose path contains "firmware" must be the app binary the local receipts name. Also
checks the per-target tag. Any difference fails the task with a per-target report that
ends with the command that pushes this build again (forgetting the push tasks makes them
check the registry instead of trusting their receipts).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from esp32tasks.config import RegistryConfig
from esp32tasks.errors import ConfigError, PublishError, VerifyFailed
from esp32tasks.plan import Delta, Plan, Variant
from esp32tasks.registry.client import Client
from esp32tasks.registry.referrers import firmware_in_layer

if TYPE_CHECKING:
    from esp32tasks.receipts import ImageReceipt

__all__ = ["PUSH_AGAIN", "check_target", "firmware_in_layer", "push_again", "verify"]

#: What sends this build to the registry again when our receipts say it is there.
PUSH_AGAIN = "`doit forget push push-index && doit release`"


def push_again(variant: Variant) -> str:
    """:data:`PUSH_AGAIN` for one variant (its index task is ``push-index@<key>``)."""
    return PUSH_AGAIN.replace("push-index", variant.push_index_task)


#: A check of the app a device would flash: a problem, or None (e.g. its signature).
AppCheck = Callable[[bytes], "str | None"]


def check_target(client: Client, index: dict[str, Any], target: str,
                 image: ImageReceipt, check: AppCheck | None = None) -> list[str]:
    """Problems for one target (empty when the registry serves exactly our image, and
    ``check`` finds nothing wrong with the app in it)."""
    import tarfile

    matches = [d for d in index.get("manifests", [])
               if d.get("platform", {}).get("os") == "custom"
               and d.get("platform", {}).get("architecture") == target]
    if not matches:
        return ["the index has no child for platform custom/" + target]
    problems = []
    child = matches[0]
    ours = image.manifest.digest
    if child["digest"] != ours:
        problems.append(f"the index points at {child['digest']}, the local image is {ours}")
    tagged = client.manifest_digest(image.tag)
    if tagged is None:
        problems.append(f"tag {image.tag} is missing")
    elif tagged != ours:
        problems.append(f"tag {image.tag} points at {tagged}, the local image is {ours}")
    _, data = client.get_manifest(child["digest"])
    manifest = json.loads(data)
    layers = manifest.get("layers") or []
    if manifest.get("config", {}).get("digest") != image.config.digest:
        problems.append(f"config is {manifest.get('config', {}).get('digest')}, the local "
                        f"one is {image.config.digest}")
    if len(layers) != 1:
        return [*problems, f"the image has {len(layers)} layers, expected 1"]
    blob = client.get_blob(layers[0]["digest"])
    if "sha256:" + hashlib.sha256(blob).hexdigest() != layers[0]["digest"]:
        return [*problems, f"layer {layers[0]['digest']} does not match its digest"]
    try:
        found = firmware_in_layer(blob)
    except (OSError, tarfile.TarError, EOFError) as exc:
        return [*problems, f"layer {layers[0]['digest']} is not a gzip tar ({exc})"]
    if found is None:
        return [*problems, "the layer holds no file whose path contains 'firmware'"]
    return problems + _firmware_problems(*found, image, check)


def patch_problems(plan: Plan, delta: Delta, client: Client,
                   image: ImageReceipt) -> list[str]:
    """A device on each base: the patch found among the image's referrers by its running
    app's hash, applied to that app, must make the app the index serves."""
    from esp32tasks import delta as patching
    from esp32tasks.receipts import DeltaReceipt, load
    from esp32tasks.registry.referrers import BASE_SHA256, referrers

    root = plan.release.root
    made = load(root / delta.receipt, DeltaReceipt, delta.receipt.as_posix())
    found = referrers(client, image.manifest.digest)
    problems = []
    for patch in made.patches:
        match = next((d for d in found
                      if d.get("annotations", {}).get(BASE_SHA256) == patch.base_hash), None)
        if match is None:
            problems.append(f"no patch from {patch.base} among the image's referrers")
            continue
        _, data = client.get_manifest(str(match["digest"]))
        layers = json.loads(data).get("layers") or [{}]
        blob = client.get_blob(str(layers[0].get("digest")))
        cached = root / delta.dir / f"base-{patch.base}.bin"
        if not cached.is_file():
            problems.append(f"the {patch.base} app is not in {delta.dir} to check the patch "
                            f"against; run `doit forget delta:{delta.name} && doit release`")
            continue
        base = cached.read_bytes()
        try:
            new = patching.apply(base, blob)
        except patching.DeltaError as exc:
            problems.append(f"the patch from {patch.base} does not apply: {exc}")
            continue
        if hashlib.sha256(new).hexdigest() != image.firmware.sha256:
            problems.append(f"the patch from {patch.base} makes other bytes than the app")
    return problems


def _firmware_problems(name: str, firmware: bytes, image: ImageReceipt,
                       check: AppCheck | None) -> list[str]:
    """What is wrong with the file the consumer would flash."""
    expected = image.firmware
    problems = []
    if name != f"firmware/{expected.name}":
        problems.append(f"the consumer would flash {name}, not firmware/{expected.name}")
    if hashlib.sha256(firmware).hexdigest() != expected.sha256:
        problems.append(f"{name} differs from the local {expected.name} "
                        f"(sha256 {hashlib.sha256(firmware).hexdigest()[:12]}…, "
                        f"local {expected.sha256[:12]}…)")
    found = None if check is None else check(firmware)
    return problems if found is None else [*problems, found]


def verify(plan: Plan, config: RegistryConfig | None,
           checks: Mapping[str, AppCheck] | None = None) -> None:
    """``doit verify``: one line per target of each variant, :class:`VerifyFailed` on any
    difference; ``checks`` (by key name) check each signed app as a device would."""
    if config is None:
        raise ConfigError(["no registry configured: add [registry] repository = "
                           '"host/path" to targets.toml, or set ESP32TASKS_REGISTRY'])
    client = Client(config, plan.release.root, push=False)
    failures: list[str] = []
    for variant in plan.variants:
        check = None if variant.key is None else (checks or {}).get(variant.key.name)
        try:
            _verify_variant(plan, variant, config, client, check)
        except VerifyFailed as exc:
            failures.append(str(exc))
    if failures:
        raise VerifyFailed("\n".join(failures))


def _verify_variant(plan: Plan, variant: Variant, config: RegistryConfig, client: Client,
                    check: AppCheck | None) -> None:
    from esp32tasks.receipts import ImageReceipt, IndexReceipt, load

    root = plan.release.root
    receipt = load(root / variant.index_receipt, IndexReceipt,
                   variant.index_receipt.as_posix())
    where = f"{config.repository}:{receipt.tag}"
    report: list[str] = []
    index_digest = client.manifest_digest(receipt.tag)
    if index_digest is None:
        if (root / variant.push_index_receipt).exists():  # pushed, and gone since
            raise VerifyFailed(f"{where} does not exist; run {push_again(variant)} to push "
                               "it again")
        raise VerifyFailed(f"{where} does not exist; run `doit release` to push it")
    if index_digest != receipt.index.digest:
        report.append(f"index: {where} is {index_digest}, the local index is "
                      f"{receipt.index.digest}")
    _, data = client.get_manifest(index_digest)
    index = json.loads(data)
    failed = bool(report)
    for step in variant.steps:
        image = load(root / step.image_receipt, ImageReceipt, step.image_receipt.as_posix())
        try:
            problems = check_target(client, index, step.target.name, image, check)
            delta = plan.delta_of(step)
            if delta is not None:
                problems += patch_problems(plan, delta, client, image)
        except PublishError as exc:
            problems = [str(exc)]
        failed = failed or bool(problems)
        report.append(f"{step.name}: " + ("ok" if not problems else "; ".join(problems)))
    if failed:
        raise VerifyFailed(f"{where} differs from this build:\n" + "\n".join(
            "  " + line for line in report) + "\n  to push this build again: "
            f"{push_again(variant)} "
            "(a released tag moves only with ESP32TASKS_FORCE=1)")
    signed = "" if variant.key is None else f" (signature by key {variant.key.name} ok)"
    print(f"{where}: " + ", ".join(f"{s.name} ok" for s in variant.steps) + signed)
