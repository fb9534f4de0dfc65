"""Small helpers shared by the tests: free ports, bounded waits, real servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from bot.bus import NodeRecord
from bot.lab.cluster import RedisProcess as RedisServer
from bot.lab.cluster import WaitTimeout, free_port, port_open, toml_dumps, wait_until

__all__ = [
    "RedisServer",
    "WaitTimeout",
    "free_port",
    "node_config",
    "node_config_text",
    "node_record",
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


def node_config_text(**sections: dict[str, Any]) -> str:
    """A node configuration: node "a" of cluster "t" unless ``sections`` say otherwise
    (each keyword is a TOML table, merged over those defaults)."""
    tables: dict[str, dict[str, Any]] = {"node": {"id": "a"}, "cluster": {"name": "t"}}
    for name, values in sections.items():
        tables[name] = {**tables.get(name, {}), **values}
    return toml_dumps(tables)


def node_config(path: Path, **sections: dict[str, Any]) -> Path:
    """``node_config_text`` written to ``path``."""
    path.write_text(node_config_text(**sections))
    return path


def node_record(node: str, role: str = "standby", *, ago: float = 0.0, **fields: Any) -> NodeRecord:
    """A node record as a healthy bot publishes it, last seen ``ago`` seconds ago."""
    base: dict[str, Any] = {
        "id": node,
        "role": role,
        "healthy": True,
        "ready": role == "standby",
        "ready_reasons": [] if role == "standby" else ["primary"],
        "epoch": 3,
        "version": "0.1.0",
        "settings_hash": "abc",
        "last_seen": time.time() - ago,
    }
    base.update(fields)
    return NodeRecord(**base)


@contextlib.contextmanager
def running_cluster(workdir: Path, *, primary_within: float = 30.0, **kw: Any) -> Iterator[Any]:
    """A lab cluster (``harness.cluster.Cluster(workdir, topology, **kw)``) in network
    namespaces of its own, started and with a primary; stopped and its namespaces removed
    afterwards. Skips when namespaces or the lab's tools are missing (a failure in CI).
    A scenario that passed is then checked once more: every running node's /status and
    /metrics must say exactly what the recorders see (tests/e2e/outcome.py)."""
    import pytest

    from harness.cluster import Cluster, have_tools
    from harness.vip import Topology, netns_unavailable

    reason = have_tools() or netns_unavailable()
    if reason:
        pytest.skip(reason)
    from tests.e2e.outcome import assert_reports_true

    with Topology() as topo:
        c = Cluster(workdir, topo, **kw)
        try:
            c.start()
            c.wait_primary(within=primary_within)
            yield c
            # Every scenario ends with the exact check of what each running node
            # reports (the old primary too) against the recorders and its own metrics.
            assert_reports_true(c)
        finally:
            c.stop(hand_over=False)  # a test about stopping stops the bots itself
