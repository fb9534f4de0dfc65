"""End to end: faults outside one node that a naive agent fights or doubles.

- A test-call fault both nodes share (a broken test extension in a dialplan both
  PBXs use): the primary hands over, the standby's takeover call fails the same
  way. One node must go on serving, degraded and alerting, not both end failed.
- A ``ROUTE`` sent from the other host (``CAUSE=COMMAND``) moves the spans away
  from the lease holder: the primary routes them back and alerts.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from harness.cluster import Cluster
from rseries.simulator import control
from tests.e2e.test_scenarios import (  # noqa: F401 - the fixture
    QUIET,
    QUIET_OUTAGE,
    allow,
    assert_stays,
    cluster,
    events_of,
    settle,
)
from tests.helpers import wait_for_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

HOST = {"a": "A", "b": "B"}


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
