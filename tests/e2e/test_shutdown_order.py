"""A reboot of the primary, in the order systemd stops the two units, with a real call up.

failover-bot.service is ordered After=asterisk.service, so at shutdown systemd runs
the bot's stop first (SIGTERM, then ExecStopPost) and Asterisk's stop job only once
the bot's is done. Here: SIGTERM to the primary's bot while a real call is up on a
real Asterisk; the call must end by itself (not cut), the bot must hand over and
exit with Asterisk stopped gracefully; only then does "systemd" run Asterisk's own
stop, which finds nothing left to stop.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import Cluster
from tests.e2e.test_real_asterisk import channels, originate_hold, real_settle
from tests.e2e.test_scenarios import allow
from tests.helpers import require_asterisk, running_cluster, wait_for_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(200)]

DRAIN = 20.0
HOLD = 4.0  # the call's own length: shorter than the drain


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    binary = require_asterisk()
    with running_cluster(
        tmp_path / "cluster",
        primary_within=40,
        asterisk="real",
        asterisk_binary=binary,
        stop_graceful=2.0,
        extra={"cluster": {"stop_drain_timeout": f"{DRAIN:g}s"}},
        timeout_stop_sec=DRAIN + 30,
    ) as c:
        yield c


def test_a_reboot_in_systemds_order_keeps_the_real_call(cluster: Cluster) -> None:
    primary, standby = real_settle(cluster)
    node = cluster.nodes[primary]
    assert node.runtime is not None
    ast_pid = node.asterisk_pid()
    originate_hold(cluster, primary, f"{HOLD:g}")
    t_call = time.monotonic()
    old_bot = node.bot_pid()
    # systemd's first stop job at shutdown: the bot's.
    cluster.kill_bot(primary, signal.SIGTERM)
    wait_for_sync(lambda: channels(cluster, primary) == 0, DRAIN, "the call to end by itself")
    assert time.monotonic() - t_call > HOLD - 0.5, "the call was cut before it ended"
    cluster.wait_serving(standby, within=40)

    def bot_stop_done() -> bool:
        lines = node.sup_log.read_text().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return any(e.get("event") == "stop_post" for e in events)

    wait_for_sync(bot_stop_done, DRAIN + 30, "the bot's stop job (ExecStopPost included)")
    log = node.runtime.command_log.read_text()
    assert f"pid {ast_pid}: stopped gracefully" in log, log
    assert "core stop now" not in log and "SIGKILL" not in log, log
    # Asterisk's stop job, now allowed to run: nothing left to stop.
    assert node.runtime.stop(graceful=2.0) == 0
    assert node.asterisk_pid() is None
    assert node.bot_pid() != old_bot
    cluster.assert_safe(allow(t_call, max_outage=15.0))
