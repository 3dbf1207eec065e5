"""An S3 endpoint that misbehaves, through the fault proxy: one clear line, no upload
receipt that the bucket would not bear out, and a plain rerun converges once it is gone.

Each test releases the built example (`built`) into a bucket of its own on the shared
SeaweedFS, through ``s3_faults`` (which keeps ``Host``, so signatures hold); the bucket is
checked directly, never through the proxy.
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.faults.support import (
    TOO_SLOW,
    Case,
    assert_converges,
    assert_one_clear_error,
    assert_receipts_proven,
    doit_bounded,
)
from tests.servers.faults import CaptureServer, Fault, FaultProxy
from tests.servers.s3 import Seaweed
from tests.support.repo import Repo
from tests.support.s3_release import MANIFEST, new_bucket, use_s3

pytestmark = pytest.mark.integration

UNREACHABLE = (r"cannot connect|cannot reach|unreachable|reset|closed|cut .*short|incomplete"
               r"|truncated")
NOT_S3 = r"not an? S3"
OBJECTS = r"/artifacts/"


FAILS = {
    "503-on-every-object-put": Case(Fault.http_status(503), r"\b503\b|unavailable", "PUT",
                                    OBJECTS),
    "429-retry-after-on-everything": Case(Fault.too_many(1), r"\b429\b|too many|slow ?down"),
    "reset-on-every-object-put": Case(Fault.reset(), UNREACHABLE, "PUT", OBJECTS),
    "html-200-to-everything": Case(Fault.html(), NOT_S3),
    # what the server says it stored, per PUT, is not the SHA-256 sent with it
    "wrong-checksum-answering-object-puts": Case(
        Fault.wrong_digest(base64.b64encode(hashlib.sha256(b"other").digest()).decode(),
                           header="x-amz-checksum-sha256"),
        r"checksum|sha-?256|digest", "PUT", OBJECTS),
}
#: More of the same classes (with --slow); a hang costs two 5 s read timeouts, and the
#: default tier has one already (test_s3_release.py, a server that never answers).
MORE = {
    "hang-on-every-object-put": Case(Fault.hang(), TOO_SLOW, "PUT", OBJECTS, within=25),
    "500-on-the-manifest-put": Case(Fault.http_status(500), r"\b500\b|internal", "PUT",
                                    r"release\.json"),
    "reset-on-everything": Case(Fault.reset(), UNREACHABLE),
    "html-200-from-the-fifth-request-on": Case(Fault.html(), NOT_S3, nth=5),
    # a PutObject answer has an empty body: cut short, its headers (checksum) still arrive
    "truncated-object-put-answers": Case(Fault.truncate(), UNREACHABLE, "PUT", OBJECTS),
}
CASES = [*(pytest.param(c, id=i) for i, c in FAILS.items()),
         *(pytest.param(c, id=i, marks=pytest.mark.slow) for i, c in MORE.items())]


def release(repo: Repo, server: Seaweed, proxy: FaultProxy) -> str:
    """[store] through the proxy into a new bucket (committed); returns the bucket."""
    bucket = server.bucket(new_bucket())
    use_s3(repo, proxy.endpoint, bucket)
    return bucket


@pytest.mark.parametrize("case", CASES)
def test_fault_fails_with_one_clear_line_then_a_plain_rerun_converges(
        built: Repo, s3_server: Seaweed, s3_faults: FaultProxy, case: Case) -> None:
    bucket = release(built, s3_server, s3_faults)
    s3_faults.inject(case.fault, method=case.method, path=case.path, nth=case.nth,
                     times=case.times)
    run = doit_bounded(built, "release", timeout=case.within + 30)
    assert s3_faults.faulted(), "the fault never applied"
    line = assert_one_clear_error(run, names=s3_faults.host, says=case.says)
    assert run.elapsed < case.within, f"failed after {run.elapsed:.1f} s: {line}"
    assert_receipts_proven(built, line=line, s3=s3_server, bucket=bucket)

    s3_faults.clear()
    assert_converges(built, s3=s3_server, bucket=bucket)


@pytest.mark.slow  # about 25 s; tests/unit/store/test_s3_deadlines.py proves it in 2
def test_slow_drip_answer_fails_within_a_minute(
        built: Repo, s3_server: Seaweed, s3_faults: FaultProxy) -> None:
    """Every answer comes one byte a second, headers included: no single read waits long,
    the whole exchange does."""
    bucket = release(built, s3_server, s3_faults)
    s3_faults.inject(Fault.drip(1.0))
    run = doit_bounded(built, "release", timeout=75)
    assert not run.timed_out, f"still running after 75 s:\n{run.output}"
    line = assert_one_clear_error(run, names=s3_faults.host, says=TOO_SLOW)
    assert run.elapsed < 60, f"failed after {run.elapsed:.1f} s: {line}"
    assert_receipts_proven(built, line=line, s3=s3_server, bucket=bucket)
    s3_faults.clear()
    assert_converges(built, s3=s3_server, bucket=bucket)


def test_html_200_fails_even_when_forced_then_a_plain_rerun_converges(
        built: Repo, s3_server: Seaweed, s3_faults: FaultProxy) -> None:
    """Forced, no release.json is read first; a web page answering 200 to every PUT still
    stores nothing, and no receipt may say it did."""
    bucket = release(built, s3_server, s3_faults)
    s3_faults.inject(Fault.html())
    built.env["ESP32TASKS_FORCE"] = "1"
    run = doit_bounded(built, "release", timeout=60)
    line = assert_one_clear_error(run, names=s3_faults.host, says=NOT_S3)
    assert_receipts_proven(built, line=line, s3=s3_server, bucket=bucket)

    s3_faults.clear()
    del built.env["ESP32TASKS_FORCE"]
    assert_converges(built, s3=s3_server, bucket=bucket)


def test_a_redirect_to_another_host_gets_no_credentials(
        built: Repo, s3_server: Seaweed, s3_faults: FaultProxy,
        capture_server: CaptureServer) -> None:
    bucket = release(built, s3_server, s3_faults)
    s3_faults.inject(Fault.redirect(capture_server.host), method="PUT", path=OBJECTS)
    run = doit_bounded(built, "release", timeout=60)
    assert capture_server.credentials_seen() == []
    line = assert_one_clear_error(run, names=[s3_faults.host, capture_server.host],
                                  says=r"redirect|307|moved|another host|elsewhere")
    assert_receipts_proven(built, line=line, s3=s3_server, bucket=bucket)

    s3_faults.clear()
    assert_converges(built, s3=s3_server, bucket=bucket)
    assert capture_server.credentials_seen() == []


def test_a_truncated_release_json_is_no_verdict(
        built: Repo, s3_server: Seaweed, s3_faults: FaultProxy) -> None:
    """The release check reads release.json (there: 200), but the answer is cut short: that
    is a failing server or network, not "not an esp32tasks release manifest"."""
    bucket = release(built, s3_server, s3_faults)
    built.doit("release")
    (built.path / "build/receipts/upload-esp32c3.json").unlink()  # upload:esp32c3 runs again
    s3_faults.inject(Fault.truncate(), method="GET", path=r"release\.json$")
    run = doit_bounded(built, "release", timeout=60)
    assert s3_faults.faulted(), "the fault never applied"
    line = assert_one_clear_error(run, names=s3_faults.host, says=UNREACHABLE)
    assert_receipts_proven(built, line=line, s3=s3_server, bucket=bucket)
    s3_faults.clear()
    assert_converges(built, s3=s3_server, bucket=bucket)


# -- faults a client should ride out -------------------------------------------------------


def test_a_503_a_429_and_a_reset_are_ridden_out_in_one_run(
        built: Repo, s3_server: Seaweed, s3_faults: FaultProxy) -> None:
    bucket = release(built, s3_server, s3_faults)
    s3_faults.inject(Fault.http_status(503), method="GET", times=1)  # the release check
    s3_faults.inject(Fault.too_many(1), method="HEAD", times=1)
    s3_faults.inject(Fault.reset(), method="PUT", path=OBJECTS, times=1)
    run = doit_bounded(built, "release", timeout=60)
    assert run.code == 0, run.output
    assert sorted(str(s.fault) for s in s3_faults.faulted()) == ["reset", "retry_after", "status"]
    assert_converges(built, s3=s3_server, bucket=bucket)


def test_wrong_sha256_metadata_is_sent_again(
        built: Repo, s3_server: Seaweed, s3_faults: FaultProxy) -> None:
    """Objects whose metadata names another SHA-256 are not ours: checked, they go again."""
    bucket = release(built, s3_server, s3_faults)
    built.doit("release")
    # no receipt (a failed upload): each object of esp32c3 is HEAD-checked
    (built.path / "build/receipts/upload-esp32c3.json").unlink()
    s3_faults.forget()
    s3_faults.inject(Fault.wrong_digest("0" * 64, header="x-amz-meta-sha256"), method="HEAD")
    run = doit_bounded(built, "release", timeout=60)
    assert run.code == 0, run.output
    puts = [s.path for s in s3_faults.requests() if s.method == "PUT"]
    assert len([p for p in puts if "/esp32c3/artifacts/" in p]) == 10, puts
    assert not [p for p in puts if p.endswith(MANIFEST)]  # the same release.json
    assert_converges(built, s3=s3_server, bucket=bucket)
