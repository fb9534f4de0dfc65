"""Small helpers shared by the tests: free ports, bounded waits, real servers."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

from bot.lab.cluster import RedisProcess as RedisServer
from bot.lab.cluster import free_port, port_open

__all__ = ["RedisServer", "free_port", "port_open", "require_root", "wait_for", "wait_for_sync"]


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]],
    within: float,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` until true; fail after ``within`` seconds (never sleep-as-sync)."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_for_sync(predicate: Callable[[], bool], within: float, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.02)


def require_root() -> bool:
    return os.geteuid() == 0


def require_asterisk() -> str:
    """The real Asterisk's binary; outside CI a missing one skips with how to get one,
    with ``CI=true`` it fails (CI must never pass without the real-Asterisk tests)."""
    import pytest

    from bot.lab.asterisk import HOW_TO_GET, find_binary

    binary = find_binary()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {HOW_TO_GET}")
        pytest.skip(HOW_TO_GET)
    return binary
