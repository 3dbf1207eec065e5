"""Whole-exchange deadlines and protocol checks of the registry transport, against small
loopback servers that answer the way broken ones do (a drip, an HTML page)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from esp32tasks import deadline
from esp32tasks.errors import RegistryError, RegistryUnreachable
from esp32tasks.registry.http import Transport
from tests.support.loopback import Answer, Server, drip, html, serve, truncated

__all__ = ["serve"]  # a fixture, used by name

def transport(host: str, timeout: float = 1.0) -> Transport:
    return Transport(host=host, insecure=True, verify=True, timeout=timeout,
                     credentials=None, what_to_check=f"the registry ({host})",
                     sleep=lambda _: None)


def test_a_dripping_answer_fails_as_too_slow_within_its_deadline(
        serve: Callable[[Answer], Server]) -> None:
    server = serve(drip)
    started = time.monotonic()
    with pytest.raises(RegistryUnreachable) as caught:
        transport(server.host).do_request(f"http://{server.host}/v2/x/manifests/t", "HEAD")
    elapsed = time.monotonic() - started
    assert str(caught.value) == (
        f"registry {server.host} was too slow: HEAD /v2/x/manifests/t did not finish within "
        "2 s (the request and its answer at under 64 KiB/s); the registry or the network "
        "to it is overloaded: try again later, or raise [registry] timeout")
    # per-read timeouts alone never fire: a byte arrives every 50 ms
    assert elapsed < 2 + 2, elapsed
    assert server.closed.wait(5)  # the connection was shut, not left dripping


def test_an_html_page_is_not_a_registry_whatever_it_says(
        serve: Callable[[Answer], Server]) -> None:
    server = serve(html)
    with pytest.raises(RegistryError) as caught:
        transport(server.host).do_request(f"http://{server.host}/v2/x/manifests/t?x=1", "GET")
    assert str(caught.value) == (
        f"http://{server.host}/v2/x/manifests/t answered GET with 200 and an HTML page: "
        f"this is not an OCI registry; check the registry ({server.host}) (the host and port "
        "of the registry itself, not a web page or a proxy's login in front of it)")


def test_an_answer_cut_short_is_retried_then_named(serve: Callable[[Answer], Server]) -> None:
    server = serve(truncated)
    with pytest.raises(RegistryUnreachable) as caught:
        transport(server.host).do_request(f"http://{server.host}/v2/x/manifests/t", "GET")
    assert str(caught.value).startswith(
        f"registry {server.host} cut its answer to GET /v2/x/manifests/t short (")
    assert str(caught.value).endswith(", 3 times; the registry or the network to it is "
                                      "failing: try again later or ask its operators")


def test_a_deadline_shuts_its_connection_and_a_cancelled_one_does_not() -> None:
    fired: list[float] = []
    left, right = socket.socketpair()
    with left, right:

        class Conn:
            sock = left

        watch = deadline.Deadline(0.1, lambda d: fired.append(d.seconds))
        watch.attach(Conn())
        assert right.recv(1) == b""  # shut down by the deadline: EOF at the other end
        assert watch.expired
        assert fired == [0.1]

    calm = deadline.Deadline(0.05)
    calm.cancel()
    extended = deadline.Deadline(0.05)
    extended.extend(60)
    time.sleep(0.2)
    assert not calm.expired
    assert not extended.expired
    extended.cancel()
    assert deadline.allowance(10, 64 * 1024 * 10) == 30


def test_the_running_deadline_is_per_thread() -> None:
    with deadline.within(60) as outer:
        assert deadline.current() is outer
        seen: list[object] = []
        thread = threading.Thread(target=lambda: seen.append(deadline.current()))
        thread.start()
        thread.join()
        assert seen == [None]
    assert deadline.current() is None
