"""SIGINT held back while a pool starts a worker (esp32tasks/interrupts.py)."""

from __future__ import annotations

import os
import signal

import pytest

from esp32tasks import interrupts


def _interrupted(reached: list[str]) -> None:
    with interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        reached.append("end of block")  # the signal did not stop the block


def test_sigint_in_the_block_is_raised_when_it_ends() -> None:
    reached: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        _interrupted(reached)
    assert reached == ["end of block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_a_signal_nothing_changes() -> None:
    with interrupts.deferred():
        value = 1
    assert value == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_another_handler_gets_the_signal_afterwards() -> None:
    got: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: got.append(signum))
    try:
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            assert got == []
        assert got == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)
