"""The summary at the end of `doit release`: on the console, in build/release-summary.json
and in GitHub Actions' job summary; a no-op says "nothing changed" and writes nothing."""

from __future__ import annotations

import json

import pytest

from esp32tasks.receipts import AppReceipt, ImageReceipt, IndexReceipt
from tests.servers.registry import RegistryServer, configure
from tests.support.repo import TARGETS, Repo, receipt

pytestmark = pytest.mark.integration

APP = "examples/hello"


def test_the_summary_of_a_release_then_of_a_one_target_change_then_of_a_no_op(
        repo: Repo, registry: RegistryServer) -> None:
    repository = configure(repo, registry)
    step_summary = repo.path.parent / "step-summary.md"
    repo.env["GITHUB_STEP_SUMMARY"] = str(step_summary)
    run = repo.doit("release", "channel=beta")
    index = receipt(repo, "index", IndexReceipt)
    facts = json.loads((repo.path / "build/release-summary.json").read_text())
    assert facts["format"] == "esp32tasks.summary/v1"
    assert facts["index"] == {"tag": "hello-1.0.0", "digest": index.index.digest,
                              "reference": f"{repository}:hello-1.0.0"}
    assert facts["channels"] == ["beta"]
    assert facts["store"] == "build/store/hello/hello-1.0.0/"
    assert (facts["version"], facts["snapshot"], facts["dirty"]) == ("1.0.0", False, False)
    for row, target in zip(facts["targets"], TARGETS, strict=True):
        image = receipt(repo, f"image-{target}", ImageReceipt)
        app = receipt(repo, f"app-{target}", AppReceipt)
        assert row == {"target": target, "tag": image.tag, "digest": image.manifest.digest,
                       "app_size": app.app.size, "changed": True, "sent": row["sent"]}
        # at least the image's blobs and manifest went to the registry, and the app's
        # bytes to the store
        assert row["sent"] > image.layer.size + image.config.size + app.app.size
        line = next(line for line in run.stdout.splitlines() if line.startswith(target))
        assert line.split()[:3] == [target, image.tag, image.manifest.digest[7:19]]
        assert line.split()[5] == "changed"
    # and the index's PUT, which is no target's
    assert facts["sent"] > sum(row["sent"] for row in facts["targets"])
    assert f"index: {repository}:hello-1.0.0 ({index.index.digest[7:19]})" in run.stdout
    assert "channels moved: beta" in run.stdout
    markdown = step_summary.read_text()
    assert markdown.startswith("### hello-1.0.0\n\n| target | tag | digest | app | firmware |")
    assert f"| esp32c3 | {facts['targets'][0]['tag']} |" in markdown

    # one target changes, at a new version: that one is "changed", the others re-tagged
    repo.edit(f"{APP}/sdkconfig.defaults.esp32c6", '"Hello from', '"Hello again from')
    repo.commit("esp32c6 greets differently")
    repo.doit("release", "version=1.0.1")
    rows = {r["target"]: r for r in
            json.loads((repo.path / "build/release-summary.json").read_text())["targets"]}
    # the version is in every app: every target is rebuilt, and each image is new
    assert all(r["changed"] for r in rows.values())

    repo.doit("release", "version=1.0.1", "channel=beta")
    # nothing changed: one line, and nothing written
    written = (repo.path / "build/release-summary.json").read_bytes()
    markdown = step_summary.read_text()
    noop = repo.doit("release", "version=1.0.1", "channel=beta")
    assert noop.ran == []
    index = receipt(repo, "index", IndexReceipt)
    assert noop.stdout.splitlines()[-1] == \
        f"nothing changed: {repository}:hello-1.0.1 ({index.index.digest[7:19]})"
    assert (repo.path / "build/release-summary.json").read_bytes() == written
    assert step_summary.read_text() == markdown


def test_a_target_whose_firmware_did_not_change_says_same(repo: Repo) -> None:
    repo.doit("release")
    repo.write("NOTES.md", "a commit that changes no firmware\n")
    repo.commit("notes")
    run = repo.doit("release")
    facts = json.loads((repo.path / "build/release-summary.json").read_text())
    assert [r["changed"] for r in facts["targets"]] == [False] * len(TARGETS)
    assert all(" same " in line for line in run.stdout.splitlines()
               if line.startswith(TARGETS))
