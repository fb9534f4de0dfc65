"""What operators see on a real lab pair: ``status --json`` ages and roles, ``check``
exit codes in each state, ``status --watch``. Every status read is validated
against the status contract (docs/status.schema.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import jsonschema

from bot.statuscontract import json_schema
from harness.cluster import Cluster
from tests.e2e.test_scenarios import cluster, other, settle, status_cli
from tests.helpers import wait_for_sync

__all__ = ["cluster"]  # the fixture, shared with the other scenarios

RENEW = 1.0  # cluster.renew_interval of the lab
STALE_AFTER = 3.0 + RENEW  # lease_ttl + renew_interval
VALIDATOR = jsonschema.Draft202012Validator(json_schema())


def status_json(c: Cluster, node: str) -> dict[str, Any]:
    st = status_cli(c, node)
    VALIDATOR.validate(st)
    return st


def by_id(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in st["nodes"]}


def check(c: Cluster, node: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "check", "--config", str(c.nodes[node].config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=c.env(c.nodes[node]),
    )
    assert proc.stdout.count("\n") == 1, proc.stdout + proc.stderr  # one status line
    return proc.returncode, proc.stdout.strip()


def wait_check(c: Cluster, node: str, code: int, within: float) -> str:
    seen: list[str] = []

    def reached() -> bool:
        got, line = check(c, node)
        seen.append(f"{got}: {line}")
        return got == code

    try:
        wait_for_sync(reached, within, f"check exit {code}")
    except AssertionError:
        raise AssertionError("\n".join(seen[-5:]) + c.logs_tail()) from None
    return seen[-1].partition(": ")[2]


def watch_frames(c: Cluster, primary: str) -> None:
    """``status --watch`` prints a fresh status each interval."""
    node = c.nodes[primary]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "status", "--json", "--watch", "0.5",
         "--config", str(node.config_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=c.env(node),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        frames = [json.loads(proc.stdout.readline()) for _ in range(3)]
    finally:
        proc.terminate()
        proc.wait(10)
    stamps = [f["generated_at"] for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3
    assert all(f["serving"] == [primary] for f in frames)


def test_status_ages_and_check_exit_codes_through_the_states(cluster: Cluster) -> None:
    primary, standby = settle(cluster)
    # A live pair: both records rewritten every renewal interval.
    st = status_json(cluster, standby)
    assert st["source"] == "redis" and st["serving"] == [primary], json.dumps(st, indent=1)
    for node in st["nodes"]:
        assert 0.0 <= node["last_seen_seconds"] <= RENEW + 1.0, node
        assert node["freshness"] == "live" and not node["stale"]
    watch_frames(cluster, primary)
    line = wait_check(cluster, standby, 0, 10)
    assert line.startswith(f"FAILOVER-BOT OK - {primary} primary"), line
    assert "lease_remaining=" in line and "ami_ping_ms=" in line

    # Redis down: the bots answer for themselves; the primary stays (its peer's promise).
    cluster.redis.kill()
    line = wait_check(cluster, standby, 1, 15)
    assert "Redis unreachable" in line, line
    st = status_json(cluster, standby)  # merged from both bots' own answers
    assert st["source"].startswith("peer") and "redis_error" in st
    assert st["serving"] == [primary] and by_id(st)[standby]["role"] == "standby"
    cluster.redis.start()
    wait_check(cluster, standby, 0, 30)

    # The standby cannot take over: a warning, saying why.
    cluster.set_drbd(node=standby, disk="Outdated")
    line = wait_check(cluster, standby, 1, 15)
    assert f"standby {standby} not ready" in line, line

    # The primary's host dies and nobody can take over: critical; the dead node is
    # shown down with its age, never as primary.
    t_dead = time.monotonic()
    cluster.kill_host(primary)
    line = wait_check(cluster, standby, 2, STALE_AFTER + 10)
    assert "no node serves" in line, line
    # The lease may run out up to a renewal interval before the last record goes stale:
    # until then the node is shown as claiming primary without the lease.
    shown: list[dict[str, Any]] = []

    def shown_dead() -> bool:
        shown.append(status_json(cluster, standby))
        entry = by_id(shown[-1])[primary]
        assert entry["role"] != "primary", entry
        return bool(entry["stale"])

    wait_for_sync(shown_dead, STALE_AFTER + 5, f"{primary} shown stale")
    st = shown[-1]
    dead = by_id(st)[primary]
    assert dead["role"] in ("down (was primary)", "down"), dead
    assert dead["last_seen_seconds"] >= STALE_AFTER
    assert dead["last_seen_seconds"] <= time.monotonic() - t_dead + RENEW + 1.0
    assert st["serving"] == []
    assert by_id(st)[other(primary)]["role"] == "standby"
