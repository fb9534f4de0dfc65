"""End to end: two bots, real Redis, the simulators, the floating IP in namespaces.

Every scenario ends with the independent checker (harness/checker.py) over
what the recorders saw: never two holders of the floating IP, Asterisk or DRBD
Primary at once, the spans following the lease, and no outage longer than the
scenario allows. Scenarios in which nothing must happen watch for a fixed,
stated window (``QUIET``: three lease times).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.lab.cluster import supervisor_records
from bot.metrics import FAILOVER_REASONS, SELF_FENCE_REASONS
from harness.checker import Allowance
from harness.cluster import Cluster, read_role
from tests.e2e.outcome import (
    Snapshot,
    after_takeover,
    assert_no_self_fence,
    assert_rseries_agrees,
    assert_took_over,
    self_fences,
    snapshot,
)
from tests.helpers import running_cluster, wait_for_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LEASE = 3.0
QUIET = 3 * LEASE  # the window in which "nothing happens" is watched
SAMPLE = 0.05  # sampling error allowed for the VIP and pid recorders


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    proxied = request.node.get_closest_marker("proxied") is not None
    with running_cluster(tmp_path / "cluster", proxied=proxied) as c:
        yield c


def allow(start: float, max_outage: float) -> Allowance:
    """From ``start`` until now: no two holders, and no working primary (floating IP and a
    fully booted Asterisk on one node) missing for longer than ``max_outage`` seconds."""
    return Allowance(
        window=(start, time.monotonic()),
        max_outage=max_outage,
        sample_tolerance=SAMPLE,
        route_tolerance=1.0,
    )


SAFE = Allowance(sample_tolerance=SAMPLE, route_tolerance=1.0)  # safety only, no availability
QUIET_OUTAGE = 2 * SAMPLE  # "no outage": only the recorders' sampling error


def other(node: str) -> str:
    return "b" if node == "a" else "a"


def settle(c: Cluster) -> tuple[str, str]:
    """The current primary and standby, once the standby is ready."""
    primary = c.wait_primary(within=30)
    standby = other(primary)
    c.wait_role(standby, "standby", within=20)
    wait_for_sync(
        lambda: _ready(c, standby),
        20,
        f"{standby} ready",
    )
    return primary, standby


def _ready(c: Cluster, node: str) -> bool:
    status, body = c.nodes[node].get("/status")
    if status != 200:
        return False
    return any(n["id"] == node and n.get("ready") for n in body.get("nodes", []))


def events_of(c: Cluster, node: str) -> list[dict]:
    status, body = c.nodes[node].get("/status")
    return list(body.get("events", [])) if status == 200 else []


def status_cli(c: Cluster, node: str) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "status",
            "--json",
            "--config",
            str(c.nodes[node].config_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=c.env(c.nodes[node]),
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def watch(c: Cluster, node: str) -> tuple[Snapshot, int]:
    """Before a fault: the reports of the node expected to take over, and the epoch it
    must take over at (one above the current one)."""
    before = snapshot(c.nodes[node])
    return before, int(before.status["epoch"]) + 1


def took_over(c: Cluster, node: str, before: Snapshot, epoch: int, reason: str) -> Snapshot:
    """After the fault: ``node`` reports exactly one takeover at ``epoch`` for ``reason``."""
    after = after_takeover(c, node, epoch)
    assert_took_over(before, after, reason=reason, epoch=epoch, lease_ttl=LEASE)
    assert_rseries_agrees(c, node)
    return after


def assert_stays(c: Cluster, primary: str, window: float) -> None:
    """Nothing moves for ``window`` seconds: the same primary, the other never primary."""
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        assert read_role(c.nodes[other(primary)]) != "primary", "the standby took over"
        time.sleep(0.2)
    assert c.primary() == primary


def test_host_death_then_old_primary_rejoins_as_standby(cluster: Cluster) -> None:
    """Scenarios 1 and 14."""
    primary, standby = settle(cluster)
    before, epoch = watch(cluster, standby)
    t_fault = time.monotonic()
    cluster.kill_host(primary)
    t_served = cluster.wait_serving(standby, within=20)
    assert t_served - t_fault < 10
    cluster.assert_safe(allow(t_fault, max_outage=8.0))
    after = took_over(cluster, standby, before, epoch, "host_lost")
    # 14: the old primary comes back and rejoins as standby; no failback, no outage.
    t_back = time.monotonic()
    cluster.revive_host(primary)
    cluster.wait_role(primary, "standby", within=20)
    assert_stays(cluster, standby, LEASE)
    cluster.assert_safe(allow(t_back, max_outage=QUIET_OUTAGE))
    # The rejoin changed nothing on the primary: same epoch, no new takeover or fence.
    again = snapshot(cluster.nodes[standby])
    assert (again.status["holder"], again.status["epoch"]) == (standby, epoch)
    assert again.status["last_takeover"] == after.status["last_takeover"]
    assert again.value("failoverbot_takeover_duration_seconds_count") == after.value(
        "failoverbot_takeover_duration_seconds_count"
    )
    assert_no_self_fence(after, again)


def test_bot_sigkill_supervisor_fences_and_standby_takes_over(cluster: Cluster) -> None:
    """Scenario 2: only the bot dies; its Asterisk keeps running until fence-local."""
    primary, standby = settle(cluster)
    before, epoch = watch(cluster, standby)
    t_fault = time.monotonic()
    cluster.kill_bot(primary, signal.SIGKILL)
    cluster.wait_serving(standby, within=20)
    cluster.wait_role(primary, "standby", within=20)
    cluster.assert_safe(allow(t_fault, max_outage=10.0))
    took_over(cluster, standby, before, epoch, "host_lost")


def test_bot_sigstop_never_acts_as_primary_after_waking(cluster: Cluster) -> None:
    """Scenario 3: SIGSTOP for twice the lease, then SIGCONT."""
    primary, standby = settle(cluster)
    pid = cluster.nodes[primary].bot_pid()
    assert pid is not None
    before, epoch = watch(cluster, standby)
    t_fault = time.monotonic()
    cluster.kill_bot(primary, signal.SIGSTOP)
    try:
        cluster.wait_serving(standby, within=20)
        time.sleep(2 * LEASE)  # the fault's duration, not a wait for anything
    finally:
        # The supervisor's watchdog has most likely killed it already, as systemd would.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert_stays(cluster, standby, LEASE)
    cluster.assert_safe(allow(t_fault, max_outage=10.0))
    took_over(cluster, standby, before, epoch, "host_lost")


def test_asterisk_crash_hands_over(cluster: Cluster) -> None:
    """Scenario 4."""
    primary, standby = settle(cluster)
    pid = cluster.nodes[primary].asterisk_pid()
    assert pid is not None
    before, epoch = watch(cluster, standby)
    t_fault = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    cluster.wait_serving(standby, within=20)
    cluster.assert_safe(allow(t_fault, max_outage=10.0))
    took_over(cluster, standby, before, epoch, "health")


def test_ami_stall_hands_over(cluster: Cluster) -> None:
    """Scenario 5: the socket stays open, nothing answers."""
    primary, standby = settle(cluster)
    before, epoch = watch(cluster, standby)
    t_fault = time.monotonic()
    cluster.nodes[primary].ami_control_cmd({"cmd": "stall"})
    cluster.wait_serving(standby, within=20)
    # The stalled Asterisk still "runs": a working primary is counted by FullyBooted+VIP.
    cluster.assert_safe(allow(t_fault, max_outage=12.0))
    took_over(cluster, standby, before, epoch, "health")


def test_red_alarm_fails_over_blue_alarm_only_alerts(cluster: Cluster) -> None:
    """Scenario 6."""
    primary, standby = settle(cluster)
    node = cluster.nodes[primary]
    t_blue = time.monotonic()
    for span in (1, 2):
        node.ami_control_cmd({"cmd": "span_alarm", "span": span, "kind": "blue"})
    # Span verdicts start spans.grace after the route; the blue alert says they have.
    wait_for_sync(
        lambda: any("blue" in str(e.get("message", "")) for e in events_of(cluster, primary)),
        20,
        "the blue alarm alert",
    )
    assert_stays(cluster, primary, QUIET)
    cluster.assert_safe(allow(t_blue, max_outage=QUIET_OUTAGE))
    before, epoch = watch(cluster, standby)
    t_red = time.monotonic()
    for span in (1, 2):
        node.ami_control_cmd({"cmd": "span_alarm", "span": span, "kind": "red"})
    cluster.wait_serving(standby, within=20)
    cluster.assert_safe(allow(t_red, max_outage=8.0))
    took_over(cluster, standby, before, epoch, "health")


def test_standby_not_ready_does_not_take_over(cluster: Cluster) -> None:
    """Scenario 10: the standby's DRBD data is outdated; the primary's host dies."""
    primary, standby = settle(cluster)
    cluster.set_drbd(node=standby, disk="Outdated")
    wait_for_sync(lambda: not _ready(cluster, standby), 10, f"{standby} not ready")
    cluster.kill_host(primary)
    deadline = time.monotonic() + QUIET
    while time.monotonic() < deadline:
        assert read_role(cluster.nodes[standby]) != "primary"
        time.sleep(0.2)
    assert any("not ready" in str(e.get("message", "")) for e in events_of(cluster, standby)), (
        "no alert that the standby cannot take over"
    )
    cluster.assert_safe(SAFE)  # an outage is expected here: nobody may serve


def test_planned_switchover_waits_for_calls_to_drain(cluster: Cluster) -> None:
    """Scenario 11."""
    primary, standby = settle(cluster)
    node = cluster.nodes[primary]
    before, epoch = watch(cluster, standby)
    node.ami_control_cmd({"cmd": "channels", "count": 2})
    t_request = time.time()
    assert node.post("/switchover", {"to": standby, "drain_timeout": 20}) == 202
    wait_for_sync(lambda: node.role() == "demoting", 10, "demoting")
    # The request is shown while it is pending: its target and when it was asked for.
    pending = (node.status() or {}).get("switchover") or {}
    assert (pending.get("target"), pending.get("drain_timeout")) == (standby, 20.0), pending
    assert t_request - 1.0 <= pending["requested_at"] <= time.time(), pending
    assert_stays_demoting = time.monotonic() + 1.5
    while time.monotonic() < assert_stays_demoting:
        assert read_role(cluster.nodes[standby]) != "primary", "switched before the calls drained"
        time.sleep(0.1)
    t_drained = time.monotonic()
    node.ami_control_cmd({"cmd": "channels", "count": 0})
    cluster.wait_serving(standby, within=20)
    cluster.assert_safe(allow(t_drained, max_outage=5.0))
    took_over(cluster, standby, before, epoch, "switchover")


def test_pause_then_kill_primary_nothing_until_resume(cluster: Cluster) -> None:
    """Scenario 12."""
    primary, standby = settle(cluster)
    before, epoch = watch(cluster, standby)
    assert cluster.nodes[standby].post("/pause", {}) == 202
    cluster.wait_role(standby, "paused", within=10)
    cluster.wait_role(primary, "paused", within=10)
    cluster.kill_host(primary)
    deadline = time.monotonic() + QUIET
    while time.monotonic() < deadline:
        assert read_role(cluster.nodes[standby]) == "paused"
        time.sleep(0.2)
    t_resume = time.monotonic()
    assert cluster.nodes[standby].post("/resume", {}) == 202
    cluster.wait_serving(standby, within=25)
    cluster.assert_safe(allow(t_resume, max_outage=10.0))
    took_over(cluster, standby, before, epoch, "host_lost")


def test_planned_restart_in_maintenance_then_unplanned_exit(cluster: Cluster) -> None:
    """Scenario 13."""
    primary, standby = settle(cluster)
    node = cluster.nodes[primary]
    ast_pid = node.asterisk_pid()
    _, before = node.get("/status")
    epoch = before["epoch"]
    t_pause = time.monotonic()
    assert node.post("/pause", {}) == 202
    cluster.wait_role(primary, "paused", within=10)
    old_pid = node.bot_pid()
    cluster.kill_bot(primary, signal.SIGTERM)
    wait_for_sync(lambda: node.bot_pid() not in (None, old_pid), 15, "the bot restarted")
    cluster.wait_role(primary, "paused", within=15)
    assert node.post("/resume", {}) == 202
    cluster.wait_role(primary, "primary", within=15)
    _, after = node.get("/status")
    # Adopted (same epoch), or, if the restart outlasted the lease, taken again with a
    # higher one (tests/e2e/test_restart.py); never a lower one.
    assert after["epoch"] >= epoch
    assert node.asterisk_pid() == ast_pid, "Asterisk was touched"
    cluster.assert_safe(allow(t_pause, max_outage=QUIET_OUTAGE))
    # An unplanned exit (a crash: a SIGTERM would hand over first, bot.agent.stop): the
    # supervisor fences and the standby takes over.
    before, next_epoch = watch(cluster, standby)
    # One above the epoch the node ended with: the adopted one, or the one it took again.
    assert next_epoch == after["epoch"] + 1
    t_exit = time.monotonic()
    cluster.kill_bot(primary, signal.SIGKILL)
    cluster.wait_serving(standby, within=20)
    cluster.assert_safe(allow(t_exit, max_outage=8.0))
    took_over(cluster, standby, before, next_epoch, "host_lost")


def test_redis_restart_keeps_the_primary(cluster: Cluster) -> None:
    """Scenario 7: Redis killed and restarted empty; the peer's promise carries the primary."""
    primary, _ = settle(cluster)
    snap = snapshot(cluster.nodes[primary])
    before = snap.status
    t_fault = time.monotonic()
    both = status_cli(cluster, primary)
    assert {n["id"] for n in both["nodes"]} == {"a", "b"} and both["holder"] == primary
    assert both["epoch"] == before["epoch"]
    assert 0 < both["lease_remaining_seconds"] <= LEASE
    assert both["redis_run_id"] == before["redis_run_id"]
    cluster.redis.kill()
    # `status` still answers with Redis down: from the peers' APIs, and says so.
    down = status_cli(cluster, primary)
    assert down["source"] != "redis" and down["holder"] == primary
    time.sleep(LEASE)  # the outage's duration
    cluster.redis.start()
    assert_stays(cluster, primary, QUIET)
    # Rule 4: the key was missing, so the primary took it again with the next epoch (the
    # counter was lost with Redis, the epoch it saw is the floor), keeping its role.
    again = snapshot(cluster.nodes[primary])
    after = again.status
    assert (after["holder"], after["epoch"]) == (primary, before["epoch"] + 1)
    assert after["redis_run_id"] != before["redis_run_id"]
    assert after["last_takeover"] == before["last_takeover"]
    for reason in FAILOVER_REASONS:
        assert again.delta(snap, "failoverbot_failovers_total", reason=reason) == 0
    assert_no_self_fence(snap, again)
    cluster.assert_safe(allow(t_fault, max_outage=QUIET_OUTAGE))


@pytest.mark.proxied
def test_primary_cut_from_redis_only_stays_primary(cluster: Cluster) -> None:
    """Scenario 8: the peer's promise carries the primary through a Redis partition."""
    primary, _ = settle(cluster)
    t_fault = time.monotonic()
    cluster.cut(primary, "redis")
    assert_stays(cluster, primary, QUIET)
    assert cluster.holds_vip(primary)
    cluster.heal(primary, "redis")
    assert_stays(cluster, primary, LEASE)
    cluster.assert_safe(allow(t_fault, max_outage=QUIET_OUTAGE))


@pytest.mark.proxied
def test_primary_cut_from_redis_and_peer_demotes_before_takeover(cluster: Cluster) -> None:
    """Scenario 9: cut off from both, the primary fences itself; then the standby takes over."""
    primary, standby = settle(cluster)
    before, epoch = watch(cluster, standby)
    old_before = snapshot(cluster.nodes[primary])
    old_pid = cluster.nodes[primary].bot_pid()
    t_fault = time.monotonic()
    t_fault_wall = time.time()
    cluster.cut(primary, "redis", "peer")
    cluster.wait_serving(standby, within=20)
    wait_for_sync(lambda: not cluster.holds_vip(primary), 5, f"{primary} without the VIP")
    cluster.assert_safe(allow(t_fault, max_outage=10.0))
    took_over(cluster, standby, before, epoch, "host_lost")

    # The old primary fenced itself (its lease ran out, no promise) and is standby; or, if
    # the fence outlasted the watchdog, the supervisor killed it and fence-local succeeded.
    old = cluster.nodes[primary]

    def supervisor_fence() -> list[dict]:
        recs = [r for r in supervisor_records(old) if r["t"] >= t_fault_wall]
        exits = [r for r in recs if r["event"] == "exited"]
        posts = [r for r in recs if r["event"] == "stop_post"]
        return exits + posts if exits and posts else []

    def settled() -> bool:
        return bool(supervisor_fence()) or (old.bot_pid() == old_pid and old.role() == "standby")

    wait_for_sync(settled, 20, f"{primary} fenced")
    if supervisor_fence():
        exits_and_posts = supervisor_fence()
        assert exits_and_posts[0]["result"] == "watchdog", exits_and_posts
        assert exits_and_posts[-1]["ok"] is True, exits_and_posts
    else:
        fences = self_fences(old_before, snapshot(old))
        assert fences == {r: (1 if r == "lease_expiring" else 0) for r in SELF_FENCE_REASONS}
