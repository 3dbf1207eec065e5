"""Wire cost against a real registry and S3 server on loopback, and push vs skopeo.

Both servers are the test suite's (``tests/servers``): Debian's docker-registry and
SeaweedFS. Each sits behind a :class:`~bench.wireproxy.WireProxy`, which counts the
requests and bytes esp32tasks (or skopeo) sends.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench import synth
from bench.doitrun import executed
from bench.proc import BenchError, timed
from bench.scenarios import Prepared
from bench.stats import summary
from bench.wireproxy import Counts, WireProxy

__all__ = ["measure", "start_servers"]

BUCKET = "bench-store"


def _row(reg: Counts, s3: Counts) -> dict[str, Any]:
    return {"registry_requests": reg.requests, "registry_bytes": reg.sent,
            "registry_methods": reg.methods, "s3_requests": s3.requests, "s3_bytes": s3.sent,
            "s3_methods": s3.methods}


def _blob_size(layout: Path, digest: str) -> int:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).stat().st_size


def _min_registry_bytes(p: Prepared, changed: str) -> int:
    """Changed target's layer + config + manifest, every other manifest, the index."""
    layout = p.synth.root / "build" / "oci"
    index = json.loads((layout / "index.json").read_bytes())
    total = 0
    for desc in index["manifests"]:
        if desc.get("mediaType", "").endswith("index.v1+json"):
            total += desc["size"]
            child_index = json.loads((layout / "blobs" / "sha256"
                                      / desc["digest"].split(":", 1)[1]).read_bytes())
            for child in child_index["manifests"]:
                total += child["size"]
                if child.get("platform", {}).get("architecture") == changed:
                    manifest = json.loads((layout / "blobs" / "sha256"
                                           / child["digest"].split(":", 1)[1]).read_bytes())
                    total += manifest["config"]["size"]
                    total += sum(layer["size"] for layer in manifest["layers"])
            break
    return total


def _artifact_shas(p: Prepared, target: str) -> dict[str, tuple[str, int]]:
    receipt = p.synth.root / "build" / "receipts" / f"build-{target}.json"
    data = json.loads(receipt.read_bytes())
    return {a["name"]: (a["sha256"], a["size"]) for a in data["artifacts"]}


def start_servers(workdir: Path) -> tuple[Any, Any]:
    from tests.servers.registry import RegistryServer
    from tests.servers.s3 import Seaweed

    registry = RegistryServer(workdir / "registry")
    registry.start()
    try:
        s3 = Seaweed(workdir / "s3")
        s3.start()
    except BaseException:
        registry.stop()
        raise
    return registry, s3


def measure(workdir: Path, runs: int) -> dict[str, Any]:
    """Cold release, no-op and a committed one-target change; then push vs skopeo."""
    from tests.servers.s3 import ADMIN

    registry, s3 = start_servers(workdir)
    reg_proxy = WireProxy(("127.0.0.1", registry.port))
    s3_proxy = WireProxy(("127.0.0.1", int(s3.endpoint.rsplit(":", 1)[1])))
    try:
        s3.bucket(BUCKET)
        toml = (f'\n[registry]\nrepository = "{reg_proxy.host}/bench/synth"\ninsecure = true\n'
                f'\n[store]\nurl = "s3://{BUCKET}/bench"\n'
                f'endpoint_url = "http://{s3_proxy.host}"\n')
        p = Prepared(workdir / "wire", 100, 3, extra_toml=toml,
                     extra_env={**ADMIN.env, "ESP32TASKS_FORCE": "1"})
        p.runner.release()
        reg_proxy.reset()
        s3_proxy.reset()
        scenarios: dict[str, Any] = {}
        result = p.runner.release()
        if executed(result):
            raise BenchError(f"a no-op release ran {executed(result)}")
        scenarios["no-op release"] = {**_row(reg_proxy.reset(), s3_proxy.reset()),
                                      "min_registry_bytes": 0, "min_s3_bytes": 0}
        name, _ = p.synth.targets[0]
        before = _artifact_shas(p, name)
        p.salt += 1
        p.synth.own_file(name).write_text(synth.own_source(name, salt=p.salt))
        synth.commit(p.synth.root, "one-target change")
        p.runner.release()
        row = _row(reg_proxy.reset(), s3_proxy.reset())
        after = _artifact_shas(p, name)
        changed = {n: size for n, (sha, size) in after.items()
                   if before.get(n, ("", 0))[0] != sha}
        manifest = (p.synth.root / "build" / "receipts" / "release.json").stat().st_size
        row["min_registry_bytes"] = _min_registry_bytes(p, name)
        row["min_s3_bytes"] = sum(changed.values()) + manifest
        row["min_s3_detail"] = {**changed, "release.json": manifest}
        scenarios["committed one-target change"] = row
        push = _push_vs_skopeo(p, reg_proxy, runs, "example index (3 targets)")
        big = Prepared(workdir / "wire-big", 10, 3, blob_bytes=BIG_FIRMWARE,
                       extra_toml=f'\n[registry]\nrepository = "{reg_proxy.host}/bench/big"\n'
                                  "insecure = true\n")
        big.runner.release()
        push.update(_push_vs_skopeo(big, reg_proxy, runs, BIG_ROW))
        try:
            upload = _upload_vs_aws(p, s3_proxy, runs)
        except BenchError as exc:  # the other rows stand without this one
            upload = {"error": str(exc).splitlines()[0]}
        push.update({k: v for k, v in upload.items() if k == UPLOAD_ROW})
        return {"scenarios": scenarios, "push": push, "notes": [
            "Bytes are what the client sent (request lines, headers and bodies), counted "
            "by a TCP proxy in front of each server; minimum bytes are payloads only (no "
            "HTTP headers): S3's are the objects whose SHA-256 changed "
            f"({', '.join(f'{n} {b}' for n, b in sorted(changed.items()))}) and "
            f"release.json ({manifest}).",
            _upload_note(upload),
            f"{BIG_ROW}: each app image carries {BIG_FIRMWARE // 1024} KiB of incompressible "
            "rodata (the chips' 8 MiB flash window less room for code), so each layer is "
            "about 8 MiB.",
        ]}
    finally:
        reg_proxy.close()
        s3_proxy.close()
        s3.stop()
        registry.stop()


#: Incompressible firmware bytes per target for the large push: 8 MiB less 128 KiB, so the
#: app still fits the 8 MiB flash-mapped window with its code.
BIG_FIRMWARE = 8 * 1024 * 1024 - 128 * 1024
BIG_ROW = "3 targets x 8 MiB firmware"


def _push_vs_skopeo(p: Prepared, proxy: WireProxy, runs: int, label: str) -> dict[str, Any]:
    """Our push of the index to a fresh repository vs skopeo's copy of the same layout."""
    slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
    ours: list[float] = []
    ours_wire: list[float] = []
    peer: list[float] = []
    layout = p.synth.root / "build" / "oci"
    index_tag = "synth-1.0.0"
    for i in range(runs):
        proxy.reset()
        result = p.runner.release(f"registry={proxy.host}/fresh/{slug}-ours{i}")
        counts = proxy.reset()
        if counts.first is None or counts.last is None:
            raise BenchError(f"our push to a fresh repository sent nothing:\n{result.stdout}")
        ours.append(result.seconds)
        ours_wire.append(counts.last - counts.first)
        home = p.synth.root.parent / f"skopeo-home-{i}"  # a fresh blob-info cache
        home.mkdir()
        env = {**os.environ, "HOME": str(home)}
        _clear_skopeo_cache()  # as root it lives outside HOME, and it would mount blobs
        start = time.perf_counter()
        timed(["skopeo", "copy", "--all", "--dest-tls-verify=false",
               f"oci:{layout}:{index_tag}", f"docker://{proxy.host}/fresh/{slug}-skopeo{i}"],
              env=env)
        peer.append(time.perf_counter() - start)
        proxy.reset()
    return {label: {
        "ours": summary(ours), "ours_wire": summary(ours_wire), "peer": summary(peer),
        "peer_tool": "skopeo copy --all (whole process)"}}


#: containers/image keeps its blob-info cache here when run as root (rootless: under HOME).
SKOPEO_ROOT_CACHE = Path("/var/lib/containers/cache")


def _clear_skopeo_cache() -> None:
    """Without this, skopeo mounts layers it pushed to another repository instead of
    sending them again, and the comparison is no longer of two uploads."""
    if os.geteuid() == 0:
        for cache in SKOPEO_ROOT_CACHE.glob("blob-info-cache-v1.*"):
            cache.unlink()


AWS_ENV = "BENCH_AWSCLI"
AWS_DEFAULT = "/tmp/awscli-venv/bin/aws"  # noqa: S108 (a path to read, as the tests use)
UPLOAD_ROW = "S3 upload of the release to an empty prefix"


def _aws() -> str | None:
    """awscli pins an older botocore than ours, so it lives in a venv of its own."""
    aws = os.environ.get(AWS_ENV, AWS_DEFAULT)
    return aws if Path(aws).is_file() else None


def _upload_note(upload: dict[str, Any]) -> str:
    row = upload.get(UPLOAD_ROW)
    if "error" in upload:
        return f"upload vs `aws s3 sync`: not measured ({upload['error']})."
    if row is None:
        return (f"upload vs `aws s3 sync`: not measured (no awscli at {AWS_DEFAULT}; set "
                f"{AWS_ENV}, or `python3 -m venv /tmp/awscli-venv && /tmp/awscli-venv/bin/pip "
                "install awscli`).")
    return (f"S3 upload: {row['objects']} objects, {row['bytes']} bytes, every round to a "
            "fresh prefix of the same warm bucket through the same counting proxy. Ours is "
            "`doit release` after a new commit that changes only store.url (tag, index, "
            "upload and manifest tasks run; no registry), timed whole and from its first S3 "
            "request to its last; `aws s3 sync` of the same files, laid out as in the "
            "bucket, first to last request "
            f"{_fmt(row['peer_wire'])} s.")


def _fmt(s: dict[str, Any]) -> str:
    return f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f}; n={s['runs']})"


def _release_files(p: Prepared, dest: Path) -> tuple[int, int]:
    """The release's objects under ``dest`` with the bucket's key layout: what aws syncs."""
    root = p.synth.root
    local = json.loads((root / "build" / "receipts" / "release.json").read_bytes())
    prefix = f"{local['project']['name']}/{local['project']['app_type']}-" \
             f"{local['project']['version']}"
    count = size = 0
    for target in local["targets"]:
        build = json.loads((root / "build" / "receipts" / f"build-{target}.json").read_bytes())
        for artifact in build["artifacts"]:
            path = dest / prefix / target / "artifacts" / artifact["name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / artifact["path"], path)
            count, size = count + 1, size + artifact["size"]
    release = root / "build" / "receipts" / "release.json"
    shutil.copyfile(release, dest / prefix / "release.json")
    return count + 1, size + release.stat().st_size


def _upload_vs_aws(p: Prepared, proxy: WireProxy, runs: int) -> dict[str, Any]:
    """Ours vs ``aws s3 sync``, each to a fresh prefix of the same bucket, same proxy.

    Ours: the registry is dropped from targets.toml and store.url points at a new prefix,
    committed, so a release runs tag, index, every upload and the manifest, nothing else.
    """
    from tests.servers.s3 import ADMIN

    aws = _aws()
    if aws is None:
        return {}
    root = p.synth.root
    toml = root / "targets.toml"
    text = toml.read_text()
    start, end = text.index("\n[registry]"), text.index("\n[store]")
    base = text[:start] + text[end:]
    files = root.parent / "aws-sync"
    ours: list[float] = []
    ours_wire: list[float] = []
    peer: list[float] = []
    peer_wire: list[float] = []
    objects = size = 0
    try:
        for i in range(runs):
            toml.write_text(base.replace(f"s3://{BUCKET}/bench", f"s3://{BUCKET}/upload/ours{i}"))
            synth.commit(root, f"upload round {i}")
            proxy.reset()
            result = p.runner.release()
            counts = proxy.reset()
            if counts.first is None or counts.last is None:
                raise BenchError(f"our upload to a fresh prefix sent nothing:\n{result.stdout}")
            ours.append(result.seconds)
            ours_wire.append(counts.last - counts.first)
            if i == 0:
                objects, size = _release_files(p, files)
            env = {**os.environ, **ADMIN.env}
            start_time = time.perf_counter()
            timed([aws, "s3", "sync", str(files), f"s3://{BUCKET}/upload/aws{i}",
                   "--only-show-errors", "--endpoint-url", f"http://{proxy.host}"], env=env)
            peer.append(time.perf_counter() - start_time)
            counts = proxy.reset()
            if counts.first is None or counts.last is None or counts.requests < objects:
                raise BenchError(f"aws s3 sync sent {counts.requests} requests for {objects} files")
            peer_wire.append(counts.last - counts.first)
    finally:
        if toml.read_text() != text:
            toml.write_text(text)
            synth.commit(root, "upload rounds done")
    return {UPLOAD_ROW: {
        "ours": summary(ours), "ours_wire": summary(ours_wire), "peer": summary(peer),
        "peer_wire": summary(peer_wire), "objects": objects, "bytes": size,
        "peer_tool": "aws s3 sync (whole process)"}}
