"""The fast timing profile (deploy/examples/fast-a.toml) through representative safety
scenarios, each ending with the independent checker. The deadlines asserted here are
generous behavioural bounds; speed is measured by ``make bench``, not here."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import parse_duration
from bot.unitcheck import FAST_NICE
from harness.checker import Allowance
from harness.cluster import Cluster
from tests.helpers import running_cluster, wait_for_sync

# A 600 ms lease with a 50 ms Redis timeout asks for a machine that is not saturated (the
# guide: Nice=-10, Redis on a host of its own): these run alone, after the parallel run.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120), pytest.mark.quiet]

FAST = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "fast-a.toml"
SAMPLE = 0.05


def fast_settings() -> dict[str, dict[str, Any]]:
    data = tomllib.loads(FAST.read_text())
    cluster = {
        k: data["cluster"][k]
        for k in ("lease_ttl", "renew_interval", "drift_margin", "fence_budget")
    }
    return {"cluster": cluster, "redis": {"timeout": data["redis"]["timeout"]}}


SETTINGS = fast_settings()
NICE = FAST_NICE  # check-config --host asks the fast profile for it
LEASE = parse_duration(SETTINGS["cluster"]["lease_ttl"])
WATCHDOG = (
    LEASE
    - parse_duration(SETTINGS["cluster"]["renew_interval"])
    - parse_duration(SETTINGS["cluster"]["fence_budget"])
)


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    proxied = request.node.get_closest_marker("proxied") is not None
    # The witnesses (the recorders' threads, started from this thread) run at the nodes'
    # priority: below it, a node busy taking over would hide itself from them.
    before = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, NICE)
    try:
        yield from _cluster(tmp_path, proxied)
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


def _cluster(tmp_path: Path, proxied: bool) -> Iterator[Cluster]:
    with running_cluster(
        tmp_path / "cluster",
        proxied=proxied,
        lease_ttl=SETTINGS["cluster"]["lease_ttl"],
        renew_interval=SETTINGS["cluster"]["renew_interval"],
        watchdog_sec=WATCHDOG,
        nice=NICE,  # as the guide's drop-in for the fast profile says
        extra={"cluster": dict(SETTINGS["cluster"]), "redis": dict(SETTINGS["redis"])},
    ) as c:
        yield c


def allow(start: float, max_outage: float) -> Allowance:
    return Allowance(
        window=(start, time.monotonic()),
        max_outage=max_outage,
        sample_tolerance=SAMPLE,
        route_tolerance=1.0,
    )


def other(node: str) -> str:
    return "b" if node == "a" else "a"


def settle(c: Cluster) -> tuple[str, str]:
    primary = c.wait_primary(within=30)
    standby = other(primary)
    c.wait_role(standby, "standby", within=20)

    def ready() -> bool:
        status = c.nodes[standby].status() or {}
        return any(n.get("id") == standby and n.get("ready") for n in status.get("nodes", []))

    wait_for_sync(ready, 20, f"{standby} ready")
    return primary, standby


def test_fast_profile_is_what_the_example_ships() -> None:
    assert LEASE <= 0.5
    assert WATCHDOG > 0


def test_fast_host_death_then_old_primary_rejoins(cluster: Cluster) -> None:
    primary, standby = settle(cluster)
    t_fault = time.monotonic()
    cluster.kill_host(primary)
    cluster.wait_serving(standby, within=20)
    cluster.assert_safe(allow(t_fault, max_outage=8.0))
    cluster.revive_host(primary)
    cluster.wait_role(primary, "standby", within=20)
    cluster.assert_safe(Allowance(sample_tolerance=SAMPLE, route_tolerance=1.0))


def test_fast_bot_sigstop_never_acts_as_primary_after_waking(cluster: Cluster) -> None:
    primary, standby = settle(cluster)
    pid = cluster.nodes[primary].bot_pid()
    assert pid is not None
    t_fault = time.monotonic()
    cluster.kill_bot(primary, signal.SIGSTOP)
    try:
        cluster.wait_serving(standby, within=20)
        time.sleep(4 * LEASE)  # the fault's duration, not a wait for anything
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    cluster.wait_role(primary, "standby", within=20)
    cluster.assert_safe(allow(t_fault, max_outage=10.0))


@pytest.mark.proxied
def test_fast_primary_cut_from_redis_and_peer_demotes_before_takeover(cluster: Cluster) -> None:
    primary, standby = settle(cluster)
    t_fault = time.monotonic()
    cluster.cut(primary, "redis", "peer")
    cluster.wait_serving(standby, within=20)
    wait_for_sync(lambda: not cluster.holds_vip(primary), 5, f"{primary} without the VIP")
    cluster.assert_safe(allow(t_fault, max_outage=10.0))
