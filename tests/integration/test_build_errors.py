"""A failed build says what and where in one message, and leaves nothing a rerun would trust."""

from __future__ import annotations

import json

import pytest

from tests.support.repo import Repo

pytestmark = pytest.mark.integration

BUILD = ('"python3", "tools/build.py", "--target", "{target}", "--chip", "{chip}", '
         '"--build-dir", "{build_dir}", "--version", "{version}"')


def set_command(repo: Repo, argv: str, only_c3: bool = True) -> None:
    text = repo.read("targets.toml")
    start = text.index("command = [")
    end = text.index("]", start) + 1
    text = text[:start] + f"command = [{argv}]" + text[end:]
    if only_c3:  # one target keeps the failing runs short
        text = text[:text.index('[[targets]]\nname = "esp32c6"')]
    repo.write("targets.toml", text)
    repo.commit("change the build command")


def assert_nothing_trusted(repo: Repo, target: str = "esp32c3") -> None:
    receipts = repo.path / "build" / "receipts"
    for kind in ("build", "app", "image", "upload"):
        assert not (receipts / f"{kind}-{target}.json").exists(), kind
    index = repo.path / "build/oci/index.json"
    if index.exists():
        refs = [d["annotations"]["org.opencontainers.image.ref.name"]
                for d in json.loads(index.read_text())["manifests"]]
        assert not [r for r in refs if r.startswith(target)]


def failure(repo: Repo) -> str:
    run = repo.doit("release", check=False)
    assert run.code != 0
    assert "Traceback" not in run.output
    return run.stderr


def test_command_not_found(repo: Repo) -> None:
    set_command(repo, '"no-such-build-tool", "{build_dir}"')
    assert failure(repo) == (
        "error: build:esp32c3: command not found: 'no-such-build-tool'; install it or fix the "
        "command in targets.toml ([builder] command)\n")
    assert_nothing_trusted(repo)


def test_build_exits_non_zero(repo: Repo) -> None:
    set_command(repo, '"python3", "-c", "import sys; print(\'compiling main.c\'); '
                      'sys.exit(\'main.c:3: error: boom\')"')
    assert failure(repo) == (
        "error: build:esp32c3: 'python3' exited with code 1; last lines of "
        "build/esp32c3/build.log:\n"
        "    $ python3 -c import sys; print('compiling main.c'); "
        "sys.exit('main.c:3: error: boom')\n"
        "    compiling main.c\n"
        "    main.c:3: error: boom\n")
    assert_nothing_trusted(repo)


def test_expected_output_missing(repo: Repo) -> None:
    repo.write("examples/hello/tools/lose_app.py",
               "import os, subprocess, sys\n"
               "subprocess.run([sys.executable, 'tools/build.py', *sys.argv[1:]], check=True)\n"
               "os.remove(os.path.join(sys.argv[sys.argv.index('--build-dir') + 1],"
               " 'hello.bin'))\n")
    set_command(repo, BUILD.replace("tools/build.py", "tools/lose_app.py"))
    assert failure(repo) == (
        "error: build:esp32c3: expected output missing: build/esp32c3/hello.bin (app); the "
        "build finished but did not write it (see build/esp32c3/build.log)\n")
    assert_nothing_trusted(repo)


def test_contract_file_missing(repo: Repo) -> None:
    set_command(repo, '"python3", "-c", "print(\'no outputs\')"')
    assert failure(repo) == (
        "error: build:esp32c3: expected output missing: build/esp32c3/flasher_args.json; the "
        "build must write it (ESP-IDF's output contract; see README.md, 'Builders')\n")
    assert_nothing_trusted(repo)


def test_image_for_another_chip(repo: Repo) -> None:
    text = repo.read("targets.toml")
    repo.write("targets.toml", text.replace('"--chip", "{chip}"', '"--chip", "esp32c3"'))
    repo.commit("every target built as esp32c3")
    stderr = failure(repo)
    assert "error: build:esp32c6: build/esp32c6/hello.bin is an image for esp32c3, but the " \
           "target's chip is esp32c6; build it for esp32c6 (IDF_TARGET)\n" in stderr
    assert_nothing_trusted(repo, "esp32c6")


def test_app_descriptor_version_differs(repo: Repo) -> None:
    set_command(repo, BUILD.replace('"{version}"', '"0.9.0"'))
    assert failure(repo) == (
        "error: build:esp32c3: build/esp32c3/hello.bin: the app descriptor's version is "
        "'0.9.0', but targets.toml project.version is '1.0.0'; build with FIRMWARE_VERSION (or "
        "set PROJECT_VER) so they agree\n")
    assert_nothing_trusted(repo)


def test_corrupt_image(repo: Repo) -> None:
    repo.write("examples/hello/tools/corrupt.py",
               "import os, subprocess, sys\n"
               "subprocess.run([sys.executable, 'tools/build.py', *sys.argv[1:]], check=True)\n"
               "p = os.path.join(sys.argv[sys.argv.index('--build-dir') + 1], 'hello.bin')\n"
               "data = bytearray(open(p, 'rb').read())\n"
               "data[200] ^= 0xFF\n"
               "open(p, 'wb').write(data)\n")
    set_command(repo, BUILD.replace("tools/build.py", "tools/corrupt.py"))
    stderr = failure(repo)
    assert stderr.startswith("error: build:esp32c3: build/esp32c3/hello.bin has a bad ")
    assert stderr.endswith("; rebuild it\n")
    assert_nothing_trusted(repo)


def test_failed_build_then_fixed_rerun(repo: Repo) -> None:
    """A failure after a good release removes the old receipts; fixing it rebuilds."""
    repo.doit("release")
    good = repo.read("targets.toml")
    set_command(repo, '"python3", "-c", "raise SystemExit(3)"')
    failure(repo)
    # the build's receipts are gone; the last good image stays described until replaced
    assert not (repo.path / "build/receipts/build-esp32c3.json").exists()
    assert not (repo.path / "build/receipts/app-esp32c3.json").exists()
    repo.write("targets.toml", good)
    repo.commit("fixed")
    run = repo.doit("release")
    assert "build:esp32c3" in run.executed
    assert repo.doit("release").executed == []


def test_secrets_are_not_passed_to_builds(repo: Repo) -> None:
    repo.write("examples/hello/tools/env.py",
               "import json, os, subprocess, sys\n"
               "d = sys.argv[sys.argv.index('--build-dir') + 1]\n"
               "subprocess.run([sys.executable, 'tools/build.py', *sys.argv[1:]], check=True)\n"
               "open(os.path.join(d, 'env.json'), 'w').write(json.dumps(dict(os.environ)))\n")
    set_command(repo, BUILD.replace("tools/build.py", "tools/env.py"))
    repo.env.update(ESP32TASKS_REGISTRY_PASSWORD="hunter2", AWS_SECRET_ACCESS_KEY="s3cr3t",
                    UNRELATED="kept")
    repo.doit("release")
    env = json.loads(repo.read("build/esp32c3/env.json"))
    assert "ESP32TASKS_REGISTRY_PASSWORD" not in env
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert env["UNRELATED"] == "kept"
    assert (env["FIRMWARE_VERSION"], env["DEVICE_TYPE"], env["APPLICATION_TYPE"]) == \
        ("1.0.0", "esp32c3", "hello")
