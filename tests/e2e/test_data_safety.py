"""End to end: nothing acknowledged is lost when the replication link breaks.

The DRBD stand-in runs the shipped resource's fencing and split-brain policies and
the bot's own handlers; a client writes through the active node's DRBD; the data
checker (tests/e2e/writes.py) then asks whether any acknowledged write is missing
from the data of a node that was later promoted.

The sequence that lost data: Redis down -> the primary serves on the standby's
promises -> the replication link breaks -> the fence-peer handler cannot reach
Redis -> the primary writes on alone -> Redis back (or restarted empty) -> the
primary's host dies -> the standby, whose disk still said UpToDate, promoted
data without those writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.lab.cluster import RESOURCE, wait_until
from harness.cluster import Cluster, read_role
from harness.replication import Writer, drbd_state, handler_runs
from tests.e2e.writes import check_dir, read_acks
from tests.helpers import running_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

LEASE = 3.0
QUIET = 3 * LEASE  # how long "the standby does not promote" is watched


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path / "cluster", proxied=True, replication=True) as c:
        yield c


def other(node: str) -> str:
    return "b" if node == "a" else "a"


def redis_unreachable(cluster: Cluster, node: str) -> bool:
    status = cluster.nodes[node].status() or {}
    return "Redis unreachable" in status.get("problems", [])


def redis_reachable(cluster: Cluster, node: str) -> bool:
    status = cluster.nodes[node].status() or {}
    return status.get("source") == "redis"


def acked_after(writer: Writer, node: str, count: int, within: float) -> None:
    start = writer.acks_for(node)
    wait_until(lambda: writer.acks_for(node) >= start + count, within, f"{count} writes on {node}")


def ready_reasons(cluster: Cluster, node: str) -> list[str]:
    status = cluster.nodes[node].status() or {}
    for rec in status.get("nodes", []):
        if rec.get("id") == node:
            return [str(r) for r in rec.get("ready_reasons", [])]
    return []


def run_sequence(cluster: Cluster, *, restart_redis_empty: bool) -> None:
    primary = cluster.wait_primary()
    standby = other(primary)
    writer = Writer(cluster, RESOURCE).start()
    try:
        acked_after(writer, primary, 5, 20)

        # Redis down for both bots: the primary serves on the standby's promises.
        cluster.cut(primary, "redis")
        cluster.cut(standby, "redis")
        wait_until(lambda: redis_unreachable(cluster, primary), 15, "the primary to lose Redis")
        assert read_role(cluster.nodes[primary]) == "primary"

        # The replication link breaks; DRBD calls the primary's fence-peer handler.
        cluster.cut_replication()
        runs = handler_runs(cluster)
        assert runs, "DRBD did not call the fence-peer handler"
        # The primary writes on (alone) once its handler has answered.
        acked_after(writer, primary, 5, 20)

        if restart_redis_empty:
            cluster.redis.restart()  # no persistence: every key is gone
        cluster.heal(primary, "redis")
        cluster.heal(standby, "redis")
        wait_until(lambda: redis_reachable(cluster, primary), 20, "the primary to see Redis")
        acked_after(writer, primary, 3, 20)

        # The primary's host dies; its last writes exist only on its own disk.
        cluster.kill_host(primary)
        killed = time.monotonic()
        # Past the lease and a quiet window: the standby never takes the stale data.
        promoted = False
        while time.monotonic() < killed + LEASE + QUIET and not promoted:
            promoted = drbd_state(cluster, RESOURCE)["nodes"][standby]["role"] == "Primary"
            time.sleep(0.2)
    finally:
        writer.stop()
    lost = check_dir(cluster.drbd_dir, cluster.dir / "acks.jsonl", cluster.nodes)
    assert not promoted and not lost, (
        f"the standby promoted: {promoted}; handler runs: {handler_runs(cluster)}; "
        f"{len(lost)} acknowledged writes lost:\n" + "\n".join(map(str, lost[:5]))
    )
    assert read_role(cluster.nodes[standby]) != "primary"
    reasons = ready_reasons(cluster, standby)
    assert any("outdated" in r for r in reasons), reasons


def test_link_flap_while_redis_is_down_never_promotes_stale_data(cluster: Cluster) -> None:
    run_sequence(cluster, restart_redis_empty=False)


def test_same_with_redis_restarted_empty_in_between(cluster: Cluster) -> None:
    run_sequence(cluster, restart_redis_empty=True)


def test_handler_with_redis_down_outdates_the_peer_over_the_peer_channel(
    cluster: Cluster,
) -> None:
    primary = cluster.wait_primary()
    standby = other(primary)
    writer = Writer(cluster, RESOURCE).start()
    try:
        acked_after(writer, primary, 3, 20)
        cluster.cut(primary, "redis")
        wait_until(lambda: redis_unreachable(cluster, primary), 15, "the primary to lose Redis")
        cluster.cut_replication()
        [run] = handler_runs(cluster)
        assert run["node"] == primary and run["exit"] == 4, run
        assert "peer channel: outdated" in run["stdout"], run
        # The peer made its mark durable and DRBD outdated its disk.
        nodes = drbd_state(cluster, RESOURCE)["nodes"]
        assert nodes[standby]["disk"] == "Outdated"
        assert nodes[primary]["pdsk"] == "Outdated"
        assert (cluster.nodes[standby].dir / "state" / "outdated.json").exists()
        # The primary writes on: the peer cannot promote without these writes.
        acked_after(writer, primary, 3, 20)
        wait_until(
            lambda: any("outdated" in r for r in ready_reasons(cluster, standby)),
            3 * LEASE,
            "the standby to report itself not ready",
        )
    finally:
        writer.stop()


def test_handler_with_redis_and_peer_unreachable_keeps_io_frozen(cluster: Cluster) -> None:
    primary = cluster.wait_primary()
    standby = other(primary)
    writer = Writer(cluster, RESOURCE).start()
    try:
        acked_after(writer, primary, 3, 20)
        cluster.cut(primary, "redis", "peer")
        cutter = threading.Thread(target=cluster.cut_replication, daemon=True)
        cutter.start()
        cutter.join(60)
        [run] = [r for r in handler_runs(cluster) if r["node"] == primary]
        assert run["exit"] not in (3, 4, 5, 7), run
        assert "peer NOT outdated" in run["stderr"], run
        link_lost_at = float(run["t0"])  # DRBD calls the handler as the link breaks
        nodes = drbd_state(cluster, RESOURCE)["nodes"]
        assert nodes[standby]["disk"] == "UpToDate"
        # The standby, with Redis, takes over; the old primary's data never diverged.
        cluster.wait_serving(standby, within=30)
        acked_after(writer, standby, 3, 20)
    finally:
        writer.stop()
    acks = read_acks(cluster.dir / "acks.jsonl")
    # Nothing was acknowledged by the cut-off primary after the link broke...
    late = [a for a in acks if a.node == primary and a.t > link_lost_at]
    assert not late, late[:3]
    assert writer.frozen > 0  # ...its writes waited on frozen I/O instead
    lost = check_dir(cluster.drbd_dir, cluster.dir / "acks.jsonl", cluster.nodes)
    assert not lost, "\n".join(map(str, lost[:5]))
