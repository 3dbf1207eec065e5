"""targets.toml parsing and our overrides: every bad input gets its exact one-line message."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from esp32tasks.config import (
    CLI_PARAMETERS,
    KNOWN_CHIPS,
    VARIABLES,
    Login,
    RegistryConfig,
    Release,
    apply_overrides,
    load,
    parse,
    parse_bool,
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
            "ESP32TASKS_FORCE"} == set(names)
    assert CLI_PARAMETERS == ("registry",)


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
