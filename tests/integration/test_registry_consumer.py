"""What esp32-flashjob gets, checked with independent clients (skopeo, umoci), and `verify`."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from esp32tasks import oci
from esp32tasks.receipts import AppReceipt, ImageReceipt, IndexReceipt
from tests.servers.registry import PASSWORD, USER, RegistryServer, configure
from tests.support.repo import TARGETS, Repo, receipt

pytestmark = pytest.mark.integration

PATH = "cloud-iot/hello"
INDEX_TAG = "hello-1.0.0"


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("skopeo", "umoci"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (ci/setup installs it)")


def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    return path


def skopeo(tmp_path: Path, *args: str) -> str:
    proc = subprocess.run(["skopeo", "--policy", str(policy(tmp_path)), *args],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def regular_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def pull_firmware(tmp_path: Path, source: str, target: str, *src_flags: str) -> Path:
    """``skopeo copy --override-os custom --override-arch <target>``, then unpack: the rootfs."""
    layout = tmp_path / f"pulled-{target}"
    skopeo(tmp_path, "copy", *src_flags, "--override-os", "custom", "--override-arch", target,
           source, f"oci:{layout}:{target}")
    bundle = tmp_path / f"rootfs-{target}"
    subprocess.run(["umoci", "raw", "unpack", "--rootless", "--image", f"{layout}:{target}",
                    str(bundle)], check=True, capture_output=True, timeout=120)
    return bundle


def test_each_target_pulls_exactly_its_own_firmware(
        repo: Repo, registry: RegistryServer, tmp_path: Path) -> None:
    configure(repo, registry)
    repo.doit("release")
    source = f"docker://{registry.host}/{PATH}:{INDEX_TAG}"
    for target in TARGETS:
        rootfs = pull_firmware(tmp_path, source, target, "--src-tls-verify=false")
        app = receipt(repo, f"app-{target}", AppReceipt).app
        firmware = [p for p in regular_files(rootfs) if "firmware" in str(p.relative_to(rootfs))]
        assert [p.relative_to(rootfs).as_posix() for p in firmware] == [f"firmware/{app.name}"]
        assert firmware[0].read_bytes() == (repo.path / app.path).read_bytes()
        inspect = json.loads(skopeo(tmp_path, "inspect", "--tls-verify=false",
                                    "--override-os", "custom", "--override-arch", target,
                                    source))
        assert (inspect["Os"], inspect["Architecture"]) == ("custom", target)
        assert inspect["Digest"] == receipt(repo, "index", IndexReceipt).index.digest
        assert inspect["Layers"] == [receipt(repo, f"image-{target}", ImageReceipt).layer.digest]


def test_consumer_over_tls_with_auth(repo: Repo, secure_registry: RegistryServer,
                                     tmp_path: Path) -> None:
    assert secure_registry.ca is not None
    shutil.copy(secure_registry.ca, repo.path / "registry-ca.pem")
    configure(repo, secure_registry, ca_bundle="registry-ca.pem")
    repo.env.update({"ESP32TASKS_REGISTRY_USER": USER, "ESP32TASKS_REGISTRY_PASSWORD": PASSWORD})
    repo.doit("release")
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(secure_registry.ca, certs / "ca.crt")
    rootfs = pull_firmware(tmp_path, f"docker://{secure_registry.host}/{PATH}:{INDEX_TAG}",
                           "esp32c6", "--src-cert-dir", str(certs),
                           "--src-creds", f"{USER}:{PASSWORD}")
    app = receipt(repo, "app-esp32c6", AppReceipt).app
    assert (rootfs / "firmware" / app.name).read_bytes() == \
        (repo.path / app.path).read_bytes()


def test_verify_passes_then_reports_a_moved_index(
        repo: Repo, registry: RegistryServer) -> None:
    configure(repo, registry)
    repo.doit("release")
    ok = repo.doit("verify")
    assert f"{registry.host}/{PATH}:{INDEX_TAG}: esp32c3 ok, esp32c6 ok, esp32h2 ok" \
        in ok.stdout

    # behind our back: the index now sends esp32c3 devices esp32c6's firmware
    _, data = registry.manifest(PATH, INDEX_TAG)
    index = json.loads(data)
    c6 = next(d for d in index["manifests"] if d["platform"]["architecture"] == "esp32c6")
    for child in index["manifests"]:
        if child["platform"]["architecture"] == "esp32c3":
            child.update(digest=c6["digest"], size=c6["size"])
    registry.put_manifest(PATH, INDEX_TAG, oci.INDEX_MEDIA_TYPE, oci.canonical_json(index))

    bad = repo.doit("verify", check=False)
    assert bad.code != 0
    report = bad.stderr
    ours = receipt(repo, "index", IndexReceipt).index.digest
    assert f"error: verify: {registry.host}/{PATH}:{INDEX_TAG} differs from this build:" \
        in report
    assert f"  index: {registry.host}/{PATH}:{INDEX_TAG} is sha256:" in report
    assert f"the local index is {ours}" in report
    c3_line = next(line for line in report.splitlines() if line.startswith("  esp32c3: "))
    assert f"the index points at {c6['digest']}" in c3_line
    assert "differs from the local" in c3_line  # the firmware bytes themselves
    assert "  esp32c6: ok" in report
    assert "  esp32h2: ok" in report
    assert "Traceback" not in bad.output


def test_verify_reports_a_missing_tag(repo: Repo, registry: RegistryServer) -> None:
    configure(repo, registry)
    repo.doit("index")  # built, never pushed
    run = repo.doit("verify", check=False)
    assert run.code != 0
    assert f"error: verify: {registry.host}/{PATH}:{INDEX_TAG} does not exist; run " \
        "`doit release` to push it" in run.stderr


def test_push_time_against_skopeo(repo: Repo, registry: RegistryServer,
                                  tmp_path: Path) -> None:
    """The example's index: our push (a whole `doit` run) vs skopeo copy of the same layout."""
    configure(repo, registry)
    repo.doit("index")
    started = time.monotonic()
    repo.doit("release")
    ours = time.monotonic() - started
    started = time.monotonic()
    skopeo(tmp_path, "copy", "--all", "--dest-tls-verify=false",
           f"oci:{repo.path / 'build/oci'}:{INDEX_TAG}",
           f"docker://{registry.host}/skopeo/hello:{INDEX_TAG}")
    theirs = time.monotonic() - started
    # same bytes, so the same digest: skopeo pushed exactly our index
    assert registry.manifest("skopeo/hello", INDEX_TAG)[0] == \
        registry.manifest(PATH, INDEX_TAG)[0]
    print(f"\npush of the example index: doit release {ours:.2f} s, "
          f"skopeo copy --all {theirs:.2f} s")
    assert ours < 10 * theirs + 2


def test_firmware_digest_in_receipt_matches_layer(repo: Repo, registry: RegistryServer) -> None:
    """The receipt's firmware sha256 is what verify compares against: it is the app's."""
    configure(repo, registry)
    repo.doit("release")
    for target in TARGETS:
        app = receipt(repo, f"app-{target}", AppReceipt).app
        data = (repo.path / app.path).read_bytes()
        assert receipt(repo, f"image-{target}", ImageReceipt).firmware.sha256 == \
            hashlib.sha256(data).hexdigest()
