"""End to end on the lab pair: a certain death needs no grace.

``health.ami_grace`` is a minute here (and so are the ARI grace and the boot
timeout, the other rules that would see a dead Asterisk by the clock), far longer
than any of these scenarios may take. An Asterisk killed on the primary (its AMI
link closes, the status command finds no process) is handed over at once all the
same; an AMI link lost while the process still runs is ambiguous, and nothing
moves within the watched window.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import Cluster
from tests.e2e.test_scenarios import (
    QUIET,
    allow,
    assert_stays,
    events_of,
    settle,
    took_over,
    watch,
)
from tests.helpers import running_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GRACE = 60.0
GONE = "Asterisk process gone (status check) and the AMI link closed"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    # Every rule that would see a dead Asterisk by the clock waits a minute here; and a
    # start command slowed by a loaded machine (5 s in the lab) must not fail the takeover.
    slow = f"{GRACE:g}s"
    extra = {
        "health": {"ami_grace": slow, "ari_grace": slow},
        "asterisk": {"boot_timeout": slow, "command_timeout": "20s"},
    }
    with running_cluster(tmp_path / "cluster", extra=extra) as c:
        yield c


def test_a_killed_asterisk_hands_over_without_the_grace(cluster: Cluster) -> None:
    primary, standby = settle(cluster)
    pid = cluster.nodes[primary].asterisk_pid()
    assert pid is not None
    before, epoch = watch(cluster, standby)
    t_fault = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    # Within a third of the grace: only the process rule can have moved it.
    cluster.wait_serving(standby, within=GRACE / 3)
    cluster.assert_safe(allow(t_fault, max_outage=GRACE / 3))
    took_over(cluster, standby, before, epoch, "health")
    demoting = [
        e["message"]
        for e in events_of(cluster, primary)
        if e.get("kind") == "role" and e.get("role") == "demoting"
    ]
    assert demoting and GONE in demoting[-1], demoting


def test_the_ami_link_lost_while_asterisk_runs_waits_the_grace(cluster: Cluster) -> None:
    primary, _ = settle(cluster)
    pid = cluster.nodes[primary].asterisk_pid()
    t_fault = time.monotonic()
    # Nothing answers on AMI and the sessions are cut; the process runs on.
    cluster.nodes[primary].ami_control_cmd({"cmd": "stall"})
    cluster.nodes[primary].ami_control_cmd({"cmd": "drop"})
    assert_stays(cluster, primary, QUIET)
    assert cluster.nodes[primary].asterisk_pid() == pid
    assert not [e for e in events_of(cluster, primary) if e.get("kind") == "demotion"]
    cluster.assert_safe(allow(t_fault, max_outage=QUIET + 1.0))
