"""End to end: faults around a node that a naive agent fights, doubles or waits out.

- A test-call fault both nodes share (a broken test extension in a dialplan both
  PBXs use): the primary hands over, the standby's takeover call fails the same
  way. One node must go on serving, degraded and alerting, not both end failed.
- A ``ROUTE`` sent from the other host (``CAUSE=COMMAND``) moves the spans away
  from the lease holder: the primary routes them back and alerts.
- The primary's links to Redis and its peer freeze (requests in flight hang)
  while the appliance stops answering it: its fence starts on time all the
  same, before the standby may take over.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import Cluster
from rseries.simulator import control
from tests.e2e.outcome import after_takeover, assert_took_over
from tests.e2e.test_scenarios import (  # noqa: F401 - the fixture
    QUIET,
    QUIET_OUTAGE,
    SAMPLE,
    allow,
    assert_stays,
    cluster,
    events_of,
    settle,
    watch,
)
from tests.helpers import running_cluster, wait_for_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120), pytest.mark.xdist_group("timing")]

HOST = {"a": "A", "b": "B"}
OVERRUN = re.compile(
    r"fence_overrun: .* took (?P<took>[\d.]+) s against cluster.fence_budget (?P<budget>[\d.]+) s"
)
SLOW_LEASE = 6.0


def node_record(c: Cluster, node: str) -> dict[str, Any]:
    body = c.nodes[node].status() or {}
    return next((n for n in body.get("nodes", []) if n.get("id") == node), {})


def alerts(c: Cluster, node: str, kind: str) -> list[str]:
    return [str(e.get("message")) for e in events_of(c, node) if e.get("kind") == kind]


def test_a_test_call_fault_both_nodes_share_leaves_one_node_serving_degraded(
    cluster: Cluster,  # noqa: F811
) -> None:
    primary, standby = settle(cluster)
    t_fault = time.monotonic()
    cluster.dialplan_file.write_text(json.dumps({"test": {"100": "congestion"}}))
    # The primary's own test calls fail: it hands over to the ready standby ...
    cluster.wait_serving(standby, within=30)
    # ... whose takeover call fails the same way: it keeps the service, degraded.
    wait_for_sync(
        lambda: node_record(cluster, standby).get("extra", {}).get("degraded") is True,
        15,
        f"{standby} serving degraded",
    )
    assert any("test call fails" in m for m in alerts(cluster, standby, "degraded"))
    assert_stays(cluster, standby, QUIET)
    roles = {n: cluster.nodes[n].role() for n in (primary, standby)}
    assert roles == {primary: "standby", standby: "primary"}, roles
    assert [node_record(cluster, n).get("failed_until") for n in (primary, standby)] == [None, None]
    # The hand-over's gap plus the degraded primary's own Asterisk restarts (no peer to
    # hand to): a bounded outage, never one for the failed hold-down.
    cluster.assert_safe(allow(t_fault, max_outage=5.0))


def test_spans_moved_away_by_a_command_are_routed_back(cluster: Cluster) -> None:  # noqa: F811
    primary, standby = settle(cluster)
    t_fault = time.monotonic()
    moved = asyncio.run(
        control(cluster.rseries_control, {"cmd": "route", "link": standby, "host": HOST[standby]})
    )
    assert moved["ok"] and moved["active"] == HOST[standby], moved

    def active() -> str | None:
        state = asyncio.run(control(cluster.rseries_control, {"cmd": "state"}))
        return str(state.get("active"))

    wait_for_sync(lambda: active() == HOST[primary], 5, "the spans back on the primary")
    wait_for_sync(
        lambda: any("routing them back" in m for m in alerts(cluster, primary, "rseries")),
        5,
        "the route-back alert",
    )
    assert_stays(cluster, primary, 1.0)
    # The checker's route rule (spans follow the lease within 1 s) holds over the move.
    cluster.assert_safe(allow(t_fault, max_outage=QUIET_OUTAGE))


def appliance(c: Cluster, **cmd: object) -> dict[str, Any]:
    answer = asyncio.run(control(c.rseries_control, dict(cmd)))
    assert answer["ok"], answer
    return answer


def recorder_gap(c: Cluster, *names: str) -> float:
    """The longest gap between two samples of the named recorders (the sampling period
    when the machine kept up, more when it did not)."""
    samplers = {"lease": c.lease_sampler, "vip": c.vip_sampler, "pid": c.pid_sampler}
    samplers["drbd"] = c.drbd_sampler
    gaps = [s.max_gap for n, s in samplers.items() if n in names and s is not None]
    return max([SAMPLE, *gaps])


def fence_overrun(c: Cluster, node: str) -> float:
    """How far past cluster.fence_budget the node reported (alerted) its first fence ran;
    0 when it reported none. Read from its log: the status shows only the last events,
    and a node cut off from Redis has none on the bus."""
    found = OVERRUN.search(c.nodes[node].bot_log.read_text(errors="replace"))
    return float(found["took"]) - float(found["budget"]) if found else 0.0


@pytest.fixture
def slow_redis_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Proxied, with a Redis command timeout (2 s) four times the fence budget (0.5 s), as
    over a slow link to a remote Sentinel, and a lease long enough for it (6 s): a renewal
    in flight at the fence deadline would hold the fence back past the end of the lease.
    The watchdog (5 s) outlasts a cycle that waits on Redis, so the bot fences itself."""
    with running_cluster(
        tmp_path / "cluster",
        proxied=True,
        lease_ttl=f"{SLOW_LEASE:g}s",
        watchdog_sec=5.0,
        extra={"redis": {"timeout": "2s"}},
    ) as c:
        yield c


def test_frozen_links_and_a_silent_appliance_do_not_delay_the_fence(
    slow_redis_cluster: Cluster,
) -> None:
    c = slow_redis_cluster
    primary, standby = settle(c)
    before, epoch = watch(c, standby)
    t_fault = time.monotonic()
    appliance(c, cmd="stall", link=primary)  # reads the old primary's lines, answers none
    c.cut(primary, "redis", "peer", existing="freeze")  # its renewal in flight hangs
    c.wait_serving(standby, within=20)
    wait_for_sync(lambda: not c.holds_vip(primary), 5, f"{primary} without the VIP")
    seen = c.assert_safe(allow(t_fault, max_outage=10.0))
    # The fence started at the old primary's own deadline (lease_ttl - drift - fence_budget
    # after its last renewal), not when a hung renewal gave up: its services were gone
    # before its lease key ran out on Redis, unless the fence itself outlasted its budget
    # (a busy machine) and the node counted and said so, with how long it took.
    assert seen.lease is not None
    key_gone = max(iv.end for iv in seen.lease if iv.node == primary)
    services = [*seen.vip, *seen.asterisk_running, *seen.drbd_primary]
    fenced = max(iv.end for iv in services if iv.node == primary)
    address_gone = max(iv.end for iv in seen.vip if iv.node == primary)
    # Each interval's end is known to one sampling period, as long as the samplers
    # actually kept their pace on this machine: their measured longest gaps.
    tolerance = recorder_gap(c, "lease") + recorder_gap(c, "vip", "pid", "drbd")
    overrun = fence_overrun(c, primary)
    timeline = seen.timeline(t_fault)
    assert address_gone <= key_gone + tolerance, (
        f"{primary} held the address {address_gone - key_gone:.3f} s after its lease key "
        f"expired (tolerance {tolerance:.3f} s)\n{timeline}"
    )
    assert fenced <= key_gone + tolerance + overrun, (
        f"{primary} still served {fenced - key_gone:.3f} s after its lease key expired "
        f"(tolerance {tolerance:.3f} s, reported fence overrun {overrun:.3f} s)\n{timeline}"
    )
    after = after_takeover(c, standby, epoch)
    assert_took_over(before, after, reason="host_lost", epoch=epoch, lease_ttl=SLOW_LEASE)
    assert appliance(c, cmd="state")["active"] == HOST[standby]
