"""End to end with ARI health on: the lab's simulated Asterisk also serves ARI.

A standby's ARI (and AMI) fails while its Asterisk is stopped by design; that
must not count against it once it takes over. An ARI that really stops
answering on a running primary must still lead to a hand-over.
"""

from __future__ import annotations

import time

from harness.cluster import Cluster
from tests.e2e.test_scenarios import LEASE, allow, cluster, events_of, settle
from tests.helpers import wait_for_sync

__all__ = ["cluster"]  # the fixture, shared with the other scenarios

ARI_GRACE = 5.0  # health.ari_grace (default; the lab does not change it)
FAILURE_WORDS = ("ARI ping failing", "restarting Asterisk", "demoting", "unhealthy")


def _messages(c: Cluster, node: str) -> list[str]:
    return [f"{e.get('kind')}: {e.get('message')}" for e in events_of(c, node)]


def test_host_death_new_primary_stays_primary_with_ari(cluster: Cluster) -> None:
    primary, standby = settle(cluster)
    # Precondition of the fault: the standby's ARI has been failing (its Asterisk is
    # stopped) for longer than ari_grace, as on any standby that has run for a while.
    wait_for_sync(
        lambda: time.monotonic() - cluster.t0 > ARI_GRACE + 1.0, 20, "standby older than grace"
    )
    t_fault = time.monotonic()
    cluster.kill_host(primary)
    cluster.wait_serving(standby, within=20)
    node = cluster.nodes[standby]
    pid = node.asterisk_pid()
    assert pid is not None
    deadline = time.monotonic() + 3 * LEASE
    while time.monotonic() < deadline:
        assert node.role() == "primary", "the new primary left the role:\n" + "\n".join(
            _messages(cluster, standby)
        )
        assert node.asterisk_pid() == pid, "the new primary restarted its Asterisk"
        time.sleep(0.2)
    bad = [m for m in _messages(cluster, standby) if any(w in m for w in FAILURE_WORDS)]
    assert not bad, bad
    cluster.assert_safe(allow(t_fault, max_outage=8.0))


def test_ari_that_stops_answering_hands_over(cluster: Cluster) -> None:
    primary, standby = settle(cluster)
    t_fault = time.monotonic()
    cluster.nodes[primary].ami_control_cmd({"cmd": "ari_stall"})
    t_served = cluster.wait_serving(standby, within=30)
    # Not before the grace: a short ARI hiccup is no reason.
    assert t_served - t_fault >= ARI_GRACE
    assert any("ARI ping failing" in m for m in _messages(cluster, primary)), _messages(
        cluster, primary
    )
    cluster.assert_safe(allow(t_fault, max_outage=12.0))
