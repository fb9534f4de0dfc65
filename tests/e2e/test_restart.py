"""End to end: a planned restart in maintenance that outlasts the lease fences nothing.

Design §3: pause -> restart -> resume. When the restart takes longer than the
lease (a real host: ExecStartPre, Python start-up, RestartSec), the key expires
meanwhile; the restarted bot, paused, with the epoch it last held in its state
directory and its services up, takes the free key again with a higher epoch.
"""

from __future__ import annotations

import signal
import time

from harness.cluster import Cluster
from tests.e2e.test_scenarios import (  # noqa: F401 - the fixture
    LEASE,
    QUIET_OUTAGE,
    allow,
    assert_stays,
    cluster,
    settle,
)
from tests.helpers import wait_for_sync


def test_planned_restart_longer_than_the_lease_kills_nothing(cluster: Cluster) -> None:  # noqa: F811
    primary, standby = settle(cluster)
    node = cluster.nodes[primary]
    ast_pid = node.asterisk_pid()
    _, before = node.get("/status")
    epoch = before["epoch"]
    t_pause = time.monotonic()
    assert node.post("/pause", {}) == 202
    cluster.wait_role(primary, "paused", within=10)
    cluster.wait_role(standby, "paused", within=10)
    # Stop the bot as systemd would (its ExecStopPost sees the pause and fences nothing),
    # and keep it down until the lease key has expired on Redis.
    assert node.supervisor is not None
    node.supervisor.send_signal(signal.SIGTERM)
    node.supervisor.wait(30)
    wait_for_sync(
        lambda: (cluster.nodes[standby].status() or {}).get("holder", "?") is None,
        3 * LEASE,
        "the lease key expired",
    )
    cluster.start_bot(primary)
    cluster.wait_role(primary, "paused", within=30)
    assert node.post("/resume", {}) == 202
    cluster.wait_role(primary, "primary", within=15)
    _, after = node.get("/status")
    assert after["epoch"] > epoch, "the key was taken again with a higher epoch"
    assert node.asterisk_pid() == ast_pid, "Asterisk was killed"
    assert_stays(cluster, primary, LEASE)
    cluster.assert_safe(allow(t_pause, max_outage=QUIET_OUTAGE))
