"""`failover-bot drill` on the lab pair: over to the standby and back, each step proven
by the new primary's test call, the report complete and recorded (event, textfile);
refused on a pair whose standby is down.

Real parts: redis-server, the R-Series simulator on ptys, two bots with simulated
Asterisks (the lab cluster).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.drill import refusals
from harness import tools
from tests.helpers import wait_for_sync

pytestmark = pytest.mark.timeout(600)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _cli(cluster: Any, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *argv, "--config", str(cluster.nodes["a"].config_path)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
    )  # fmt: skip


def _status(cluster: Any) -> dict[str, Any]:
    done = _cli(cluster, "status", "--json", timeout=30)
    return json.loads(done.stdout) if done.returncode == 0 else {}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if reason := tools.missing("redis-server"):
        pytest.skip(reason)
    from harness.cluster import Cluster

    cluster = Cluster(tmp_path_factory.mktemp("drill"), None, test_call_interval="1s")
    try:
        cluster.start()
        cluster.wait_primary(within=60)
        wait_for_sync(lambda: not refusals(_status(cluster)), 60, "a healthy, ready pair")
        yield cluster
    finally:
        cluster.stop()


def test_drill_switches_over_and_back_with_a_complete_report(lab: Any, tmp_path: Path) -> None:
    original = lab.primary()
    textfile = tmp_path / "drill.prom"
    done = _cli(lab, "drill", "--drain-timeout", "2", "--json", "--textfile", str(textfile))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["refused"] == []
    assert report["original_primary"] == original and report["serving_at_end"] == original
    other = "b" if original == "a" else "a"
    assert [(s["source"], s["target"]) for s in report["steps"]] == [
        (original, other),
        (other, original),
    ]
    for step in report["steps"]:
        assert step["ok"] is True, step
        assert step["test_call"] == "answered", step
        assert 0 < step["seconds"] < 120, step
        assert 0 <= step["outage_seconds"] <= step["seconds"], step
        # Whatever was up (a test call, at most) ended in the drain: none cut (the drain
        # said so in its step event).
        assert step["calls_left"] == 0, step
        assert step["calls_drained"] == step["calls_at_start"], step
    # Both serve again: the original primary holds the lease, the other is a ready standby.
    status = _status(lab)
    roles = {n["id"]: (n["role"], n["ready"]) for n in status["nodes"]}
    assert status["holder"] == original and roles[other] == ("standby", True), roles
    # Recorded: the event log and the textfile metrics.
    events = _cli(lab, "events", "--count", "200", "--json", timeout=30)
    drills = [json.loads(line) for line in events.stdout.splitlines() if '"drill_' in line]
    assert drills and drills[-1]["kind"] == "drill_passed", drills
    metrics = textfile.read_text()
    assert 'failoverbot_drill_success{cluster="lab"} 1' in metrics, metrics
    assert metrics.count("failoverbot_drill_step_seconds{") == 2, metrics


def test_drill_refuses_a_pair_whose_standby_is_down(lab: Any, tmp_path: Path) -> None:
    standby = "b" if lab.primary() == "a" else "a"
    lab.kill_host(standby)

    def standby_stale() -> bool:
        node = next((n for n in _status(lab).get("nodes", []) if n["id"] == standby), {})
        return bool(node.get("stale"))

    wait_for_sync(standby_stale, 30, f"{standby} reported stale")
    textfile = tmp_path / "drill.prom"
    done = _cli(lab, "drill", "--textfile", str(textfile), timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("drill refused:"), done.stdout
    assert f"{standby} is not reporting" in done.stdout, done.stdout
    assert 'failoverbot_drill_success{cluster="lab"} 0' in textfile.read_text()
    assert _status(lab)["holder"] != standby  # nothing was moved
