"""Upload time of the example release against ``aws s3 sync`` of the same files, same server.

awscli pins an older botocore than ours, so it lives in its own venv: set BENCH_AWSCLI
to its ``aws`` (default /tmp/awscli-venv/bin/aws, made by
``python3 -m venv /tmp/awscli-venv && /tmp/awscli-venv/bin/pip install awscli``); without
it this test is skipped. It checks that both put the same bytes in the bucket and prints
the wall times (each a whole process run, start-up included; median of 3).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import pytest

from esp32tasks.receipts import BuildReceipt
from tests.servers.s3 import Seaweed
from tests.support.repo import TARGETS, Repo, receipt
from tests.support.s3_release import MANIFEST, PREFIX, RELEASE, check_bucket, new_bucket, use_s3

pytestmark = pytest.mark.integration

ROUNDS = 3
DOIT = (sys.executable, "-m", "doit")


def aws_binary() -> str:
    aws = os.environ.get("BENCH_AWSCLI", "/tmp/awscli-venv/bin/aws")
    if not Path(aws).is_file():
        pytest.skip(f"no awscli at {aws}; set BENCH_AWSCLI (see this module's docstring)")
    return aws


def local_store(repo: Repo, dest: Path) -> Path:
    """The release as a directory with the S3 key layout: what `aws s3 sync` uploads."""
    for target in TARGETS:
        for artifact in receipt(repo, f"build-{target}", BuildReceipt).artifacts:
            path = dest / RELEASE / target / "artifacts" / artifact.name
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(repo.path / artifact.path, path)
    shutil.copyfile(repo.path / "build/receipts/release.json", dest / MANIFEST)
    return dest


def timed(repo: Repo, *argv: str) -> float:
    started = time.perf_counter()
    repo.run(*argv)
    return time.perf_counter() - started


def test_upload_time_against_aws_s3_sync(repo: Repo, s3_server: Seaweed,
                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) \
        -> None:
    aws = aws_binary()
    ours_cold, ours_again, aws_cold, aws_again = [], [], [], []
    use_s3(repo, s3_server.endpoint, s3_server.bucket(new_bucket()))
    repo.doit("build")  # not timed: compiling is not uploading
    store = None
    for _ in range(ROUNDS):
        bucket = s3_server.bucket(new_bucket())
        repo.write("targets.toml", re.sub(r'(?m)^url = "s3://.*"$', f'url = "s3://{bucket}/{PREFIX}"',
                                          repo.read("targets.toml")))
        repo.commit("a fresh bucket")
        ours_cold.append(timed(repo, *DOIT, "release"))
        ours_again.append(timed(repo, *DOIT, "release"))
        check_bucket(s3_server, repo, bucket)

        store = store or local_store(repo, tmp_path / "store")
        synced = s3_server.bucket(new_bucket())
        argv = (aws, "s3", "sync", str(store), f"s3://{synced}/{PREFIX}", "--only-show-errors",
                "--endpoint-url", s3_server.endpoint)
        aws_cold.append(timed(repo, *argv))
        aws_again.append(timed(repo, *argv))
        s3 = s3_server.client()
        for path in store.rglob("*"):
            if path.is_file():
                key = path.relative_to(store).as_posix()
                if key != MANIFEST:  # ours differs per round: a new commit each time
                    assert s3.get_object(Bucket=synced, Key=f"{PREFIX}/{key}")["Body"].read() \
                        == path.read_bytes()

    files = sum(1 for p in store.rglob("*") if p.is_file()) if store else 0
    with capsys.disabled():
        print(f"\nS3 upload of the example release ({files} objects), median of {ROUNDS}, "
              f"wall time per process run:\n"
              f"  doit release (upload:* + manifest): cold {statistics.median(ours_cold):.2f} s,"
              f" nothing changed {statistics.median(ours_again):.2f} s\n"
              f"  aws s3 sync:                        cold {statistics.median(aws_cold):.2f} s,"
              f" nothing changed {statistics.median(aws_again):.2f} s")
