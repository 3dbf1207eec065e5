"""Versions: what is one, what git describe gives, and the order channels move in."""

from __future__ import annotations

import random

import pytest

from esp32tasks.version import Version, from_describe, parse


@pytest.mark.parametrize("text", ["1.0.0", "0.0.1", "10.20.30", "1.0.1-rc.2", "1.0.0-alpha-1",
                                  "1.0.1-3-gabc1234", "2.0.0-rc.1-12-g0123456789"])
def test_versions_read_back_as_they_are_spelled(text: str) -> None:
    found = parse(text)
    assert found is not None
    assert str(found) == text


@pytest.mark.parametrize("text", ["1.0", "v1.0.0", "1.0.0+build", "01.0.0", "1.0.0-",
                                  "1.0.0-rc..1", "1.0.0-rc.01", "1 0 0", "", "git"])
def test_what_is_not_a_version(text: str) -> None:
    assert parse(text) is None


def test_a_snapshot_is_a_version_git_counted_from_a_tag() -> None:
    snapshot = parse("1.0.1-3-gabc1234")
    assert snapshot == Version(1, 0, 1, (), 3, "abc1234")
    assert snapshot.snapshot
    assert not Version(1, 0, 1).snapshot
    assert parse("1.0.1-0-gabc1234") == Version(1, 0, 1, ("0-gabc1234",))  # a pre-release


@pytest.mark.parametrize(("described", "version"), [
    ("v1.0.1-0-gabc1234", "1.0.1"), ("v1.0.1-3-gabc1234", "1.0.1-3-gabc1234"),
    ("v1.0.1-rc.2-0-gabc1234", "1.0.1-rc.2"), ("v1.0.1-rc.2-1-gabc1234", "1.0.1-rc.2-1-gabc1234"),
])
def test_from_describe_drops_the_v_and_a_zero_distance(described: str, version: str) -> None:
    assert str(from_describe(described)) == version


@pytest.mark.parametrize("described", ["1.0.1-0-gabc1234", "v1.0-0-gabc1234", "vx-1-gabc1234",
                                       "v1.0.1", "abc1234"])
def test_from_describe_refuses_other_tags(described: str) -> None:
    assert from_describe(described) is None


#: The channel order, lowest first (the issue's rules and semver's examples).
ORDERED = ["0.9.9", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
           "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.0-1-gaaaaaaa",
           "1.0.0-2-gbbbbbbb", "1.0.0-10-gccccccc", "1.0.1-rc.2", "1.0.1-rc.2-3-gddddddd",
           "1.0.1", "1.0.1-3-gabc1234", "1.1.0", "2.0.0"]


def test_the_channel_order() -> None:
    shuffled = ORDERED[:]
    random.Random(7).shuffle(shuffled)  # noqa: S311  (a fixed permutation, not a secret)
    assert sorted(shuffled, key=lambda v: _v(v).order()) == ORDERED


def test_equal_versions_have_equal_keys() -> None:
    assert _v("1.0.1-rc.2").order() == _v("1.0.1-rc.2").order()
    assert _v("1.0.1").order() != _v("1.0.1-rc.2").order()


def _v(text: str) -> Version:
    found = parse(text)
    assert found is not None, text
    return found
