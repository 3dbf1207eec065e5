"""Challenges read as RFC 7235 says, and tokens held per scope until nearly expired."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from esp32tasks.registry.auth import Challenge, Token, Tokens, parse


def test_docker_hubs_challenge() -> None:
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:library/ubuntu:pull"')
    assert parse(header) == [Challenge("bearer", {
        "realm": "https://auth.docker.io/token", "service": "registry.docker.io",
        "scope": "repository:library/ubuntu:pull"})]


def test_basic_and_several_challenges_in_one_header() -> None:
    assert parse('Basic realm="Registry Realm"') == [
        Challenge("basic", {"realm": "Registry Realm"})]
    assert parse('Bearer realm="https://a/token", error="insufficient_scope", '
                 'Basic realm="b", charset=UTF-8') == [
        Challenge("bearer", {"realm": "https://a/token", "error": "insufficient_scope"}),
        Challenge("basic", {"realm": "b", "charset": "UTF-8"})]


def test_names_case_quotes_and_token68() -> None:
    assert parse('BEARER Realm="a \\"b\\"",SERVICE=svc') == [
        Challenge("bearer", {"realm": 'a "b"', "service": "svc"})]
    assert parse("Negotiate abc123==, Basic realm=x") == [
        Challenge("negotiate", {}), Challenge("basic", {"realm": "x"})]


def test_garbage_is_no_challenge() -> None:
    assert parse("") == []
    assert parse('"') == []
    assert parse(",,  ,") == []


@given(st.text(max_size=200))
def test_any_header_parses_without_raising(header: str) -> None:
    for challenge in parse(header):
        assert challenge.scheme == challenge.scheme.lower()


def test_one_token_per_scope_until_nearly_expired() -> None:
    now = [1000.0]
    fetched: list[str] = []

    def fetch(challenge: Challenge, scope: str) -> Token:
        fetched.append(scope)
        return Token(f"t{len(fetched)}", expires_in=60)

    tokens = Tokens(clock=lambda: now[0])
    bearer = Challenge("bearer", {"realm": "https://a/token"})
    first = tokens.get(bearer, "repository:x:pull,push", fetch)
    assert tokens.get(bearer, "repository:x:pull,push", fetch) is first
    assert tokens.get(bearer, "repository:x:pull", fetch).value == "t2"
    now[0] += 49  # 60 s, renewed 10 s early
    assert tokens.get(bearer, "repository:x:pull,push", fetch) is first
    now[0] += 2
    assert tokens.get(bearer, "repository:x:pull,push", fetch).value == "t3"
    assert tokens.get(bearer, "repository:x:pull", fetch).value == "t4"  # as old: renewed too
    tokens.forget("repository:x:pull", Token("other", 60))  # not the one held: kept
    assert tokens.get(bearer, "repository:x:pull", fetch).value == "t4"
    tokens.forget("repository:x:pull", tokens.get(bearer, "repository:x:pull", fetch))
    assert tokens.get(bearer, "repository:x:pull", fetch).value == "t5"
    assert tokens.fetched == 5


def test_a_short_token_is_renewed_at_half_its_life() -> None:
    now = [0.0]
    tokens = Tokens(clock=lambda: now[0])
    bearer = Challenge("bearer", {})

    def fetch(challenge: Challenge, scope: str) -> Token:
        return Token("t", expires_in=4)

    tokens.get(bearer, "s", fetch)
    now[0] = 1.9
    tokens.get(bearer, "s", fetch)
    now[0] = 2.0
    tokens.get(bearer, "s", fetch)
    assert tokens.fetched == 2
