"""End to end with two real Asterisks (``asterisk="real"``): the bots start, stop, kill and
test-call real processes. The checker sees their real pids (the pid sampler) and their
real FullyBooted (an AMI watcher outside the bots). Span alarms stay with the simulator
scenarios (no DAHDI hardware here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ami.client import AmiClient
from bench.probe import ClientProbe
from bot.lab.cluster import pid_alive
from harness.cluster import Cluster
from tests.e2e.test_scenarios import allow, settle
from tests.helpers import require_asterisk, running_cluster, wait_for_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

STOP_GRACEFUL = 2.0  # the lab's `core stop gracefully` wait before `core stop now`


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    binary = require_asterisk()
    with running_cluster(
        tmp_path / "cluster",
        primary_within=40,
        asterisk="real",
        asterisk_binary=binary,
        stop_graceful=STOP_GRACEFUL,
    ) as c:
        yield c


def booted_pids(c: Cluster, node: str) -> list[int]:
    """Pids the outside AMI watcher saw reach FullyBooted on ``node``."""
    return [r["pid"] for r in c.boot_recorders[node].seen if r["event"] == "fully_booted"]


def real_settle(c: Cluster) -> tuple[str, str]:
    primary, standby = settle(c)
    pid = c.nodes[primary].asterisk_pid()
    assert pid is not None and Path(f"/proc/{pid}/exe").resolve().name.startswith("asterisk")
    wait_for_sync(lambda: pid in booted_pids(c, primary), 10, "FullyBooted seen from outside")
    return primary, standby


def originate_hold(c: Cluster, node: str, hold: str) -> None:
    """A real call on ``node``: Local/hold@lab (answers, waits HOLD s) bridged to Wait(600)."""

    async def call() -> None:
        secret = (c.dir / "ami.secret").read_text().strip()
        client = AmiClient("127.0.0.1", c.nodes[node].ami_port, "failover", secret)
        await client.start()
        try:
            await client.wait_fully_booted(10)
            answer = await client.send_action(
                {
                    "Action": "Originate",
                    "Channel": "Local/hold@lab",
                    "Application": "Wait",
                    "Data": "600",
                    "Variable": f"HOLD={hold}",
                    "Async": "true",
                    "Timeout": "5000",
                },
                limit=10,
            )
            event = answer[-1] if isinstance(answer, list) else answer
            assert event.get("Response") == "Success", dict(event)
            assert await client.active_channels() == 2
        finally:
            await client.close()

    asyncio.run(call())


def channels(c: Cluster, node: str) -> int:
    async def count() -> int:
        secret = (c.dir / "ami.secret").read_text().strip()
        client = AmiClient("127.0.0.1", c.nodes[node].ami_port, "failover", secret)
        await client.start()
        try:
            await client.wait_connected(5)
            return await client.active_channels()
        finally:
            await client.close()

    return asyncio.run(count())


def primary_node_log(c: Cluster, node: str) -> str:
    rt = c.nodes[node].runtime
    assert rt is not None
    return rt.command_log.read_text()


def test_host_death_fails_over_to_a_real_asterisk(cluster: Cluster) -> None:
    primary, standby = real_settle(cluster)
    topo = cluster.topology
    assert topo is not None
    with ClientProbe(topo.ns("client"), topo.vip_address) as probe:
        t_fault = time.monotonic()
        cluster.kill_host(primary)
        cluster.wait_serving(standby, within=30)
        new_pid = cluster.nodes[standby].asterisk_pid()
        wait_for_sync(
            lambda: new_pid in booted_pids(cluster, standby), 10, "FullyBooted on standby"
        )
        # A caller's device reaches the new primary's Asterisk on the floating address
        # (bench/failover.py's "answer" column with a real Asterisk).
        answered = probe.wait("answered", t_fault, 10, mac=topo.mac(standby))
    obs = cluster.assert_safe(allow(t_fault, max_outage=12.0))
    assert any(i.node == standby and i.end > t_fault for i in obs.asterisk_booted)
    booted = min(i.start for i in obs.asterisk_booted if i.node == standby and i.end > t_fault)
    # Asterisk's HTTP server is up shortly before FullyBooted; never long after it.
    assert answered - t_fault <= booted - t_fault + 1.0, (answered - t_fault, booted - t_fault)


def test_asterisk_sigkill_hands_over(cluster: Cluster) -> None:
    primary, standby = real_settle(cluster)
    pid = cluster.nodes[primary].asterisk_pid()
    assert pid is not None
    t_fault = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    cluster.wait_serving(standby, within=30)
    cluster.assert_safe(allow(t_fault, max_outage=12.0))


def test_asterisk_sigstop_hands_over(cluster: Cluster) -> None:
    primary, standby = real_settle(cluster)
    pid = cluster.nodes[primary].asterisk_pid()
    assert pid is not None
    t_fault = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        cluster.wait_serving(standby, within=30)
        # The old primary kills the hung process (a stopped one cannot `core stop`).
        wait_for_sync(lambda: not pid_alive(pid), 30, "the hung Asterisk killed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert primary_node_log(cluster, primary).count("console silent"), "stop did not escalate"
    # A stopped Asterisk still "runs" until killed: only safety is checked across it.
    cluster.assert_safe(allow(t_fault, max_outage=15.0))


def test_switchover_drains_a_real_call_before_stopping(cluster: Cluster) -> None:
    primary, standby = real_settle(cluster)
    node = cluster.nodes[primary]
    assert node.runtime is not None
    old_pid = node.asterisk_pid()
    originate_hold(cluster, primary, "4")
    t_call = time.monotonic()
    assert node.post("/switchover", {"to": standby, "drain_timeout": 30}) == 202
    wait_for_sync(lambda: channels(cluster, primary) == 0, 15, "the call to end by itself")
    t_drained = time.monotonic()
    assert t_drained - t_call > 3.0, "the call was cut before it ended"
    cluster.wait_serving(standby, within=30)
    log = node.runtime.command_log.read_text()
    assert f"pid {old_pid}: stopped gracefully" in log, log
    assert "core stop now" not in log, log
    cluster.assert_safe(allow(t_drained, max_outage=10.0))


def test_drain_timeout_ends_with_core_stop_gracefully_then_now(cluster: Cluster) -> None:
    primary, standby = real_settle(cluster)
    node = cluster.nodes[primary]
    assert node.runtime is not None
    old_pid = node.asterisk_pid()
    originate_hold(cluster, primary, "600")
    t_fault = time.monotonic()
    assert node.post("/switchover", {"to": standby, "drain_timeout": 2}) == 202
    cluster.wait_serving(standby, within=40)
    log = node.runtime.command_log.read_text()
    graceful = log.index(f"pid {old_pid}: core stop gracefully")
    now = log.index(f"pid {old_pid}: core stop now")
    assert graceful < now < log.index(f"pid {old_pid}: stopped"), log
    cluster.assert_safe(allow(t_fault, max_outage=20.0))
