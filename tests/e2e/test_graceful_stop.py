"""End to end: SIGTERM to the primary's bot (`systemctl stop`, a reboot) with a call up.

With a ready standby the bot switches over first: the call is drained, the
standby takes over, and the bot exits with nothing primary-only left for
``fence-local``. With no ready standby the stop is alerted and the node fences
itself, as before.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import Cluster, read_role
from tests.e2e.test_scenarios import SAFE, allow, settle
from tests.helpers import running_cluster, wait_for_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

DRAIN = 20.0  # cluster.stop_drain_timeout here: long enough to see the call held


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(
        tmp_path / "cluster",
        extra={"cluster": {"stop_drain_timeout": f"{DRAIN:g}s"}},
        timeout_stop_sec=DRAIN + 30,
    ) as c:
        yield c


def supervisor_events(c: Cluster, node: str) -> list[dict]:
    lines = c.nodes[node].sup_log.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def bus_events(c: Cluster) -> list[str]:
    import redis

    r = redis.Redis.from_url(c.redis.url, decode_responses=True)
    try:
        entries = r.xrange("failover:{lab}:events")
    finally:
        r.close()
    return [str(fields.get("e", "")) for _id, fields in entries]  # the encoded event


def test_stop_with_a_call_up_drains_and_hands_over(cluster: Cluster) -> None:
    primary, standby = settle(cluster)
    node = cluster.nodes[primary]
    ast_pid = node.asterisk_pid()
    node.ami_control_cmd({"cmd": "channels", "count": 1})  # a call is up
    old_bot = node.bot_pid()
    cluster.kill_bot(primary, signal.SIGTERM)
    wait_for_sync(lambda: node.role() == "demoting", 10, f"{primary} demoting on stop")
    # The call holds the hand-over: the standby waits, the primary still serves it.
    hold_until = time.monotonic() + 2.0
    while time.monotonic() < hold_until:
        assert read_role(cluster.nodes[standby]) != "primary", "took over with the call up"
        assert node.asterisk_pid() == ast_pid, "Asterisk stopped under the call"
        time.sleep(0.1)
    t_hangup = time.monotonic()
    node.ami_control_cmd({"cmd": "channels", "count": 0})  # the caller hangs up
    cluster.wait_serving(standby, within=20)
    assert time.monotonic() - t_hangup < DRAIN, "waited for the drain timeout, not the call"
    wait_for_sync(lambda: node.bot_pid() not in (None, old_bot), 30, "the bot restarted")
    events = supervisor_events(cluster, primary)
    exits = [e for e in events if e.get("event") == "exited" and e.get("pid") == old_bot]
    assert exits and exits[0].get("returncode") == 0, events
    post = [e for e in events if e.get("event") == "stop_post"]
    assert post and post[0]["ok"], events
    # The demotion stopped Asterisk cleanly (Shutdown, not SIGKILL) before the bot
    # exited: fence-local then had nothing primary-only left to kill.
    record = [json.loads(line) for line in node.asterisk_record.read_text().splitlines()]
    mine = {e["event"]: e["mono"] for e in record if e.get("pid") == ast_pid}
    assert "shutdown" in mine and "exit" in mine, record
    post_start = next(e for e in events if e.get("event") == "stop_post_start")
    assert mine["exit"] < post_start["mono"], "Asterisk was still running at fence-local"
    assert "address not present" in post[0]["output"], post[0]["output"]
    messages = bus_events(cluster)
    assert any(f"handed over to {standby}" in m for m in messages), messages
    assert not any("fenced: the bot is stopping" in m for m in messages), messages
    cluster.wait_role(primary, "standby", within=20)
    cluster.assert_safe(allow(t_hangup, max_outage=8.0))


def test_stop_without_a_ready_standby_alerts_and_fences(cluster: Cluster) -> None:
    primary, standby = settle(cluster)
    node = cluster.nodes[primary]
    assert node.post("/cordon", {"node": standby}) == 202
    wait_for_sync(
        lambda: (
            any(standby in m and "cordon" in m for m in bus_events(cluster))
            or cluster.nodes[standby].role() == "cordoned"
        ),
        10,
        f"{standby} cordoned",
    )
    node.ami_control_cmd({"cmd": "channels", "count": 1})
    ast_pid = node.asterisk_pid()
    old_bot = node.bot_pid()
    t_stop = time.monotonic()
    cluster.kill_bot(primary, signal.SIGTERM)
    wait_for_sync(lambda: node.bot_pid() not in (None, old_bot), 30, "the bot restarted")
    assert time.monotonic() - t_stop < DRAIN, "waited for a hand-over that could not happen"
    messages = bus_events(cluster)
    assert any("stopping without a hand-over" in m for m in messages), messages
    assert node.asterisk_pid() != ast_pid, "Asterisk survived the stop without a standby"
    assert read_role(cluster.nodes[standby]) != "primary"
    cluster.assert_safe(SAFE)
