"""The health monitor feeds the current Asterisk's start into the verdict: an ARI that
failed for an hour on a standby is no reason once it serves, until ari_grace has
passed; a test-call streak starts fresh with each Asterisk start."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ami.ari import AriClient
from bot.config import parse_config
from bot.health import STANDBY_NOTE
from bot.healthmon import HealthMonitor
from bot.metrics import Metrics

CFG = parse_config(
    """
    [node]
    id = "a"
    [cluster]
    name = "lab"
    [ari]
    url = "http://127.0.0.1:9/ari"
    [test_call]
    failures = 2
    """
)


def monitor() -> tuple[HealthMonitor, list[float]]:
    now = [1000.0]
    ari = AriClient("http://127.0.0.1:9/ari", "u", "p", clock=lambda: now[0])
    ari.ok = False  # never answered: its Asterisk is stopped on this standby
    mon = HealthMonitor(CFG, None, Metrics(CollectorRegistry()), ari=ari, clock=lambda: now[0])
    return mon, now


def test_an_hour_of_failing_ari_on_the_standby_is_no_reason_after_the_takeover() -> None:
    mon, now = monitor()
    standby = mon.verdict("standby", None)
    assert standby.healthy and standby.notes == (STANDBY_NOTE,)
    now[0] += 3600
    assert "ARI" not in " ".join(mon.verdict("primary", None).reasons)
    now[0] += 4.9
    assert "ARI" not in " ".join(mon.verdict("primary", None).reasons)
    now[0] += 0.1
    assert "ARI ping failing for 5.0 s" in mon.verdict("primary", None).reasons
    assert mon.asterisk_status()["started_seconds_ago"] == 5.0


def test_a_test_call_streak_starts_fresh_with_each_asterisk_start() -> None:
    mon, now = monitor()
    mon.verdict("primary", None)
    mon.test_call_streak, mon.test_call_failing_since = 2, now[0]
    now[0] += 1
    assert "2 test calls failed in a row (limit 2)" in mon.verdict("primary", None).reasons
    mon.note_asterisk_start()  # the agent restarts Asterisk
    assert mon.test_call_streak == 0
    # A failure streak recorded before the restart (a late result) does not count.
    mon.test_call_streak, mon.test_call_failing_since = 2, now[0] - 0.5
    now[0] += 1
    assert not any("test calls" in r for r in mon.verdict("primary", None).reasons)
