"""A registry that misbehaves, through the fault proxy: one clear line, nothing trusted that
was not proven, and a plain rerun converges once the fault is gone.

Each test releases the built example (`built`) into the real registry through
``registry_faults``; receipts are checked against the registry itself, never the proxy.
"""

from __future__ import annotations

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
from tests.servers.registry import PASSWORD, USER, RegistryServer, configure
from tests.support.repo import TARGETS, Repo

pytestmark = pytest.mark.integration

#: What the one line must say, per kind of failure (a regular expression, any case).
UNREACHABLE = r"cannot reach|unreachable|reset|closed|cut short|incomplete|truncated"
NOT_A_REGISTRY = r"not an? (OCI |docker |container )?registry"
CREDENTIALS = r"credentials|401|refus"


FAILS = {
    "503-on-every-blob-upload": Case(Fault.http_status(503, retry_after=0), r"\b503\b",
                                     "PUT", r"/blobs/uploads/"),
    "429-retry-after-on-everything": Case(Fault.too_many(1), r"\b429\b|too many"),
    "hang-on-the-first-manifest-put": Case(Fault.hang(), TOO_SLOW, "PUT", r"/manifests/",
                                           times=1, within=15, settings={"timeout": 1}),
    "reset-on-every-upload-start": Case(Fault.reset(), UNREACHABLE, "POST",
                                        r"/blobs/uploads/"),
    "html-200-to-everything": Case(Fault.html(), NOT_A_REGISTRY),
    "truncated-manifest-put-answers": Case(Fault.truncate(), UNREACHABLE, "PUT",
                                           r"/manifests/"),
    "wrong-digest-answering-manifest-puts": Case(Fault.wrong_digest(), r"digest|sha256",
                                                 "PUT", r"/manifests/"),
}
#: More of the same classes elsewhere in the exchange (with --slow).
MORE = {
    "500-on-every-manifest-put": Case(Fault.http_status(500), r"\b500\b", "PUT",
                                      r"/manifests/"),
    "hang-on-the-index-head": Case(Fault.hang(), TOO_SLOW, "HEAD", r"/manifests/hello-1\.0\.0$",
                                   within=15, settings={"timeout": 1}),
    "reset-on-the-index-put": Case(Fault.reset(), UNREACHABLE, "PUT",
                                   r"/manifests/hello-1\.0\.0$"),
    "html-200-from-the-third-request-on": Case(Fault.html(), NOT_A_REGISTRY, nth=3),
    "truncated-upload-start-answers": Case(Fault.truncate(), UNREACHABLE, "POST",
                                           r"/blobs/uploads/"),
}
CASES = [*(pytest.param(c, id=i) for i, c in FAILS.items()),
         *(pytest.param(c, id=i, marks=pytest.mark.slow) for i, c in MORE.items())]


def release(repo: Repo, proxy: FaultProxy, **settings: object) -> None:
    """[registry] through the proxy (committed), with ``settings`` (e.g. ``timeout``)."""
    configure(repo, proxy.host, "cloud-iot/hello", **settings)


@pytest.mark.parametrize("case", CASES)
def test_fault_fails_with_one_clear_line_then_a_plain_rerun_converges(
        built: Repo, registry: RegistryServer, registry_faults: FaultProxy, case: Case) -> None:
    release(built, registry_faults, **case.settings)
    registry_faults.inject(case.fault, method=case.method, path=case.path, nth=case.nth,
                           times=case.times)
    run = doit_bounded(built, "release", timeout=case.within + 30)
    assert registry_faults.faulted(), "the fault never applied"
    line = assert_one_clear_error(run, names=registry_faults.host, says=case.says)
    assert run.elapsed < case.within, f"failed after {run.elapsed:.1f} s: {line}"
    assert_receipts_proven(built, line=line, registry=registry)

    registry_faults.clear()
    assert_converges(built, registry=registry)


@pytest.mark.parametrize(("settings", "within"), [
    pytest.param({"timeout": 2}, 15, id="timeout-2"),
    pytest.param({}, 60, id="default-timeout", marks=pytest.mark.slow)])
def test_slow_drip_answer_fails_in_bounded_time(
        built: Repo, registry: RegistryServer, registry_faults: FaultProxy,
        settings: dict[str, object], within: float) -> None:
    """Every answer comes one byte a second, headers included: each byte is quick, the
    whole is not. A deadline on the whole exchange fails it (the issue: well under 40 s
    for a small answer with the default timeout); a per-read timeout never does. With
    ``timeout = 2`` the same deadline is a few seconds."""
    release(built, registry_faults, **settings)
    registry_faults.inject(Fault.drip(1.0))
    run = doit_bounded(built, "release", timeout=within + 15)
    assert not run.timed_out, f"still running after {within + 15} s:\n{run.output}"
    line = assert_one_clear_error(run, names=registry_faults.host, says=TOO_SLOW)
    assert run.elapsed < within, f"failed after {run.elapsed:.1f} s: {line}"
    assert_receipts_proven(built, line=line, registry=registry)
    registry_faults.clear()
    assert_converges(built, registry=registry)


def test_html_200_fails_even_when_forced_then_a_plain_rerun_converges(
        built: Repo, registry: RegistryServer, registry_faults: FaultProxy) -> None:
    """Forced, nothing in the registry is a reason to stop; a web page answering 200 to
    every request still is not a registry, and nothing it "accepted" is trusted later."""
    release(built, registry_faults)
    registry_faults.inject(Fault.html())
    built.env["ESP32TASKS_FORCE"] = "1"
    run = doit_bounded(built, "release", timeout=60)
    line = assert_one_clear_error(run, names=registry_faults.host, says=NOT_A_REGISTRY)
    assert_receipts_proven(built, line=line, registry=registry)

    registry_faults.clear()
    del built.env["ESP32TASKS_FORCE"]
    assert_converges(built, registry=registry)


@pytest.mark.parametrize("hop", [
    "upload-location-rewritten",
    pytest.param("manifest-head-redirected", marks=pytest.mark.slow)])
def test_credentials_never_follow_to_another_host(
        built: Repo, registry: RegistryServer, registry_faults: FaultProxy,
        capture_server: CaptureServer, hop: str) -> None:
    """A hop rewrites the upload session's Location (or redirects) to another host, which
    asks for credentials: it gets none, and the run says where it was sent."""
    release(built, registry_faults)
    built.env.update({"ESP32TASKS_REGISTRY_USER": USER, "ESP32TASKS_REGISTRY_PASSWORD": PASSWORD})
    if hop == "upload-location-rewritten":
        registry_faults.inject(Fault.location(capture_server.host), method="POST",
                               path=r"/blobs/uploads/")
    else:
        registry_faults.inject(Fault.redirect(capture_server.host), method="HEAD",
                               path=r"/manifests/")
    run = doit_bounded(built, "release", timeout=60)
    assert capture_server.requests(), "nothing was sent to the other host"
    assert capture_server.credentials_seen() == []
    assert any("authorization" in s.headers for s in registry_faults.requests()), \
        "the registry itself got credentials (so there were some to leak)"
    line = assert_one_clear_error(run, names=[registry_faults.host, capture_server.host],
                                  says=CREDENTIALS)
    assert_receipts_proven(built, line=line, registry=registry)

    registry_faults.clear()
    assert_converges(built, registry=registry)
    assert capture_server.credentials_seen() == []


# -- faults a client should ride out -------------------------------------------------------


def test_a_few_503_a_429_with_retry_after_and_a_reset_are_ridden_out_in_one_run(
        built: Repo, registry: RegistryServer, registry_faults: FaultProxy) -> None:
    release(built, registry_faults)
    registry_faults.inject(Fault.too_many(retry_after=2), times=1)  # the first request
    registry_faults.inject(Fault.http_status(503), method="POST", times=2)
    registry_faults.inject(Fault.reset(), method="PUT", path=r"/manifests/", times=1)
    run = doit_bounded(built, "release", timeout=60)
    assert run.code == 0, run.output
    assert [s.fault for s in registry_faults.faulted()] == \
        ["retry_after", "status", "status", "reset"]
    first, retry = registry_faults.requests()[:2]
    assert (retry.method, retry.path) == (first.method, first.path)
    assert retry.at - first.at >= 1.9, f"Retry-After: 2, retried {retry.at - first.at:.2f} s on"
    assert_converges(built, registry=registry)


TRANSIENT = {
    "503-twice": Case(Fault.http_status(503), ""),
    "reset-of-a-blob-put-twice": Case(Fault.reset(), "", "PUT", r"/blobs/uploads/"),
    "503-to-every-manifest-put-twice": Case(Fault.http_status(503), "", "PUT", r"/manifests/"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_transient_faults_are_ridden_out(
        built: Repo, registry: RegistryServer, registry_faults: FaultProxy, case: Case) -> None:
    release(built, registry_faults)
    registry_faults.inject(case.fault, method=case.method, path=case.path, times=2)
    run = doit_bounded(built, "release", timeout=60)
    assert run.code == 0, run.output
    assert len(registry_faults.faulted()) == 2
    assert_converges(built, registry=registry)


# -- what the registry says it holds -------------------------------------------------------


def lose_push_receipts(repo: Repo) -> None:
    """A first release, then the push receipts gone (a lost build/ cache): the next release
    asks the registry what each tag points at."""
    repo.doit("release")
    for name in [*(f"push-{t}" for t in TARGETS), "push-index"]:
        (repo.path / "build" / "receipts" / f"{name}.json").unlink()


@pytest.mark.slow
def test_a_registry_that_never_sends_digests_is_asked_for_the_bytes(
        built: Repo, registry: RegistryServer, registry_faults: FaultProxy) -> None:
    release(built, registry_faults)
    lose_push_receipts(built)
    registry_faults.forget()
    registry_faults.inject(Fault.wrong_digest(None))  # Docker-Content-Digest dropped
    run = doit_bounded(built, "release", timeout=60)
    assert run.code == 0, run.output
    sent = registry_faults.requests()
    assert [s for s in sent if s.method == "GET" and "/manifests/" in s.path], \
        "no manifest was fetched to hash"
    assert not [s for s in sent if s.method in ("PUT", "POST")], "sent what was there"
    assert_converges(built, registry=registry)


def test_digests_that_contradict_the_bytes_are_no_verdict_on_the_tag(
        built: Repo, registry: RegistryServer, registry_faults: FaultProxy) -> None:
    """HEAD and GET of every manifest carry a Docker-Content-Digest the bytes do not hash
    to: the registry is broken, which is what the line says (not "already points at ...,
    released versions are immutable")."""
    release(built, registry_faults)
    lose_push_receipts(built)
    registry_faults.inject(Fault.wrong_digest(), method="HEAD|GET", path=r"/manifests/")
    run = doit_bounded(built, "release", timeout=60)
    line = assert_one_clear_error(run, names=registry_faults.host, says=r"digest|hash")
    assert_receipts_proven(built, line=line, registry=registry)
    registry_faults.clear()
    assert_converges(built, registry=registry)
