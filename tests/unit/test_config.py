"""targets.toml parsing: every bad input gets its exact one-line message."""

from __future__ import annotations

from pathlib import Path

import pytest

from esp32tasks.config import KNOWN_CHIPS, Release, load, parse
from esp32tasks.errors import ConfigError

GOOD = """\
[project]
name = "hello"
app_type = "hello"
version = "1.0.0"
app_dir = "app"

[builder]
kind = "command"
command = ["python3", "build.py", "{build_dir}"]

[[targets]]
name = "esp32c3"
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    return tmp_path


def parse_in(root: Path, text: str) -> Release:
    return parse(text, root / "targets.toml")


def error(root: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_in(root, text)
    return str(info.value)


def test_good_config(root: Path) -> None:
    release = parse_in(root, GOOD + '[[targets]]\nname = "esp32s3r8"\nfiles = ["sdk.r8"]\n')
    assert release.project.version == "1.0.0"
    assert [t.name for t in release.targets] == ["esp32c3", "esp32s3r8"]
    # the PSRAM suffix is stripped to find the chip
    assert [t.chip for t in release.targets] == ["esp32c3", "esp32s3"]
    assert release.targets[1].own_files == ("sdk.r8",)
    assert release.registry is None
    assert release.store.url == "build/store"
    assert not release.store.is_s3


def test_registry_and_store_tables(root: Path) -> None:
    release = parse_in(root, GOOD + """
[registry]
repository = "harbor.example.com:8443/cloud-iot/hello"
ca_bundle = "ca.pem"
timeout = 5

[store]
url = "s3://firmware-bucket/nbfc-assets/github/iot"
endpoint_url = "http://127.0.0.1:8333"
""")
    assert release.registry is not None
    assert release.registry.host == "harbor.example.com:8443"
    assert release.registry.path == "cloud-iot/hello"
    assert release.registry.timeout == 5.0
    assert not release.registry.insecure
    assert release.store.is_s3


@pytest.mark.parametrize(("text", "message"), [
    pytest.param('[project\nname = "x"', "targets.toml: invalid TOML: Expected ']' at the end "
                 "of a table declaration (at line 1, column 9)", id="invalid-toml"),
    pytest.param(GOOD.replace('app_type = "hello"', 'app_typ = "hello"'),
                 "targets.toml: project.app_typ: unknown key; did you mean 'app_type'?\n"
                 "targets.toml: project.app_type: missing; add `app_type = ...` to [project]",
                 id="unknown-key-did-you-mean"),
    pytest.param(GOOD + "[regstry]\n", "targets.toml: regstry: unknown key; did you mean "
                 "'registry'?", id="unknown-table"),
    pytest.param(GOOD + '[[targets]]\nname = "esp32s9"\n', "targets.toml: targets[1].name: "
                 "unknown chip 'esp32s9' (known: " + ", ".join(KNOWN_CHIPS) + "); did you mean "
                 "'esp32s3'?", id="unknown-chip"),
    pytest.param(GOOD + '[[targets]]\nname = "board-a"\nchip = "esp33"\n',
                 "targets.toml: targets[1].chip: unknown chip 'esp33' (known: "
                 + ", ".join(KNOWN_CHIPS) + "); did you mean 'esp32s3'?", id="unknown-chip-key"),
    pytest.param(GOOD + '[[targets]]\nname = "esp32c3"\n', "targets.toml: targets[1].name: "
                 "duplicate target 'esp32c3' (also targets[0]); give each target a unique name",
                 id="duplicate-target"),
    pytest.param(GOOD.replace('version = "1.0.0"', 'version = "1.0.0+build"'),
                 "targets.toml: project.version: '1.0.0+build' cannot be part of an OCI tag; "
                 "use letters, digits, '.', '_' and '-' (e.g. 1.4.0-rc.1)", id="version-not-tag"),
    pytest.param(GOOD.replace('version = "1.0.0"', f'version = "{"1" * 32}"'),
                 f"targets.toml: project.version: '{'1' * 32}' is 32 bytes; "
                 "esp_app_desc_t.version holds at most 31", id="version-too-long"),
    pytest.param(GOOD.replace('app_dir = "app"', 'app_dir = "missing"'),
                 "targets.toml: project.app_dir: directory 'missing' does not exist; create it "
                 "or fix the path (relative to the repository root)", id="missing-app-dir"),
    pytest.param(GOOD.replace('app_dir = "app"', 'app_dir = "../elsewhere"'),
                 "targets.toml: project.app_dir: '../elsewhere' must be a relative path inside "
                 "the repository", id="app-dir-outside"),
    pytest.param(GOOD.replace('version = "1.0.0"', "version = 1"),
                 "targets.toml: project.version: expected str, got int", id="wrong-type"),
    pytest.param(GOOD.replace('kind = "command"', 'kind = "make"'),
                 "targets.toml: builder.kind: unknown builder 'make'; use \"idf\" or "
                 "\"command\"", id="unknown-builder"),
    pytest.param(GOOD.replace('"{build_dir}"', '"{builddir}"'),
                 "targets.toml: builder.command: '{builddir}': bad placeholder 'builddir'; "
                 "known placeholders: {target}, {chip}, {build_dir}, {version}",
                 id="bad-placeholder"),
    pytest.param(GOOD.replace('[[targets]]\nname = "esp32c3"\n', ""),
                 "targets.toml: targets: missing; add at least one [[targets]] with name = "
                 "\"esp32c3\"", id="no-targets"),
    pytest.param(GOOD + '[registry]\nrepository = "Harbor/Cloud"\n',
                 "targets.toml: registry.repository: 'Harbor/Cloud' is not host[:port]/path "
                 "with a lower-case path (e.g. harbor.example.com/cloud-iot/hello)",
                 id="bad-repository"),
    pytest.param(GOOD + '[store]\nurl = "s3://ab/x"\n',
                 "targets.toml: store.url: 'ab' is not a valid S3 bucket name (3 to 63 "
                 "lower-case letters, digits, '.' and '-')", id="bad-bucket"),
    pytest.param(GOOD + '[store]\nurl = "gs://bucket/x"\n',
                 "targets.toml: store.url: 'gs://bucket/x': only s3:// URLs and local "
                 "directories are supported", id="bad-store-scheme"),
    pytest.param(GOOD + '[[targets]]\nname = "esp32c6"\nfiles = ["/etc/passwd"]\n',
                 "targets.toml: targets[1].files: '/etc/passwd' must be a relative path inside "
                 "the app directory", id="absolute-target-file"),
])
def test_bad_input_message(root: Path, text: str, message: str) -> None:
    assert error(root, text) == message


@pytest.mark.parametrize("name", ["../x", "/abs", "has space", "Esp32C3", "", "-lead", "a/b"])
def test_unsafe_target_names(root: Path, name: str) -> None:
    text = GOOD + f'[[targets]]\nname = "{name}"\nchip = "esp32c3"\n'
    assert error(root, text) == (
        f"targets.toml: targets[1].name: '{name}' is not a safe path and tag component; use "
        "lower-case letters, digits, '.', '_' and '-' (e.g. esp32s3r8)")


def test_composed_tag_over_128_characters(root: Path) -> None:
    name = "esp32c3-" + "x" * 100
    text = GOOD + f'[[targets]]\nname = "{name}"\nchip = "esp32c3"\n'
    assert error(root, text) == (
        f"targets.toml: targets[1].name: the tag '{name}-hello-1.0.0-<sha7>-dirty' can reach "
        "134 characters, over the 128 OCI allows; shorten the target name, app_type or version")


def test_every_problem_in_one_pass(root: Path) -> None:
    text = GOOD.replace('version = "1.0.0"', 'version = "1 0"') + (
        '[[targets]]\nname = "esp32c3"\n[[targets]]\nname = "esp32x"\n')
    assert error(root, text).splitlines() == [
        "targets.toml: project.version: '1 0' cannot be part of an OCI tag; use letters, "
        "digits, '.', '_' and '-' (e.g. 1.4.0-rc.1)",
        "targets.toml: targets[1].name: duplicate target 'esp32c3' (also targets[0]); give "
        "each target a unique name",
        "targets.toml: targets[2].name: unknown chip 'esp32x' (known: "
        + ", ".join(KNOWN_CHIPS) + "); did you mean 'esp32'?",
    ]


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "targets.toml")
    assert str(info.value) == (f"{tmp_path / 'targets.toml'}: not found; create it (see "
                               "README.md) or run doit at the repository root")


def test_bundled_targets_toml_is_valid() -> None:
    release = load(Path(__file__).resolve().parents[2] / "targets.toml")
    assert {t.chip for t in release.targets} >= {"esp32c3", "esp32c6", "esp32h2"}
