"""End to end: the DRBD ``outdated`` mark on the cluster bus is reconciled.

The replication link breaks (the primary's fence-peer handler marks the standby
outdated), comes back and resynchronises while the standby cannot reach Redis, so
its ``after-resync-target`` handler cannot clear the mark on the bus. With Redis
back, the standby is UpToDate and connected: it must clear its own mark and be
ready, and take over when the primary's host dies.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.lab.cluster import RESOURCE, wait_until
from harness.cluster import Cluster
from harness.replication import Writer, drbd_state, handler_runs
from tests.e2e.test_data_safety import acked_after, other, ready_reasons, redis_unreachable
from tests.e2e.test_scenarios import SAFE
from tests.e2e.writes import check_dir
from tests.helpers import running_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

LEASE = 3.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path / "cluster", proxied=True, replication=True) as c:
        yield c


def ready(cluster: Cluster, node: str) -> bool:
    status = cluster.nodes[node].status() or {}
    return any(r.get("id") == node and r.get("ready") for r in status.get("nodes", []))


def test_replication_blip_during_a_redis_blip_then_host_death(cluster: Cluster) -> None:
    primary = cluster.wait_primary()
    standby = other(primary)
    wait_until(lambda: ready(cluster, standby), 20, f"{standby} ready")
    writer = Writer(cluster, RESOURCE).start()
    try:
        acked_after(writer, primary, 3, 20)
        cluster.cut_replication()
        assert [r["exit"] for r in handler_runs(cluster)] == [4], handler_runs(cluster)
        wait_until(
            lambda: any("outdated" in r for r in ready_reasons(cluster, standby)),
            3 * LEASE,
            f"{standby} marked outdated",
        )
        acked_after(writer, primary, 3, 20)  # something to resynchronise

        # The link comes back while the standby cannot reach Redis: its
        # after-resync-target handler cannot clear the mark on the bus.
        cluster.cut(standby, "redis")
        wait_until(lambda: redis_unreachable(cluster, standby), 15, f"{standby} loses Redis")
        cluster.heal_replication()
        resync = handler_runs(cluster, "after-resync-target")
        assert resync and resync[-1]["node"] == standby and resync[-1]["exit"] != 0, resync
        assert drbd_state(cluster, RESOURCE)["nodes"][standby]["disk"] == "UpToDate"
        cluster.heal(standby, "redis")

        # UpToDate and connected with Redis back: the standby clears its own mark.
        wait_until(
            lambda: ready(cluster, standby),
            3 * LEASE,
            f"{standby} ready again (ready reasons: {ready_reasons(cluster, standby)})",
        )
        cluster.kill_host(primary)
        killed = time.monotonic()
        cluster.wait_serving(standby, within=LEASE + 20)
        assert time.monotonic() - killed < LEASE + 20
    finally:
        writer.stop()
    lost = check_dir(cluster.drbd_dir, cluster.dir / "acks.jsonl", cluster.nodes)
    assert not lost, "\n".join(map(str, lost[:5]))
    cluster.assert_safe(SAFE)
