"""``failover-bot check``: the plugin's verdict per cluster state, and its exit codes.

Status objects come from the real builders (``build_status``, ``merge_answers``);
the live-cluster exit codes are in tests/e2e/test_status_truth.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.bus.status import merge_answers
from bot.commands.check import CRITICAL, OK, UNKNOWN, WARNING, judge
from tests.api.test_statusview import NOW, record, status
from tests.helpers import free_port


def live_pair(**change: Any) -> dict[str, Any]:
    a = record("a", "primary", NOW - 0.3)
    b = record("b", "standby", NOW - 0.5)
    return status({"a": a, "b": b}, **change)


def test_serving_pair_is_ok_with_perfdata() -> None:
    st = live_pair()
    st["nodes"][0]["extra"] = {"asterisk": {"ami_ping_ms": 1.5}}
    st["last_takeover"] = {"duration": 3.71}
    result = judge(st)
    assert result.code == OK
    assert result.line() == (
        "FAILOVER-BOT OK - a primary, epoch 7, lease 2.0 s left; a primary, b standby "
        "| lease_remaining=2s;;;0 failover_seconds=3.71s;;;0 ami_ping_ms=1.5ms;;;0"
    )


def test_unknown_perfdata_values_are_U() -> None:
    assert (
        judge(live_pair())
        .line()
        .endswith("| lease_remaining=2s;;;0 failover_seconds=U;;;0 ami_ping_ms=U;;;0")
    )


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda st: st["nodes"][1].update(ready=False, ready_reasons=["DRBD disk is Outdated"]),
         "standby b not ready: DRBD disk is Outdated"),
        (lambda st: st.update(paused=True), "cluster paused"),
        (lambda st: st["nodes"][0]["extra"].update(degraded=True), "a degraded"),
        (lambda st: st["nodes"][0].update(healthy=False, health_reasons=["ARI ping failing"]),
         "a unhealthy: ARI ping failing"),
    ],
)  # fmt: skip
def test_warning_states(change: Any, words: str) -> None:
    st = live_pair()
    change(st)
    result = judge(st)
    assert result.code == WARNING and words in result.summary, result.line()


def test_a_stale_standby_is_a_warning() -> None:
    st = status({"a": record("a", "primary", NOW - 0.3), "b": record("b", "standby", NOW - 9)})
    result = judge(st)
    assert result.code == WARNING and "b down (last seen 9 s ago)" in result.summary


def test_no_primary_is_critical() -> None:
    st = status({"a": record("a", "standby", NOW - 0.3)}, holder=None)
    result = judge(st)
    assert result.code == CRITICAL and "no node serves" in result.summary


def test_two_claims_are_critical() -> None:
    # b's fresh record says primary but a holds the lease.
    st = status({"a": record("a", "primary", NOW - 0.3), "b": record("b", "primary", NOW - 0.3)})
    result = judge(st)
    assert result.code == CRITICAL and "two nodes claim to be primary: a, b" in result.summary


def test_redis_down_answer_from_the_nodes_is_a_warning() -> None:
    answers = []
    for me, role in (("a", "primary"), ("b", "standby")):
        st = status({}, holder="a", redis_ok=False, local=record(me, role, 0.0))
        st["reported_by"] = me
        answers.append((me, st))
    merged = merge_answers(answers)
    result = judge({**merged, "redis_error": "connection refused"})
    assert result.code == WARNING and "Redis unreachable" in result.summary


def test_nothing_reachable_is_unknown(tmp_path: Path) -> None:
    dead = free_port()
    cfg = tmp_path / "node.toml"
    (tmp_path / "secret").write_text("s3cret-cluster\n")
    cfg.write_text(
        "[node]\nid = 'a'\nrseries_host = 'A'\n"
        f"state_dir = '{tmp_path}/state'\n"
        f"[cluster]\nname = 'lab'\nsecret_file = '{tmp_path}/secret'\n"
        f"peers = [{{ id = 'b', api = 'http://127.0.0.1:{free_port()}' }}]\n"
        f"[redis]\nurl = 'redis://127.0.0.1:{dead}/0'\ntimeout = '200ms'\n"
        f"[api]\nlisten = '127.0.0.1:{free_port()}'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == UNKNOWN, proc.stdout + proc.stderr
    assert proc.stdout.startswith("FAILOVER-BOT UNKNOWN - Redis unreachable")
    assert len(proc.stdout.splitlines()) == 1


def test_a_bad_configuration_is_unknown_not_critical(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "check", "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == UNKNOWN and proc.stdout.startswith("FAILOVER-BOT UNKNOWN - ")
