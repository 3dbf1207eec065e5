"""``[[keys]]`` and ``[delta]`` in targets.toml: the chip table, where a private key may live,
and the plan's names for every signed variant and patch. Each refusal has its exact one-line
message."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from esp32tasks import secureboot
from esp32tasks.config import KNOWN_CHIPS, parse
from esp32tasks.errors import ConfigError
from esp32tasks.gitinfo import GitState
from esp32tasks.plan import expand

BASE = """\
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

[[targets]]
name = "esp32c6"

[[targets]]
name = "esp32s3r8"
"""
GIT = GitState(revision="0123456789abcdef0123456789abcdef01234567", dirty=False,
               commit_time="2026-01-01T00:00:00Z", files=("app/main.c",))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    return tmp_path


def problems(root: Path, keys: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(BASE + keys, root / "targets.toml")
    return info.value.problems


def test_the_chip_table_is_espidfs() -> None:
    """The issue's table, chip by chip; every chip we know has an entry."""
    assert set(secureboot.ACCEPTED) == set(KNOWN_CHIPS)
    assert secureboot.accepted("esp32") == ("sbv1", "rsa3072")
    for chip in ("esp32s2", "esp32s3", "esp32c3"):
        assert secureboot.accepted(chip) == ("rsa3072",)
    for chip in ("esp32c2", "esp32c61"):
        assert secureboot.accepted(chip) == ("ecdsa192", "ecdsa256")
    for chip in ("esp32c6", "esp32h2", "esp32p4"):
        assert secureboot.accepted(chip) == ("rsa3072", "ecdsa192", "ecdsa256")
    assert secureboot.accepted("esp32c5") == ("rsa3072", "ecdsa192", "ecdsa256", "ecdsa384")
    assert secureboot.warning("esp32c6", "ecdsa256") is None
    assert secureboot.warning("esp32c5", "rsa3072") is None
    for chip in ("esp32c5", "esp32p4"):
        found = secureboot.warning(chip, "ecdsa256")
        assert found is not None
        assert f"https://docs.espressif.com/projects/esp-idf/en/stable/{chip}/security/" \
               "secure-boot-v2.html" in found


def test_a_key_a_chip_cannot_verify_names_key_target_chip_and_schemes(root: Path) -> None:
    assert problems(root, '[[keys]]\nname = "field"\nscheme = "ecdsa256"\n'
                          'private_key_env = "K"\n') == [
        "targets.toml: keys[0].scheme: key 'field' (ecdsa256) cannot sign target 'esp32c3': "
        "chip esp32c3 verifies rsa3072; use a key of that scheme, or list the targets it "
        "signs in keys[0].targets",
        "targets.toml: keys[0].scheme: key 'field' (ecdsa256) cannot sign target "
        "'esp32s3r8': chip esp32s3 verifies rsa3072; use a key of that scheme, or list the "
        "targets it signs in keys[0].targets"]
    assert problems(root, '[[keys]]\nname = "old"\nscheme = "sbv1"\nprivate_key_env = "K"\n'
                          'targets = ["esp32c6"]\n') == [
        "targets.toml: keys[0].scheme: key 'old' (sbv1) cannot sign target 'esp32c6': chip "
        "esp32c6 verifies rsa3072 or ecdsa192 or ecdsa256; use a key of that scheme, or list "
        "the targets it signs in keys[0].targets"]


def test_where_a_key_lives_is_checked(root: Path) -> None:
    inside = root / "keys" / "prod.pem"
    assert problems(root, f'''
[[keys]]
name = "prod"
scheme = "rsa3072"
private_key_env = "K"
private_key_file = "/run/secrets/prod.pem"

[[keys]]
name = "Prod"
scheme = "rsa4096"

[[keys]]
name = "inside"
scheme = "rsa3072"
private_key_file = "{inside}"

[[keys]]
name = "hsm"
scheme = "rsa3072"
sign_command = ["signer"]
targets = ["esp32c3", "esp32c9"]

[[keys]]
name = "prod"
scheme = "rsa3072"
private_key_file = "relative.pem"
''') == [
        "targets.toml: keys[0]: set exactly one of private_key_env, private_key_file and "
        "sign_command (found private_key_env, private_key_file)",
        "targets.toml: keys[1].name: 'Prod' is not a key name; use a lower-case letter then "
        "letters and digits ([a-z][a-z0-9]*), not 'dirty' or 'unsigned'",
        "targets.toml: keys[1].scheme: unknown scheme 'rsa4096'; use one of rsa3072, "
        "ecdsa256, ecdsa384, ecdsa192, sbv1",
        "targets.toml: keys[1]: set exactly one of private_key_env, private_key_file and "
        "sign_command (found none)",
        f"targets.toml: keys[2].private_key_file: '{inside}' is inside the repository; keep "
        "private keys outside it (e.g. /run/secrets/prod.pem) or use private_key_env",
        "targets.toml: keys[3].public_key: missing; a sign_command needs the public key it "
        "signs for, committed (e.g. keys/prod.pub.pem)",
        "targets.toml: keys[3].targets: 'esp32c9' is no target in targets.toml (targets: "
        "esp32c3, esp32c6, esp32s3r8)",
        "targets.toml: keys[4].name: duplicate key 'prod' (also keys[0]); give each key a "
        "unique name",
        "targets.toml: keys[4].private_key_file: 'relative.pem' must be an absolute path "
        "outside the repository (a private key never lives in it, e.g. "
        "/run/secrets/prod.pem)"]


@pytest.mark.parametrize("name", ["dirty", "unsigned"])
def test_reserved_key_names(root: Path, name: str) -> None:
    [problem] = problems(root, f'[[keys]]\nname = "{name}"\nscheme = "rsa3072"\n'
                               'private_key_env = "K"\n')
    assert problem.startswith(f"targets.toml: keys[0].name: '{name}' is not a key name")


def test_a_public_key_must_be_committed_inside(root: Path) -> None:
    assert problems(root, '[[keys]]\nname = "hsm"\nscheme = "rsa3072"\n'
                          'sign_command = ["s"]\npublic_key = "keys/hsm.pub.pem"\n') == [
        "targets.toml: keys[0].public_key: file 'keys/hsm.pub.pem' does not exist; commit the "
        "key's public PEM there (espsecure extract-public-key writes it)"]
    (root / "keys").mkdir()
    (root / "keys/hsm.pub.pem").write_text("-----BEGIN PUBLIC KEY-----\n")
    release = parse(BASE + '[[keys]]\nname = "hsm"\nscheme = "rsa3072"\n'
                    'sign_command = ["s", "--slot", "3"]\npublic_key = "keys/hsm.pub.pem"\n',
                    root / "targets.toml")
    [key] = release.keys
    assert (key.sign_command, key.public_key) == (("s", "--slot", "3"),
                                                  PurePosixPath("keys/hsm.pub.pem"))
    assert key.where == "keys[0] in targets.toml"


TWO_KEYS = """
[[keys]]
name = "prod"
scheme = "rsa3072"
private_key_env = "ESP32_KEY_PROD"

[[keys]]
name = "field"
scheme = "ecdsa256"
private_key_env = "ESP32_KEY_FIELD"
targets = ["esp32c6"]
"""


def test_the_plan_names_every_variant(root: Path) -> None:
    text = BASE.replace('app_dir = "app"', 'app_dir = "app"\nchannels = ["beta"]') + TWO_KEYS
    plan = expand(parse(text, root / "targets.toml"), GIT)
    assert [v.key.name if v.key else None for v in plan.variants] == ["prod", "field"]
    prod, field = plan.variants
    assert [s.name for s in prod.steps] == ["esp32c3@prod", "esp32c6@prod", "esp32s3r8@prod"]
    assert [s.name for s in field.steps] == ["esp32c6@field"]
    assert [s.name for s in plan.steps] == ["esp32c3", "esp32c6", "esp32s3r8"]  # the builds
    [c6] = field.steps
    assert c6.tag == "esp32c6-hello-1.0.0-field-0123456"
    assert c6.store_prefix == "hello/hello-1.0.0-field/esp32c6/artifacts/"
    assert c6.signed_dir == PurePosixPath("build/esp32c6@field")
    assert c6.build_dir == PurePosixPath("build/esp32c6")
    assert (str(c6.app_receipt), str(c6.image_receipt)) == (
        "build/receipts/app-esp32c6@field.json", "build/receipts/image-esp32c6@field.json")
    assert (field.index_tag, field.index_task, field.push_index_task, field.prefix) == (
        "hello-1.0.0-field", "index@field", "push-index@field", "hello/hello-1.0.0-field/")
    assert [(c.tag, c.task, c.pointer_key) for c in field.channels] == [
        ("hello-beta-field", "beta@field", "hello/channels/hello-beta-field.json")]
    assert plan.release_prefix == "hello/hello-1.0.0/"  # one release.json per version
    names = [s.name for s in plan.published] + [v.index_task for v in plan.variants]
    assert len(names) == len(set(names))


def test_publish_unsigned_adds_the_unsigned_variant_first(root: Path) -> None:
    text = BASE.replace('app_dir = "app"', 'app_dir = "app"\npublish_unsigned = true')
    plan = expand(parse(text + TWO_KEYS, root / "targets.toml"), GIT)
    assert [v.index_tag for v in plan.variants] == [
        "hello-1.0.0", "hello-1.0.0-prod", "hello-1.0.0-field"]
    assert plan.variants[0].steps == plan.steps


def test_ecdsa_where_espidf_advises_against_it_is_a_warning(root: Path) -> None:
    text = BASE.replace('name = "esp32s3r8"', 'name = "esp32c5"') + (
        '[[keys]]\nname = "field"\nscheme = "ecdsa256"\nprivate_key_env = "K"\n'
        'targets = ["esp32c5"]\n')
    plan = expand(parse(text, root / "targets.toml"), GIT)
    [warning] = plan.warnings
    assert warning.startswith("keys[0] in targets.toml: ESP-IDF advises against "
                              "ECDSA Secure Boot on esp32c5")


def test_delta_names_a_patch_per_published_step(root: Path) -> None:
    text = BASE + TWO_KEYS + '\n[delta]\nbases = ["0.9.0", "1.0.0-rc.1"]\nmax_ratio = 0.5\n'
    plan = expand(parse(text, root / "targets.toml"), GIT)
    assert plan.release.delta is not None
    assert plan.release.delta.max_ratio == 0.5
    assert [d.name for d in plan.deltas] == [
        "esp32c3@prod", "esp32c6@prod", "esp32s3r8@prod", "esp32c6@field"]
    field = plan.deltas[-1]
    assert (str(field.receipt), str(field.dir), field.store_prefix) == (
        "build/receipts/delta-esp32c6@field.json", "build/delta/esp32c6@field",
        "hello/hello-1.0.0-field/esp32c6/delta/")
    assert field.base_manifests == (("0.9.0", "hello/hello-0.9.0/release.json"),
                                    ("1.0.0-rc.1", "hello/hello-1.0.0-rc.1/release.json"))
    assert field.patch_name("0.9.0") == "from-0.9.0.patch"


def test_delta_config_problems(root: Path) -> None:
    assert problems(root, '[delta]\nbases = ["1.0", "2.0.0+b1"]\nmax_ratio = 1.5\n') == [
        "targets.toml: delta.bases: '1.0' is not a version: use semver "
        "MAJOR.MINOR.PATCH[-PRERELEASE] (e.g. 1.4.0 or 1.4.0-rc.1)",
        "targets.toml: delta.bases: '2.0.0+b1' has build metadata ('+'), which an OCI tag "
        "cannot hold; drop it or make it a pre-release (e.g. 1.4.0-rc.1)",
        "targets.toml: delta.max_ratio: 1.5 is out of range; use a share of the app above 0 "
        "and at most 1 (e.g. 0.9)"]
    assert problems(root, "[delta]\nlatest = 21\n") == [
        "targets.toml: delta.latest: 21 is out of range; use 0 to 20 releases"]
    assert problems(root, "[delta]\nmax_ratio = 0.5\n") == [
        'targets.toml: delta: no bases; list the released versions devices update from '
        '(bases = ["1.0.0"]) and/or take the newest from the store (latest = 2)']
    latest = parse(BASE + "[delta]\nlatest = 2\n", root / "targets.toml").delta
    assert latest is not None
    assert (latest.bases, latest.latest) == ((), 2)
    with pytest.raises(ConfigError) as info:
        expand(parse(BASE + '[delta]\nbases = ["1.0.0"]\n', root / "targets.toml"), GIT)
    assert info.value.problems == ["targets.toml: delta.bases: '1.0.0' is this release's own "
                                   "version; list earlier releases"]
