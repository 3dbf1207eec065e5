"""Seeded kill trials: a release stopped at a random moment, then rerun, ends where an
uninterrupted release ends, byte for byte.

Each trial releases the example into the real registry and SeaweedFS (both through fault
proxies, which only count requests here), stops ``doit release`` with SIGKILL, SIGTERM or
SIGINT (its whole process group, as a terminal or a CI runner does) after a random delay
or at a random request, then runs ``doit release`` again: it must succeed, the next one
must run no task, and every tag in the registry (per-target tags and the index), every
object in the bucket (key, bytes, metadata) and release.json must equal those of one
uninterrupted reference release.

12 trials by default, 50 with ``--slow``. The seed is random unless ``KILL_TRIALS_SEED``
is set, and every failure names it: ``KILL_TRIALS_SEED=<seed> pytest
tests/faults/test_kill_trials.py -k trial-7`` replays that trial.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.support import doit_bounded
from tests.servers.faults import FaultProxy, Seen
from tests.servers.registry import RegistryServer, configure
from tests.servers.s3 import ADMIN, Seaweed
from tests.support.registry_wire import PATH
from tests.support.repo import GIT_ENV, Repo, Run, copy_example
from tests.support.s3_release import new_bucket, use_s3

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("KILL_TRIALS_SEED") or random.SystemRandom().randrange(2**32))
TRIALS, SLOW_TRIALS = 12, 50
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
#: Seconds a run may take to stop after SIGTERM or SIGINT.
STOP_WITHIN = 30.0


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "trial" in metafunc.fixturenames:
        count = SLOW_TRIALS if metafunc.config.getoption("--slow") else TRIALS
        metafunc.parametrize("trial", range(count), ids=[f"trial-{i}" for i in range(count)])


@dataclass(frozen=True)
class Snapshot:
    """What a release leaves on the servers and its local release.json."""

    tags: dict[str, tuple[str, bytes]]
    objects: dict[str, tuple[bytes, dict[str, str]]]
    release: bytes

    def differences(self, other: Snapshot) -> list[str]:
        found = []
        for name, mine, theirs in (("tag", self.tags, other.tags),
                                   ("object", self.objects, other.objects)):
            for key in sorted(set(mine) | set(theirs)):
                if key not in theirs:
                    found.append(f"{name} {key} missing")
                elif key not in mine:
                    found.append(f"{name} {key} extra")
                elif mine[key] != theirs[key]:
                    found.append(f"{name} {key} differs")
        if self.release != other.release:
            found.append("release.json differs")
        return found


@dataclass
class World:
    """The servers, their proxies, and the example configured for them (built, and not)."""

    registry: RegistryServer
    registry_proxy: FaultProxy
    s3: Seaweed
    s3_proxy: FaultProxy
    bucket: str
    unbuilt: Path
    built: Path
    workdir: Path
    copies: int = 0

    def reset(self) -> None:
        """Empty registry and bucket, no hooks, no record."""
        self.registry.kill()
        shutil.rmtree(self.registry.storage, ignore_errors=True)
        self.registry.start()  # the same port: the proxy still points at it
        client = self.s3.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})  # type: ignore[typeddict-item]
        for proxy in (self.registry_proxy, self.s3_proxy):
            proxy.clear()
            proxy.forget()
            proxy.on_request = None

    def copy(self, *, scratch: bool) -> Repo:
        self.copies += 1
        parent = self.workdir / f"copy-{self.copies}"
        (parent / "home").mkdir(parents=True)
        shutil.copytree(self.unbuilt if scratch else self.built, parent / "firmware",
                        symlinks=True)
        return Repo(parent / "firmware", dict(ADMIN.env))

    def requests(self) -> int:
        return len(self.registry_proxy.requests()) + len(self.s3_proxy.requests())

    def snapshot(self, repo: Repo) -> Snapshot:
        tags = {tag: self.registry.manifest(PATH, tag) for tag in self._tags()}
        client = self.s3.client()
        objects = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for listed in page.get("Contents", []):
                got = client.get_object(Bucket=self.bucket, Key=listed["Key"])
                objects[listed["Key"]] = (got["Body"].read(), got["Metadata"])
        release = repo.path / "build" / "receipts" / "release.json"
        return Snapshot(tags, objects, release.read_bytes() if release.exists() else b"")

    def _tags(self) -> list[str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.registry.port, timeout=10)
        connection.request("GET", f"/v2/{PATH}/tags/list",
                           headers={"User-Agent": "esp32tasks-test-fixture"})
        response = connection.getresponse()
        body = response.read()
        if response.status == 404:  # no such repository yet
            return []
        assert response.status == 200, (response.status, body)
        return sorted(json.loads(body).get("tags") or [])


@dataclass(frozen=True)
class Reference:
    snapshot: Snapshot
    #: seconds and requests of an uninterrupted release from scratch and from built
    seconds: dict[bool, float]
    requests: dict[bool, int]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, s3_server: Seaweed) -> Iterator[World]:
    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed (ci/setup installs it)")
    workdir = tmp_path_factory.mktemp("kill-trials")
    registry = RegistryServer(workdir / "registry")
    registry.start()
    registry_proxy = FaultProxy(registry.host)
    s3_proxy = FaultProxy(s3_server.endpoint.removeprefix("http://"))
    bucket = s3_server.bucket(new_bucket())
    try:
        unbuilt = workdir / "unbuilt" / "firmware"
        unbuilt.mkdir(parents=True)
        (unbuilt.parent / "home").mkdir()
        copy_example(unbuilt)
        template = Repo(unbuilt)
        template.git("init", "-q", "-b", "main")
        template.commit("example firmware")
        configure(template, registry_proxy.host)
        use_s3(template, s3_proxy.endpoint, bucket)
        built = workdir / "built" / "firmware"
        (built.parent / "home").mkdir(parents=True)
        shutil.copytree(unbuilt, built, symlinks=True)
        Repo(built, dict(ADMIN.env)).doit("index")  # build, tag, index: no server needed
        yield World(registry, registry_proxy, s3_server, s3_proxy, bucket, unbuilt, built,
                    workdir)
    finally:
        registry_proxy.close()
        s3_proxy.close()
        registry.kill()


@pytest.fixture(scope="module")
def reference(world: World) -> Reference:
    """One uninterrupted release from scratch and one from built: the same end state."""
    snapshots, seconds, requests = {}, {}, {}
    for scratch in (True, False):
        world.reset()
        repo = world.copy(scratch=scratch)
        run = doit_bounded(repo, "release", timeout=180)
        assert run.code == 0, run.output
        seconds[scratch], requests[scratch] = run.elapsed, world.requests()
        snapshots[scratch] = world.snapshot(repo)
    assert snapshots[True].tags
    assert snapshots[True].objects
    assert snapshots[True].release
    assert snapshots[True].differences(snapshots[False]) == []
    return Reference(snapshots[False], seconds, requests)


@dataclass(frozen=True)
class Plan:
    trial: int
    signal: signal.Signals
    scratch: bool
    delay: float | None
    at_request: int | None

    @staticmethod
    def draw(trial: int, reference: Reference) -> Plan:
        rng = random.Random(f"{SEED}:{trial}")  # noqa: S311  # a replayable draw, no secret
        sig = SIGNALS[trial % len(SIGNALS)]
        scratch = rng.random() < 0.25
        if (trial // len(SIGNALS)) % 2 == 0:
            return Plan(trial, sig, scratch, rng.uniform(0, reference.seconds[scratch]), None)
        return Plan(trial, sig, scratch, None, rng.randint(1, reference.requests[scratch]))

    def __str__(self) -> str:
        when = f"after {self.delay:.2f} s" if self.delay is not None \
            else f"at request {self.at_request}"
        start = "from scratch" if self.scratch else "built"
        return f"trial {self.trial} (KILL_TRIALS_SEED={SEED}): {self.signal.name} {when}, {start}"


def interrupted(world: World, repo: Repo, plan: Plan) -> tuple[Run, str]:
    """``doit release`` stopped as the plan says; its output, and how it stopped."""
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.path.parent / "home"), **repo.env}
    proc = subprocess.Popen([sys.executable, "-m", "doit", "release"], cwd=repo.path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    sent = threading.Event()

    def stop() -> None:
        if not sent.is_set() and proc.poll() is None:
            sent.set()
            with contextlib.suppress(ProcessLookupError):  # it had finished
                os.killpg(proc.pid, plan.signal)

    if plan.at_request is not None:
        lock, count = threading.Lock(), [0]

        def on_request(_: Seen) -> None:
            with lock:
                count[0] += 1
                if count[0] == plan.at_request:
                    stop()

        world.registry_proxy.on_request = world.s3_proxy.on_request = on_request
    try:
        if plan.delay is not None:
            try:
                proc.wait(timeout=plan.delay)
            except subprocess.TimeoutExpired:
                stop()
        try:
            out, err = proc.communicate(timeout=180 if not sent.is_set() else STOP_WITHIN)
            how = "stopped" if sent.is_set() else "finished first"
        except subprocess.TimeoutExpired:
            if not sent.is_set():
                raise
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            how = f"still running {STOP_WITHIN:.0f} s after {plan.signal.name}"
    finally:
        world.registry_proxy.on_request = world.s3_proxy.on_request = None
    return Run(proc.returncode, out, err), how


def test_kill_then_rerun_ends_as_an_uninterrupted_release(
        world: World, reference: Reference, trial: int) -> None:
    plan = Plan.draw(trial, reference)
    world.reset()
    repo = world.copy(scratch=plan.scratch)
    killed, how = interrupted(world, repo, plan)
    print(f"{plan}: {how}, exit {killed.code}, after {killed.executed}")  # shown with -rP
    try:
        assert not how.startswith("still running"), how
        assert "Traceback" not in killed.output or plan.signal == signal.SIGINT, \
            f"the stopped run printed a traceback:\n{killed.output}"
        rerun = doit_bounded(repo, "release", timeout=180)
        assert rerun.code == 0, f"the rerun failed (exit {rerun.code}):\n{rerun.output}"
        again = doit_bounded(repo, "release", timeout=60)
        assert again.code == 0, again.output
        assert Run(again.code, again.stdout, again.stderr).executed == [], again.output
        differences = world.snapshot(repo).differences(reference.snapshot)
        assert differences == [], "not the reference release: " + "; ".join(differences)
    except BaseException as exc:
        exc.add_note(f"{plan}; the stopped run ({how}, exit {killed.code}) printed:\n"
                     f"{killed.output[-3000:]}")
        raise
