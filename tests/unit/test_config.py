"""targets.toml parsing and our overrides: every bad input gets its exact one-line message."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from esp32tasks.config import (
    CLI_PARAMETERS,
    DEFAULT_STORE,
    KNOWN_CHIPS,
    VARIABLES,
    Login,
    RegistryConfig,
    Release,
    apply_overrides,
    load,
    parse,
    parse_bool,
    resolve_version,
    substitute,
)
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
    pytest.param('[project\nname = "x"', "targets.toml:1:9: invalid TOML: expected ']' at the "
                 "end of a table declaration; fix the syntax there (https://toml.io)",
                 id="invalid-toml"),
    pytest.param('[project]\nname = \n', "targets.toml:2:8: invalid TOML: invalid value; fix "
                 "the syntax there (https://toml.io)", id="invalid-toml-value"),
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
                 "targets.toml: project.version: '1.0.0+build' has build metadata ('+'), "
                 "which an OCI tag cannot hold; drop it or make it a pre-release (e.g. "
                 "1.4.0-rc.1)", id="version-build-metadata"),
    pytest.param(GOOD.replace('version = "1.0.0"', 'version = "1.0"'),
                 "targets.toml: project.version: '1.0' is not a version: use semver "
                 "MAJOR.MINOR.PATCH[-PRERELEASE] (e.g. 1.4.0 or 1.4.0-rc.1) or \"git\" (git "
                 "describe --tags --match 'v[0-9]*')", id="version-not-semver"),
    pytest.param(GOOD.replace('version = "1.0.0"', 'version = "1.0.0-rc.01"'),
                 "targets.toml: project.version: '1.0.0-rc.01' is not a version: use semver "
                 "MAJOR.MINOR.PATCH[-PRERELEASE] (e.g. 1.4.0 or 1.4.0-rc.1) or \"git\" (git "
                 "describe --tags --match 'v[0-9]*')", id="version-leading-zero"),
    pytest.param(GOOD.replace('version = "1.0.0"', f'version = "1.0.0-{"a" * 26}"'),
                 f"targets.toml: project.version: '1.0.0-{'a' * 26}' is 32 bytes; "
                 "esp_app_desc_t.version holds at most 31", id="version-too-long"),
    pytest.param(GOOD.replace('version = "1.0.0"', 'version = "1.0.0"\nchannels = ["Beta"]'),
                 "targets.toml: project.channels: 'Beta' is not a channel name: a lower-case "
                 "letter, then lower-case letters and digits (e.g. stable, beta, dev)",
                 id="channel-name"),
    pytest.param(GOOD.replace('version = "1.0.0"', 'version = "1.0.0"\nchannels = ["dirty"]'),
                 "targets.toml: project.channels: 'dirty' is reserved (it marks an uncommitted "
                 "tree's names); pick another", id="channel-reserved"),
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


def test_every_problem_in_one_pass(root: Path) -> None:
    text = GOOD.replace('version = "1.0.0"', 'version = "1 0"') + (
        '[[targets]]\nname = "esp32c3"\n[[targets]]\nname = "esp32x"\n')
    assert error(root, text).splitlines() == [
        "targets.toml: project.version: '1 0' is not a version: use semver "
        "MAJOR.MINOR.PATCH[-PRERELEASE] (e.g. 1.4.0 or 1.4.0-rc.1) or \"git\" (git describe "
        "--tags --match 'v[0-9]*')",
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
    release = load(Path(__file__).resolve().parents[2] / "targets.toml", environ={})
    assert {t.chip for t in release.targets} >= {"esp32c3", "esp32c6", "esp32h2"}


# -- overrides: ESP32TASKS_* variables and doit's command line, read once ------------------

HOST = "registry.test:5000"
WITH_REGISTRY = GOOD + f"""
[registry]
repository = "{HOST}/cloud-iot/hello"
ca_bundle = "ca.pem"
timeout = 5
"""
HOME = {"HOME": "/home/u"}
DOCKER_CONFIG = "/home/u/.docker/config.json"


def overridden(root: Path, environ: dict[str, str], cli: dict[str, str | None] | None = None,
               text: str = WITH_REGISTRY) -> Release:
    return apply_overrides(parse_in(root, text), {**HOME, **environ}, cli or {})


def override_error(root: Path, environ: dict[str, str], cli: dict[str, str | None] | None = None,
                   text: str = WITH_REGISTRY) -> str:
    with pytest.raises(ConfigError) as info:
        overridden(root, environ, cli, text)
    return str(info.value)


def test_no_registry_anywhere(root: Path) -> None:
    release = overridden(root, {}, text=GOOD)
    assert release.registry is None
    assert release == parse_in(root, GOOD)


def test_file_alone_is_unchanged_but_for_where_docker_keeps_its_config(root: Path) -> None:
    release = overridden(root, {})
    assert release.registry == RegistryConfig(repository=f"{HOST}/cloud-iot/hello",
                                              ca_bundle="ca.pem", timeout=5.0,
                                              docker_config=DOCKER_CONFIG)
    assert release.registry.source == "[registry] repository in targets.toml"
    assert replace(release, registry=None) == replace(parse_in(root, WITH_REGISTRY),
                                                      registry=None)


def test_env_registry_replaces_only_the_repository(root: Path) -> None:
    release = overridden(root, {"ESP32TASKS_REGISTRY": "ci.test/other/hello"})
    assert release.registry == RegistryConfig(repository="ci.test/other/hello",
                                              source="ESP32TASKS_REGISTRY", ca_bundle="ca.pem",
                                              timeout=5.0, docker_config=DOCKER_CONFIG)


def test_env_registry_without_a_file_table(root: Path) -> None:
    release = overridden(root, {"ESP32TASKS_REGISTRY": "ci.test:5000/x",
                                "ESP32TASKS_REGISTRY_INSECURE": "1"}, text=GOOD)
    assert release.registry == RegistryConfig(repository="ci.test:5000/x",
                                              source="ESP32TASKS_REGISTRY", insecure=True,
                                              docker_config=DOCKER_CONFIG)


def test_command_line_beats_env(root: Path) -> None:
    release = overridden(root, {"ESP32TASKS_REGISTRY": "env.test/x"},
                         {"registry": "cli.test/y"})
    assert release.registry is not None
    assert release.registry.repository == "cli.test/y"
    assert release.registry.source == "doit release registry=…"


def test_an_empty_command_line_parameter_is_unset(root: Path) -> None:
    release = overridden(root, {"ESP32TASKS_REGISTRY": "env.test/x"}, {"registry": ""})
    assert release.registry is not None
    assert release.registry.repository == "env.test/x"
    assert overridden(root, {}, {"registry": None}).registry == overridden(root, {}).registry


@pytest.mark.parametrize(("name", "key"), [("ESP32TASKS_ALLOW_DIRTY", "allow_dirty"),
                                           ("ESP32TASKS_FORCE", "force"),
                                           ("ESP32TASKS_REGISTRY_INSECURE", "insecure")])
@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("0", False),
                                                 ("", False)])
def test_flags(root: Path, name: str, key: str, value: str, expected: bool) -> None:
    got = overridden(root, {name: value}).registry
    assert getattr(got, key) is expected


@pytest.mark.parametrize(("name", "key"), [("ESP32TASKS_ALLOW_DIRTY", "allow_dirty"),
                                           ("ESP32TASKS_FORCE", "force"),
                                           ("ESP32TASKS_REGISTRY_INSECURE", "insecure")])
def test_flags_override_the_file_both_ways(root: Path, name: str, key: str) -> None:
    text = WITH_REGISTRY + f"{key} = true\n"
    assert getattr(overridden(root, {}, text=text).registry, key) is True
    assert getattr(overridden(root, {name: "0"}, text=text).registry, key) is False
    assert getattr(overridden(root, {name: ""}, text=text).registry, key) is True


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("true", True), ("YES", True), ("on", True),
    ("", False), ("0", False), ("no", False), ("false", False)])
def test_force_reaches_the_store_with_or_without_a_registry(root: Path, value: str,
                                                            expected: bool) -> None:
    assert overridden(root, {"ESP32TASKS_FORCE": value}, text=GOOD).store.force is expected
    assert overridden(root, {"ESP32TASKS_FORCE": value}).store.force is expected
    assert overridden(root, {}, text=GOOD).store.force is False


def test_bad_flag_is_a_config_error(root: Path) -> None:
    assert override_error(root, {"ESP32TASKS_FORCE": "yes please"}) == (
        "ESP32TASKS_FORCE='yes please': not a boolean; use 1, true, yes or on (or 0, false, no "
        "or off)")


def test_every_bad_override_in_one_pass(root: Path) -> None:
    assert override_error(root, {"ESP32TASKS_FORCE": "2", "ESP32TASKS_ALLOW_DIRTY": "maybe",
                                 "ESP32TASKS_REGISTRY": "Bad/Path",
                                 "ESP32TASKS_REGISTRY_USER": "u"}).splitlines() == [
        "ESP32TASKS_FORCE='2': not a boolean; use 1, true, yes or on (or 0, false, no or off)",
        "ESP32TASKS_ALLOW_DIRTY='maybe': not a boolean; use 1, true, yes or on (or 0, false, "
        "no or off)",
        "ESP32TASKS_REGISTRY=Bad/Path: not host[:port]/path with a lower-case path (e.g. "
        "harbor.example.com/cloud-iot/hello)",
        "ESP32TASKS_REGISTRY_PASSWORD is not set; set both ESP32TASKS_REGISTRY_USER and "
        "ESP32TASKS_REGISTRY_PASSWORD, or neither to use the docker config",
    ]


def test_ca_bundle_from_env(root: Path) -> None:
    got = overridden(root, {"ESP32TASKS_REGISTRY_CA_BUNDLE": "/etc/ssl/corp.pem"}).registry
    assert got is not None
    assert got.ca_bundle == "/etc/ssl/corp.pem"


@pytest.mark.parametrize("bad", ["no-path", "Upper.test/Path", "host/with space", "/x"])
def test_bad_override_names_the_variable(root: Path, bad: str) -> None:
    message = ("not host[:port]/path with a lower-case path (e.g. "
               "harbor.example.com/cloud-iot/hello)")
    assert override_error(root, {"ESP32TASKS_REGISTRY": bad}) == (
        f"ESP32TASKS_REGISTRY={bad}: {message}")
    assert override_error(root, {}, {"registry": bad}) == f"registry={bad}: {message}"


def test_login_from_our_variables(root: Path) -> None:
    got = overridden(root, {"ESP32TASKS_REGISTRY_USER": "u",
                            "ESP32TASKS_REGISTRY_PASSWORD": "hunter2"}).registry
    assert got is not None
    assert got.login == Login("u", "hunter2")
    assert "hunter2" not in repr(got)
    assert overridden(root, {}).registry.login is None  # type: ignore[union-attr]


@pytest.mark.parametrize(("present", "missing"), [
    ("ESP32TASKS_REGISTRY_USER", "ESP32TASKS_REGISTRY_PASSWORD"),
    ("ESP32TASKS_REGISTRY_PASSWORD", "ESP32TASKS_REGISTRY_USER")])
def test_half_the_login_is_an_error(root: Path, present: str, missing: str) -> None:
    assert override_error(root, {present: "x"}) == (
        f"{missing} is not set; set both ESP32TASKS_REGISTRY_USER and "
        "ESP32TASKS_REGISTRY_PASSWORD, or neither to use the docker config")


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "targets.toml").write_bytes("\ufeff".encode() + GOOD.encode())
    release = load(tmp_path / "targets.toml", {})
    assert release.project.name == "hello"


def test_targets_toml_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "targets.toml").mkdir()
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "targets.toml", {})
    assert str(info.value) == (
        f"{tmp_path / 'targets.toml'}: is a directory, not a file; esp32tasks reads the release "
        "from the file targets.toml at the repository root")


def test_credentials_without_a_registry_are_nobodys_business(root: Path) -> None:
    """Half a login stops only a release that has a registry to send it to."""
    release = overridden(root, {"ESP32TASKS_REGISTRY_PASSWORD": "hunter2"}, text=GOOD)
    assert release.registry is None


def test_docker_config_directory_wins_over_home(root: Path) -> None:
    got = overridden(root, {"DOCKER_CONFIG": "/etc/docker-ci"}).registry
    assert got is not None
    assert got.docker_config == "/etc/docker-ci/config.json"


def test_load_applies_the_overrides_it_is_given(root: Path) -> None:
    (root / "targets.toml").write_text(WITH_REGISTRY)
    release = load(root / "targets.toml", {**HOME, "ESP32TASKS_FORCE": "on"},
                   {"registry": "cli.test/y"})
    assert release.store.force is True
    assert release.registry is not None
    assert (release.registry.repository, release.registry.force) == ("cli.test/y", True)


def test_every_variable_is_listed_once() -> None:
    names = list(VARIABLES)
    assert len(names) == len(set(names))
    assert all(name.startswith("ESP32TASKS_") for name in names)
    assert {"ESP32TASKS_REGISTRY", "ESP32TASKS_REGISTRY_INSECURE",
            "ESP32TASKS_REGISTRY_CA_BUNDLE", "ESP32TASKS_REGISTRY_USER",
            "ESP32TASKS_REGISTRY_PASSWORD", "ESP32TASKS_ALLOW_DIRTY",
            "ESP32TASKS_FORCE", "ESP32TASKS_VERSION", "ESP32TASKS_CHANNEL",
            "ESP32TASKS_FORCE_CHANNEL", "ESP32TASKS_TARGETS", "ESP32TASKS_CACHE",
            "ESP32TASKS_CACHE_WRITE", "ESP32TASKS_CACHE_KEY"} == set(names)
    assert CLI_PARAMETERS == ("registry", "version", "channel", "targets")


def test_version_and_channels_come_from_the_command_line_then_variables_then_the_file(
        root: Path) -> None:
    (root / "targets.toml").write_text(
        GOOD.replace('version = "1.0.0"', 'version = "1.0.0"\nchannels = ["beta"]'))
    path = root / "targets.toml"
    assert (load(path, HOME).project.version, load(path, HOME).project.channels) == \
        ("1.0.0", ("beta",))
    env = {**HOME, "ESP32TASKS_VERSION": "2.0.0-rc.1", "ESP32TASKS_CHANNEL": "dev, beta,dev"}
    project = load(path, env).project
    assert (project.version, project.version_source, project.channels) == \
        ("2.0.0-rc.1", "ESP32TASKS_VERSION", ("dev", "beta"))
    project = load(path, env, {"version": "git", "channel": "stable"}).project
    assert (project.version, project.version_source, project.channels) == \
        ("git", "doit release version=git", ("stable",))


def test_bad_overrides_name_themselves(root: Path) -> None:
    (root / "targets.toml").write_text(GOOD)
    with pytest.raises(ConfigError) as info:
        load(root / "targets.toml", {**HOME, "ESP32TASKS_CHANNEL": "beta,Stable"},
             {"version": "1.0"})
    assert info.value.problems == [
        "doit release version=1.0: '1.0' is not a version: use semver "
        "MAJOR.MINOR.PATCH[-PRERELEASE] (e.g. 1.4.0 or 1.4.0-rc.1) or \"git\" (git describe "
        "--tags --match 'v[0-9]*')",
        "ESP32TASKS_CHANNEL=beta,Stable: 'Stable' is not a channel name: a lower-case letter, "
        "then lower-case letters and digits (e.g. stable, beta, dev)"]


def test_allow_dirty_and_force_channel_are_switches_of_their_own(root: Path) -> None:
    (root / "targets.toml").write_text(WITH_REGISTRY.replace(
        "[registry]", "[registry]\nallow_dirty = true", 1))
    release = load(root / "targets.toml", {**HOME, "ESP32TASKS_FORCE": "1"})
    assert release.project.allow_dirty is True  # [registry] allow_dirty, as before
    assert release.project.force_channel is False  # ESP32TASKS_FORCE never moves channels
    release = load(root / "targets.toml", {**HOME, "ESP32TASKS_ALLOW_DIRTY": "0",
                                           "ESP32TASKS_FORCE_CHANNEL": "yes"})
    assert (release.project.allow_dirty, release.project.force_channel) == (False, True)


@pytest.mark.parametrize(("described", "version"), [
    ("v1.0.1-0-gabc1234", "1.0.1"),
    ("v1.0.1-3-gabc1234", "1.0.1-3-gabc1234"),
    ("v2.0.0-rc.2-0-g0123456", "2.0.0-rc.2"),
    ("v2.0.0-rc.2-12-g0123456", "2.0.0-rc.2-12-g0123456"),
])
def test_git_version_is_what_git_describe_says_without_the_v(
        root: Path, described: str, version: str) -> None:
    (root / "targets.toml").write_text(GOOD.replace('version = "1.0.0"', 'version = "git"'))
    release = resolve_version(load(root / "targets.toml", HOME), described)
    assert release.project.version == version
    assert release.project.version_source == \
        f'targets.toml: project.version = "git" ({described})'


@pytest.mark.parametrize(("described", "message"), [
    (None, "targets.toml: project.version = \"git\": no tag matching 'v[0-9]*' reaches HEAD; "
           "tag a release (git tag v0.1.0) or set a literal version"),
    ("v1.0-2-gabc1234", "targets.toml: project.version = \"git\": git describe found the tag "
                        "'v1.0', whose version is not semver MAJOR.MINOR.PATCH[-PRERELEASE]; "
                        "tag the commit v<version> (e.g. v1.4.0) or set a literal version"),
    (f"v1.0.0-{'a' * 14}-1234-gabc1234", "targets.toml: project.version = \"git\" "
     f"(v1.0.0-{'a' * 14}-1234-gabc1234): '1.0.0-{'a' * 14}-1234-gabc1234' is 34 bytes; "
     "esp_app_desc_t.version holds at most 31"),
])
def test_git_version_problems(root: Path, described: str | None, message: str) -> None:
    (root / "targets.toml").write_text(GOOD.replace('version = "1.0.0"', 'version = "git"'))
    with pytest.raises(ConfigError) as info:
        resolve_version(load(root / "targets.toml", HOME), described)
    assert str(info.value) == message


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), ("  ", None),
    ("1", True), ("true", True), ("YES", True), ("On", True), (" yes ", True),
    ("0", False), ("false", False), ("No", False), ("OFF", False), ("\t0\n", False)])
def test_parse_bool(value: str | None, expected: bool | None) -> None:
    assert parse_bool("X", value) is expected


@pytest.mark.parametrize("value", ["2", "y", "n", "enabled", "truee", "-1"])
def test_parse_bool_refuses_anything_else(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_bool("ESP32TASKS_X", value)
    assert str(info.value) == (f"ESP32TASKS_X={value!r}: not a boolean; use 1, true, yes or "
                               "on (or 0, false, no or off)")


# -- config that cannot hurt: the store, paths, placeholders, the repository (issue 9) -----

def store_error(root: Path, url: str) -> str:
    return error(root, GOOD + f"[store]\nurl = {json.dumps(url)}\n")


def test_every_spelling_of_a_store_dir_is_one_path(root: Path) -> None:
    """Our ignore list and `doit clean` compare the normalised path."""
    spellings = ["./dist", "dist", "dist/", "dist//", "./dist/.", "./dist/"]
    assert {url: parse_in(root, GOOD + f'[store]\nurl = "{url}"\n').store.url
            for url in spellings} == dict.fromkeys(spellings, "dist")


def test_the_default_store_dir(root: Path) -> None:
    assert parse_in(root, GOOD + "[store]\n").store.url == DEFAULT_STORE == "build/store"
    assert parse_in(root, GOOD + '[store]\nurl = "./build/store/"\n').store.url == DEFAULT_STORE


@pytest.mark.parametrize(("url", "message"), [
    pytest.param("", "targets.toml: store.url: empty; remove the key for the default directory "
                 'build/store, or name a directory (e.g. "dist") or an s3:// URL', id="empty"),
    *(pytest.param(url, f"targets.toml: store.url: '{url}' is not a directory inside the "
                   'repository; write a path relative to the repository root (e.g. "dist") or '
                   "an s3:// URL", id=f"outside-{url}")
      for url in ("/tmp/firmware", "../x", "dist/../../x", "..", "dist\\win")),
    *(pytest.param(url, f"targets.toml: store.url: '{url}' is the repository root itself; "
                   'name a directory in it (e.g. "dist")', id=f"root-{url}")
      for url in (".", "./")),
    *(pytest.param(url, f"targets.toml: store.url: '{url}' is inside .git; name a directory "
                   'outside it (e.g. "dist")', id=f"git-{url}")
      for url in (".git", ".git/store", "sub/.git/x")),
    pytest.param("app", "targets.toml: store.url: 'app' contains the app directory 'app'; name "
                 'a directory outside it (e.g. "dist")', id="is-the-app-dir"),
])
def test_bad_store_dir(root: Path, url: str, message: str) -> None:
    assert store_error(root, url) == message


def test_a_store_dir_that_contains_the_app_dir(root: Path) -> None:
    (root / "fw" / "hello").mkdir(parents=True)
    text = GOOD.replace('app_dir = "app"', 'app_dir = "fw/hello"') + '[store]\nurl = "fw"\n'
    assert error(root, text) == ("targets.toml: store.url: 'fw' contains the app directory "
                                 "'fw/hello'; name a directory outside it (e.g. \"dist\")")


def test_a_store_dir_inside_the_app_dir_is_fine(root: Path) -> None:
    assert parse_in(root, GOOD + '[store]\nurl = "app/dist"\n').store.url == "app/dist"


def test_a_store_dir_linked_out_of_the_repository(root: Path,
                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside").resolve()
    (root / "dist").symlink_to(outside)
    assert store_error(root, "dist") == (
        f"targets.toml: store.url: 'dist' resolves to {outside}, outside the repository; name "
        'a directory inside the repository (e.g. "dist") or use an s3:// URL')
    assert store_error(root, "dist/sub") == (
        f"targets.toml: store.url: 'dist/sub' resolves to {outside}/sub, outside the "
        'repository; name a directory inside the repository (e.g. "dist") or use an s3:// URL')


def test_a_store_dir_linked_elsewhere_in_the_repository(root: Path) -> None:
    (root / "real").mkdir()
    (root / "dist").symlink_to("real")
    assert store_error(root, "./dist/") == (
        "targets.toml: store.url: './dist/' resolves to 'real' through a symbolic link; write "
        "'real'")


def test_a_store_dir_in_a_symbolic_link_loop(root: Path) -> None:
    (root / "loop").symlink_to("loop")
    assert store_error(root, "loop") == (
        "targets.toml: store.url: 'loop' cannot be resolved (a symbolic link loop); fix the path")


def test_an_app_dir_linked_to_etc(root: Path) -> None:
    (root / "fw").symlink_to("/etc")
    assert error(root, GOOD.replace('app_dir = "app"', 'app_dir = "fw"')) == (
        f"targets.toml: project.app_dir: 'fw' resolves to {Path('/etc').resolve()}, outside the "
        "repository; point it at a directory inside the repository")


def test_an_app_dir_linked_elsewhere_in_the_repository(root: Path) -> None:
    """git lists no file under a link: the build would have no sources."""
    (root / "fw").symlink_to("app")
    assert error(root, GOOD.replace('app_dir = "app"', 'app_dir = "fw"')) == (
        "targets.toml: project.app_dir: 'fw' resolves to 'app' through a symbolic link; write "
        "'app'")


@pytest.mark.parametrize(("section", "key"), [
    ("[[targets]]\nname = \"esp32c6\"\n", "targets[1].files"),
    ("[[targets]]\nname = \"esp32c6\"\n", "targets[1].sdkconfig_defaults"),
])
def test_a_listed_file_linked_out_of_the_repository(root: Path, section: str, key: str) -> None:
    (root / "app" / "secret").symlink_to("/etc/passwd")
    (root / "app" / "sdk.c6").write_text("x")  # a link inside the repository is fine
    (root / "app" / "linked").symlink_to("sdk.c6")
    text = GOOD + section + f'{key.rpartition(".")[2]} = ["linked", "secret"]\n'
    assert error(root, text) == (
        f"targets.toml: {key}: 'secret' resolves to {Path('/etc/passwd').resolve()}, outside "
        "the repository; list files inside the repository")


def test_builder_sdkconfig_defaults_linked_out_of_the_repository(root: Path) -> None:
    (root / "app" / "defaults").symlink_to("/etc/hostname")
    text = GOOD.replace('kind = "command"', 'kind = "command"\nsdkconfig_defaults = ["defaults"]')
    assert error(root, text) == (
        "targets.toml: builder.sdkconfig_defaults: 'defaults' resolves to "
        f"{Path('/etc/hostname').resolve()}, outside the repository; list files inside the "
        "repository")


def command_error(root: Path, arg: str) -> str:
    return error(root, GOOD.replace('"{build_dir}"', json.dumps(arg)))


@pytest.mark.parametrize(("arg", "problem"), [
    ("{target.__class__}", "placeholder '{target.__class__}' looks up an attribute or index; "
     "write just {target}"),
    ("--{chip.__class__.__mro__}", "placeholder '{chip.__class__.__mro__}' looks up an "
     "attribute or index; write just {chip}"),
    ("{target[0]}", "placeholder '{target[0]}' looks up an attribute or index; write just "
     "{target}"),
    ("{target!r}", "placeholder '{target!r}' has a conversion or format spec; write just "
     "{target}"),
    ("{version:>10}", "placeholder '{version:>10}' has a conversion or format spec; write just "
     "{version}"),
    ("{build_dir!s:{chip}}", "placeholder '{build_dir!s:{chip}}' has a conversion or format "
     "spec; write just {build_dir}"),
    ("{}", "bad placeholder ''; known placeholders: {target}, {chip}, {build_dir}, {version}"),
    ("{0}", "bad placeholder '0'; known placeholders: {target}, {chip}, {build_dir}, "
     "{version}"),
    ("a}b", "not a valid template (Single '}' encountered in format string); write {{ and }} "
     "for literal braces"),
    ("{target", "not a valid template (expected '}' before end of string); write {{ and }} "
     "for literal braces"),
])
def test_placeholders_are_names_only(root: Path, arg: str, problem: str) -> None:
    assert command_error(root, arg) == f"targets.toml: builder.command: '{arg}': {problem}"


def test_placeholder_escapes_stay_allowed(root: Path) -> None:
    release = parse_in(root, GOOD.replace('"{build_dir}"', '"{{x}}={target}", "}}{{"'))
    assert release.builder.command[-2:] == ("{{x}}={target}", "}}{{")


def test_substitute_fills_names_and_braces_only() -> None:
    values = {"target": "esp32c3", "chip": "esp32c3", "build_dir": "b", "version": "1"}
    assert substitute("{{{target}}}-{chip}/{build_dir}:{version}}}", values) == (
        "{esp32c3}-esp32c3/b:1}")
    with pytest.raises(ConfigError) as info:
        substitute("{target.__class__}", values)
    assert str(info.value) == ("builder.command: '{target.__class__}': placeholder "
                               "'{target.__class__}' looks up an attribute or index; write just "
                               "{target}")


@pytest.mark.parametrize(("text", "message"), [
    pytest.param(GOOD.replace('"{build_dir}"', '"a\\u0000b"'),
                 "targets.toml: builder.command: 'a\\x00b' contains a NUL character, which no "
                 "program argument or environment value can hold; remove it", id="command"),
    pytest.param(GOOD.replace('kind = "command"', 'kind = "command"\ntoolchain = ["gcc\\u0000"]'),
                 "targets.toml: builder.toolchain: 'gcc\\x00' contains a NUL character, which "
                 "no program argument or environment value can hold; remove it", id="toolchain"),
    pytest.param(GOOD + 'env = { CFLAGS = "-O2\\u0000" }\n',
                 "targets.toml: targets[0].env.CFLAGS: '-O2\\x00' contains a NUL character, "
                 "which no program argument or environment value can hold; remove it",
                 id="env"),
    pytest.param(GOOD.replace('app_dir = "app"', 'app_dir = "a\\u0000"'),
                 "targets.toml: project.app_dir: 'a\\x00' must be a relative path inside the "
                 "repository", id="app-dir"),
    pytest.param(GOOD + 'files = ["x\\u0000"]\n',
                 "targets.toml: targets[0].files: 'x\\x00' must be a relative path inside the "
                 "app directory", id="file"),
])
def test_nul_characters_are_refused(root: Path, text: str, message: str) -> None:
    assert error(root, text) == message


def test_a_message_is_one_line_whatever_the_file_held(root: Path) -> None:
    text = GOOD.replace('name = "hello"', 'name = "a\\nb\\u2028c\\u202ed"')
    assert error(root, text) == (
        "targets.toml: project.name: 'a\\nb\\u2028c\\u202ed' is not a safe path component; use "
        "letters, digits, '.', '_' and '-', starting with a letter or digit")


def test_toml_nested_too_deeply(root: Path) -> None:
    assert error(root, "a = " + "[" * 2000 + "]" * 2000) == (
        "targets.toml: invalid TOML: arrays or inline tables nested too deeply; flatten them")


REPOSITORY_PROBLEMS = [
    pytest.param("127.0.0.1:999999/x", "port 999999 is out of range; use a port from 1 to "
                 "65535", id="port-too-big"),
    pytest.param("registry.test:0/x", "port 0 is out of range; use a port from 1 to 65535",
                 id="port-zero"),
    pytest.param("a..b/x", "host 'a..b' is not a domain name, an IPv4 address or a bracketed "
                 "IPv6 address; fix the host (e.g. harbor.example.com, 10.0.0.5:5000 or "
                 "[fd00::5]:5000)", id="empty-domain-component"),
    pytest.param("-a.test/x", "host '-a.test' is not a domain name, an IPv4 address or a "
                 "bracketed IPv6 address; fix the host (e.g. harbor.example.com, 10.0.0.5:5000 "
                 "or [fd00::5]:5000)", id="leading-dash"),
    pytest.param("300.1.1.1:5000/x", "host '300.1.1.1' is not a domain name, an IPv4 address "
                 "or a bracketed IPv6 address; fix the host (e.g. harbor.example.com, "
                 "10.0.0.5:5000 or [fd00::5]:5000)", id="bad-ipv4"),
    pytest.param("[::g]:5000/x", "host '[::g]' is not a domain name, an IPv4 address or a "
                 "bracketed IPv6 address; fix the host (e.g. harbor.example.com, 10.0.0.5:5000 "
                 "or [fd00::5]:5000)", id="bad-ipv6"),
    pytest.param("localhost/x", "host 'localhost' has no '.' and no port, so registry clients "
                 "would read it as part of the path; write the full host name "
                 "(harbor.example.com) or add the port (localhost:5000)", id="dotless-host"),
    pytest.param("r.test/" + "a" * 249, "256 characters, over the 255 a repository name may "
                 "have; shorten it", id="too-long"),
]


@pytest.mark.parametrize(("repository", "problem"), REPOSITORY_PROBLEMS)
def test_repository_grammar_in_the_file(root: Path, repository: str, problem: str) -> None:
    text = GOOD + f'[registry]\nrepository = "{repository}"\n'
    assert error(root, text) == f"targets.toml: registry.repository: '{repository}': {problem}"


@pytest.mark.parametrize(("repository", "problem"), REPOSITORY_PROBLEMS)
def test_repository_grammar_in_the_overrides(root: Path, repository: str, problem: str) -> None:
    assert override_error(root, {"ESP32TASKS_REGISTRY": repository}) == (
        f"ESP32TASKS_REGISTRY={repository}: {problem}")
    assert override_error(root, {}, {"registry": repository}) == (
        f"registry={repository}: {problem}")


@pytest.mark.parametrize("repository", [
    "localhost:5000/x", "127.0.0.1:5000/cloud-iot/hello", "[::1]:5000/x", "[fd00::5]/a/b",
    "harbor.example.com/a_b/c__d/e--f.g", "Registry.Test:65535/x", "r.test/" + "a" * 248,
    "xn--bcher-kva.example/x"])
def test_repository_grammar_accepts(root: Path, repository: str) -> None:
    release = parse_in(root, GOOD + f'[registry]\nrepository = "{repository}"\n')
    assert release.registry is not None
    assert release.registry.repository == repository
    assert overridden(root, {"ESP32TASKS_REGISTRY": repository}).registry.repository == (  # type: ignore[union-attr]
        repository)
