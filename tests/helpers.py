"""Small helpers shared by the tests: free ports, bounded waits, real servers."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

from bot.lab.cluster import RedisProcess as RedisServer
from bot.lab.cluster import WaitTimeout, free_port, port_open, wait_until

__all__ = [
    "RedisServer",
    "WaitTimeout",
    "free_port",
    "port_open",
    "require_root",
    "wait_for",
    "wait_for_sync",
    "wait_until",
]


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
            raise WaitTimeout(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(interval)


# The blocking wait is the lab's: one loop for the tests, the demo and the benchmark.
wait_for_sync = wait_until


def require_root() -> bool:
    return os.geteuid() == 0
