"""The loop's wake-up instant (bot.leasewake): earliest pending rule-5 deadline, or idle."""

from __future__ import annotations

import pytest

from bot.leasewake import SETTLE, next_wakeup


def test_idle_when_nothing_is_pending() -> None:
    assert next_wakeup([None, None], now=10.0, idle=0.2) == 0.2


def test_past_deadlines_are_ignored() -> None:
    assert next_wakeup([9.0, 10.0], now=10.0, idle=0.2) == 0.2


def test_wakes_just_after_the_earliest_deadline_ahead() -> None:
    got = next_wakeup([10.05, None, 10.03], now=10.0, idle=0.2)
    assert got == pytest.approx(0.03 + SETTLE)


def test_never_sleeps_longer_than_idle() -> None:
    assert next_wakeup([12.0], now=10.0, idle=0.2) == 0.2
