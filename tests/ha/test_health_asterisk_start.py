"""Every Asterisk-dependent health input is judged from the current Asterisk's start.

One table over every input: a source that has been failing for an hour before
Asterisk started (a standby's AMI and ARI while its Asterisk is stopped by
design, a failure of the Asterisk before a restart) is no reason until its own
grace has passed since the start, and is one just after.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bot.health import (
    STANDBY_NOTE,
    HealthInputs,
    HealthPolicy,
    PendingShutdown,
    SpanState,
    counts_from,
    evaluate,
    standby_verdict,
)

NOW = 10_000.0
HOUR_AGO = NOW - 3600.0
POLICY = HealthPolicy(
    ami_grace=3.0,
    ping_interval=1.0,
    ping_timeout=1.0,
    ari_grace=5.0,
    boot_timeout=60.0,
    critical_spans=(1, 2),
    span_grace=15.0,
    test_call_failures=3,
)
GOOD = HealthInputs(
    ami_up=True,
    ami_since=HOUR_AGO,
    last_ping_ok_at=NOW - 0.5,
    fully_booted=True,
    spans_routed_at=HOUR_AGO,
)
RED = tuple(SpanState(n, "red", HOUR_AGO) for n in (1, 2))

# name, the failure (begun an hour ago), seconds after the start it starts to count,
# the reason it then gives (with the duration counted from the start)
RED_SIDE = "points at our side (loss of signal at our card: card, cable or appliance port)"
CASES: list[tuple[str, dict[str, Any], float, str]] = [
    ("AMI link", {"ami_up": False}, 3.0, "AMI link down for 3.0 s"),
    ("AMI Ping", {"last_ping_ok_at": HOUR_AGO}, 5.0, "AMI Ping unanswered for 5.0 s"),
    ("ARI ping", {"ari_ok": False, "ari_since": HOUR_AGO}, 5.0, "ARI ping failing for 5.0 s"),
    (
        "span verdict",
        {"spans": RED},
        15.0,
        f"every critical span in alarm (span 1 red for 15.0 s, span 2 red for 15.0 s): {RED_SIDE}",
    ),
    (
        "FullyBooted expected",
        {"fully_booted": False, "shutdown": PendingShutdown(restart=False, at=HOUR_AGO)},
        60.0 + 0.001,
        "Asterisk not FullyBooted 60.0 s after start",
    ),
    (
        "restart's FullyBooted",
        {"fully_booted": False, "shutdown": PendingShutdown(restart=True, at=HOUR_AGO)},
        60.0 + 0.001,
        "Asterisk not FullyBooted 60.0 s after start",
    ),
]


@pytest.mark.parametrize(("name", "failure", "grace", "reason"), CASES, ids=[c[0] for c in CASES])
def test_an_hour_old_failure_counts_only_after_its_grace_since_the_start(
    name: str, failure: dict[str, Any], grace: float, reason: str
) -> None:
    failing = replace(GOOD, **failure)
    # Without a known start the hour-old failure counts at once.
    assert not evaluate(failing, POLICY, NOW).healthy, name
    just_started = replace(failing, asterisk_started_at=NOW - (grace - 0.01))
    fresh = evaluate(just_started, POLICY, NOW)
    assert fresh.healthy, (name, fresh.reasons)
    started_long_enough = replace(failing, asterisk_started_at=NOW - grace)
    late = evaluate(started_long_enough, POLICY, NOW)
    assert late.reasons == (reason,), name


def test_a_test_call_streak_of_a_previous_asterisk_never_counts() -> None:
    streak = replace(GOOD, test_call_failures=5, test_call_failing_since=HOUR_AGO)
    assert evaluate(streak, POLICY, NOW).reasons == ("5 test calls failed in a row (limit 3)",)
    # However long the new Asterisk runs: the old streak is not its streak.
    for started in (HOUR_AGO + 1, NOW - 1000, NOW - 1):
        assert evaluate(replace(streak, asterisk_started_at=started), POLICY, NOW).healthy
    # A streak that began on this Asterisk counts as soon as it reaches the limit.
    own = replace(streak, asterisk_started_at=NOW - 100, test_call_failing_since=NOW - 30)
    assert evaluate(own, POLICY, NOW).reasons == ("5 test calls failed in a row (limit 3)",)
    short = replace(own, test_call_failures=2)
    assert evaluate(short, POLICY, NOW).healthy


def test_a_change_after_the_start_counts_from_the_change() -> None:
    ari = replace(GOOD, ari_ok=False, ari_since=NOW - 4.9, asterisk_started_at=NOW - 100)
    assert evaluate(ari, POLICY, NOW).healthy
    assert evaluate(replace(ari, ari_since=NOW - 5.0), POLICY, NOW).reasons == (
        "ARI ping failing for 5.0 s",
    )
    # A span alarm raised after the span grace counts at once, with its own age.
    spans = replace(
        GOOD,
        spans=tuple(SpanState(n, "red", NOW - 2) for n in (1, 2)),
        asterisk_started_at=NOW - 100,
    )
    assert evaluate(spans, POLICY, NOW).reasons == (
        f"every critical span in alarm (span 1 red for 2.0 s, span 2 red for 2.0 s): {RED_SIDE}",
    )


@pytest.mark.parametrize(
    ("changed", "started", "expected"),
    [(5.0, None, 5.0), (5.0, 7.0, 7.0), (9.0, 7.0, 9.0), (7.0, 7.0, 7.0)],
)
def test_counts_from_is_the_later_of_change_and_start(
    changed: float, started: float | None, expected: float
) -> None:
    assert counts_from(changed, started) == expected


def test_a_standby_reports_no_asterisk_problem_and_says_why() -> None:
    v = standby_verdict()
    assert v.healthy and v.reasons == () and v.notes == (STANDBY_NOTE,)
    promoting = standby_verdict("promoting")
    assert promoting.healthy and promoting.notes == ("Asterisk not judged while promoting",)
