"""End to end: an Asterisk restart in flight when the lease runs out starts nothing after the
fence (design §3: the fence cancels every running job first; a restart starts Asterisk only
while the lease is valid).

The primary restarts its Asterisk (red alarms on every critical span, and the standby
cordoned, so there is nobody to hand over to); the simulated Asterisk takes
``STOP_DELAY`` to stop, as a real one does with calls up, longer than the lease. During
that stop the primary is cut off from Redis and from its peer, and the standby becomes
eligible again: the old primary must fence and never start Asterisk again while the new
primary serves.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import Cluster
from tests.e2e.test_scenarios import allow, events_of, settle
from tests.helpers import running_cluster, wait_for_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

STOP_DELAY = 4.0  # the simulated Asterisk's graceful stop: longer than the lease (3 s)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path / "cluster", proxied=True, sim_stop_delay=STOP_DELAY) as c:
        yield c


def test_a_restart_in_flight_at_the_partition_starts_nothing_after_the_fence(
    cluster: Cluster,
) -> None:
    primary, standby = settle(cluster)
    node = cluster.nodes[primary]
    assert node.post("/cordon", {"node": standby}) == 202
    cluster.wait_role(standby, "cordoned", within=10)
    for span in (1, 2):
        node.ami_control_cmd({"cmd": "span_alarm", "span": span, "kind": "red"})
    wait_for_sync(
        lambda: any(
            "restarting Asterisk" in str(e.get("message")) for e in events_of(cluster, primary)
        ),
        15,
        "the primary restarting its Asterisk",
    )
    old_pid = node.asterisk_pid()
    t_fault = time.monotonic()
    cluster.cut(primary, "redis", "peer")
    assert cluster.nodes[standby].post("/uncordon", {"node": standby}) == 202
    cluster.wait_serving(standby, within=20)
    # Past the end of the slow stop and a start after it: the old primary's Asterisk never
    # runs again (the fault's duration, not a wait for anything).
    deadline = t_fault + STOP_DELAY + 3.0
    while time.monotonic() < deadline:
        pid = node.asterisk_pid()
        assert pid is None or pid == old_pid, f"{primary} started Asterisk {pid} after its fence"
        time.sleep(0.1)
    # No two Asterisks, addresses or DRBD primaries at any moment (the independent checker),
    # and no Asterisk started on the old primary after it was cut off: a start that the next
    # fence kills within milliseconds is still a start after the fence.
    seen = cluster.assert_safe(allow(t_fault, max_outage=12.0))
    late = [iv for iv in seen.asterisk_running if iv.node == primary and iv.start > t_fault]
    assert not late, f"{primary} started Asterisk after the fence:\n" + seen.timeline(t_fault)
