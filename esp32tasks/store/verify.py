"""The store half of ``doit verify``: every object of the release read back and hashed.

What is compared is this checkout's last release, ``build/receipts/release.json`` (the
bytes the ``manifest`` task published): the store's ``release.json`` must be those bytes,
and each artifact it lists must download (:meth:`~esp32tasks.store.base.Store.get_bytes`)
to its SHA-256. Metadata is not trusted: an object overwritten with other bytes under our
``x-amz-meta-sha256`` is found. The cost is a download of the whole release.

:func:`read_back` is shared with ``upload:<t>``, which confirms what a store holds the same
way when it is asked to check again (``doit forget upload:<t>``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Sequence
from typing import Final, NamedTuple

from esp32tasks.errors import VerifyFailed
from esp32tasks.files import remove
from esp32tasks.plan import Plan
from esp32tasks.store import manifest, open_store
from esp32tasks.store.base import Store

__all__ = ["READERS", "read_back", "verify"]

#: Objects downloaded at a time (each is a round trip to an S3 endpoint).
READERS: Final = 8


def read_back(store: Store, keys: Sequence[str]) -> dict[str, str | None]:
    """key -> SHA-256 of the bytes the store holds there (None: no object), several at a
    time. The first error wins; the others are waited for."""
    if len(keys) <= 1:
        return {key: _sha256(store.get_bytes(key)) for key in keys}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(READERS, len(keys)), thread_name_prefix="read-back") as pool:
        return dict(zip(keys, pool.map(lambda key: _sha256(store.get_bytes(key)), keys),
                        strict=True))


def _sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _short(sha256: str) -> str:
    return sha256[:12] + "…"


class _Artifact(NamedTuple):
    name: str
    key: str
    sha256: str


def _released(plan: Plan) -> tuple[bytes, dict[str, list[_Artifact] | None]]:
    """This checkout's last release.json: its bytes, and each target's artifacts (None for
    a target it does not list)."""
    path = plan.release.root / manifest.RECEIPT
    label = manifest.RECEIPT.as_posix()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VerifyFailed(f"{label} is missing: nothing was released from here yet; run "
                           "`doit release` first") from None
    try:
        doc = json.loads(data)
        revision, version = str(doc["git"]["revision"]), str(doc["project"]["version"])
        listed = {name: [_Artifact(str(a["name"]), _key(plan, str(a["path"])),
                                   str(a["sha256"])) for a in entry["artifacts"]]
                  for name, entry in doc["targets"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        remove(path)  # so that the advice holds: the manifest task finds its target missing
        raise VerifyFailed(f"{label} is not a release manifest; run `doit release` again "
                           "(it is written anew)") from None
    if (revision, version) != (plan.git.revision, plan.release.project.version):
        raise VerifyFailed(f"{label} is the release of {version} at commit {revision[:7]}, "
                           f"not of {plan.release.project.version} at {plan.git.short}; run "
                           "`doit release` first")
    return data, {step.name: listed.get(step.name) for step in plan.published}


def _key(plan: Plan, path: str) -> str:
    """An artifact's store key from its path relative to release.json's directory (a signed
    variant's begins with ``../``)."""
    return posixpath.normpath(plan.release_prefix + path)


def _problems(artifacts: list[_Artifact], held: dict[str, str | None]) -> list[str]:
    """What differs for one target's artifacts (empty: every object is as released)."""
    problems = []
    for artifact in artifacts:
        got = held[artifact.key]
        if got is None:
            problems.append(f"{artifact.name} is missing")
        elif got != artifact.sha256:
            problems.append(f"{artifact.name} has other bytes (sha256 {_short(got)}, "
                            f"release.json says {_short(artifact.sha256)})")
    return problems


def verify(plan: Plan) -> None:
    """One line per target (ok, or what differs), :class:`VerifyFailed` on any difference;
    the report ends with the command that sends what differs again."""
    data, targets = _released(plan)
    store = open_store(plan.release.store, plan.release.root)
    where = store.describe(plan.release_prefix)
    key = manifest.manifest_key(plan)
    held = read_back(store, [key, *(a.key for arts in targets.values() for a in arts or ())])
    if held[key] is None:
        report = ["release.json: missing"]
    elif held[key] != hashlib.sha256(data).hexdigest():
        report = [f"release.json: other bytes than {manifest.RECEIPT.as_posix()}"]
    else:
        report = ["release.json: ok"]
    forget = []  # the tasks that send what differs again, once doit forgets them
    for name, artifacts in targets.items():
        problems = ["release.json does not list it"] if artifacts is None else \
            _problems(artifacts, held)
        if problems:
            forget.append(f"upload:{name}")
        report.append(f"{name}: " + ("; ".join(problems) if problems else
                                     f"ok ({len(artifacts or ())} objects)"))
    if report[0] != "release.json: ok":
        forget.append("manifest")
    lines = "\n".join("  " + line for line in report)
    if forget:
        raise VerifyFailed(f"{where} differs from this release:\n{lines}\n  to send it "
                           f"again: `doit forget {' '.join(forget)} && doit release`")
    print(f"{where} holds this release, every object read back:\n{lines}")
