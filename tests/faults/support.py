"""What every fault test checks: one clear line, no receipt for unproven work, convergence.

Shared by the modules of tests/faults/ (no test module imports another).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from esp32tasks.receipts import PushIndexReceipt, PushReceipt, UploadReceipt, read
from tests.servers.faults import Fault
from tests.servers.registry import RegistryServer
from tests.servers.s3 import Seaweed
from tests.support.registry_wire import INDEX_TAG, PATH
from tests.support.repo import GIT_ENV, TARGETS, Repo, Run
from tests.support.s3_release import MANIFEST, PREFIX, check_bucket

__all__ = ["TOO_SLOW", "VERDICTS", "Case", "Timed", "assert_converges", "assert_one_clear_error",
           "assert_receipts_proven", "doit_bounded", "error_lines", "receipt_of_task"]

#: What a "too slow" line says (a regular expression, any case), for either server.
TOO_SLOW = r"too slow|did not answer|no answer|did not finish|timed? ?out|deadline|within \d"


@dataclass(frozen=True)
class Case:
    """One fault class of a parametrized fault test: the fault, where it applies (as
    :meth:`FaultProxy.inject` takes it), and what the one error line must say."""

    fault: Fault
    says: str
    method: str = ".*"
    path: str = ".*"
    nth: int = 1
    times: int | None = None
    #: seconds the failing run may take
    within: float = 30
    #: ``[registry]`` keys the repository is configured with
    settings: dict[str, object] = field(default_factory=dict)


#: Verdicts about what a server holds: never the conclusion from a server that misbehaves.
VERDICTS = ("immutable", "already points at", "not an esp32tasks release manifest",
            "not an esptasks release manifest", "released from commit")


@dataclass
class Timed(Run):
    elapsed: float = 0.0
    timed_out: bool = False


def doit_bounded(repo: Repo, *args: str, timeout: float) -> Timed:
    """``doit`` in ``repo``, killed (its whole process group) after ``timeout`` seconds."""
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.path.parent / "home"), **repo.env}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=repo.path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        timed_out = True
    return Timed(proc.returncode, out, err, time.monotonic() - started, timed_out)


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def assert_one_clear_error(run: Run, *, names: str | Sequence[str], says: str) -> str:
    """Non-zero exit, no traceback, one ``error:`` line naming one of ``names`` and
    matching ``says`` (a regular expression, any case), and no verdict about the server's
    content. Returns the line."""
    shown = f"exit {run.code}; output:\n{run.output}"
    assert run.code != 0, shown
    assert "Traceback" not in run.output, shown
    errors = error_lines(run.output)
    assert len(errors) == 1, shown
    [line] = errors
    print(f"[{run.elapsed if isinstance(run, Timed) else 0:.1f} s] {line}")  # shown with -rP
    hosts = [names] if isinstance(names, str) else list(names)
    assert any(host in line for host in hosts), f"names none of {hosts}: {line}"
    assert re.search(says, line, re.IGNORECASE), f"does not say /{says}/: {line}"
    verdicts = [v for v in VERDICTS if v in line.lower()]
    assert not verdicts, f"a verdict ({verdicts}) about a misbehaving server: {line}"
    return line


def receipt_of_task(line: str) -> str | None:
    """The receipt file the task named in an ``error: <task>: ...`` line would write."""
    task = line.removeprefix("error: ").split(":", 2)
    name = task[0] if task[0] in ("push-index", "manifest") else ":".join(task[:2])
    kind, _, target = name.partition(":")
    return {"push": f"push-{target}.json", "upload": f"upload-{target}.json",
            "push-index": "push-index.json", "manifest": "release.json"}.get(kind)


def assert_receipts_proven(repo: Repo, *, line: str | None = None,
                           registry: RegistryServer | None = None,
                           s3: Seaweed | None = None, bucket: str = "") -> None:
    """Every publishing receipt that exists is true of the real server (asked directly,
    not through the proxy); the task an error ``line`` names left none."""
    receipts = repo.path / "build" / "receipts"
    if line is not None and (name := receipt_of_task(line)) is not None:
        assert not (receipts / name).exists(), f"{name} written for work that failed: {line}"
    for target in TARGETS:
        pushed = read(receipts / f"push-{target}.json", PushReceipt)
        if pushed is not None:
            assert registry is not None
            digest, _ = registry.manifest(PATH, pushed.tag)
            assert digest == pushed.digest, f"push-{target}.json: {pushed.tag} is {digest}"
        uploaded = read(receipts / f"upload-{target}.json", UploadReceipt)
        if uploaded is not None and uploaded.store.startswith("s3://"):
            assert s3 is not None
            client = s3.client()
            for stored in uploaded.objects:
                key = f"{PREFIX}/{stored.key}"
                head = client.head_object(Bucket=bucket, Key=key)
                assert head["Metadata"].get("sha256") == stored.sha256, \
                    f"upload-{target}.json: {key} does not hold {stored.sha256}"
    index = read(receipts / "push-index.json", PushIndexReceipt)
    if index is not None:
        assert registry is not None
        assert registry.manifest(PATH, INDEX_TAG)[0] == index.digest, "push-index.json"
    release = receipts / "release.json"
    if release.exists() and bucket:
        assert s3 is not None
        held = s3.client().get_object(Bucket=bucket, Key=MANIFEST)["Body"].read()
        assert held == release.read_bytes(), "release.json is not what the bucket holds"


def assert_converges(repo: Repo, *, registry: RegistryServer | None = None,
                     s3: Seaweed | None = None, bucket: str = "") -> Run:
    """A plain ``doit release`` succeeds, the next runs no task, and the servers hold the
    release: every tag and the index in the registry, every object in the bucket."""
    rerun = doit_bounded(repo, "release", timeout=120)
    assert rerun.code == 0, f"the rerun failed (exit {rerun.code}):\n{rerun.output}"
    again = doit_bounded(repo, "release", timeout=60)
    assert again.code == 0, again.output
    assert Run(again.code, again.stdout, again.stderr).executed == [], again.output
    assert_receipts_proven(repo, registry=registry, s3=s3, bucket=bucket)
    receipts = repo.path / "build" / "receipts"
    if registry is not None:
        for target in TARGETS:
            assert read(receipts / f"push-{target}.json", PushReceipt) is not None, target
        assert read(receipts / "push-index.json", PushIndexReceipt) is not None
    if s3 is not None:
        check_bucket(s3, repo, bucket)
    return rerun
