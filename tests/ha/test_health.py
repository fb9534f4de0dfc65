"""Each rule of the local health verdict and of readiness."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.config import parse_config
from bot.health import (
    HealthInputs,
    HealthPolicy,
    PendingShutdown,
    ReadinessFacts,
    SpanState,
    evaluate,
    readiness,
)

NOW = 500.0
POLICY = HealthPolicy(critical_spans=(1, 2), span_grace=15.0, test_call_failures=3)
GOOD = HealthInputs(
    ami_up=True,
    ami_since=NOW - 100,
    last_ping_ok_at=NOW - 0.5,
    fully_booted=True,
    asterisk_started_at=NOW - 100,
    spans_routed_at=NOW - 100,
)


def verdict(**change: object):  # type: ignore[no-untyped-def]
    return evaluate(replace(GOOD, **change), POLICY, NOW)


def test_all_good() -> None:
    v = verdict()
    assert v.healthy and v.reasons == () and v.alerts == ()


@pytest.mark.parametrize(("down", "healthy"), [(2.9, True), (3.0, False)])
def test_ami_link_down_counts_after_its_grace(down: float, healthy: bool) -> None:
    v = verdict(ami_up=False, ami_since=NOW - down)
    assert v.healthy is healthy
    if not healthy:
        assert v.reasons == ("AMI link down for 3.0 s",)


def test_ami_grace_counts_from_a_fresh_asterisk_start() -> None:
    assert verdict(ami_up=False, ami_since=NOW - 600, asterisk_started_at=NOW - 1).healthy


@pytest.mark.parametrize(("last_ok", "healthy"), [(NOW - 4.9, True), (NOW - 5.0, False)])
def test_unanswered_ping_counts_after_interval_timeout_and_grace(
    last_ok: float, healthy: bool
) -> None:
    v = verdict(last_ping_ok_at=last_ok)
    assert v.healthy is healthy
    if not healthy:
        assert v.reasons == ("AMI Ping unanswered for 5.0 s",)


def test_shutdown_without_restart_fails_at_once() -> None:
    v = verdict(fully_booted=False, shutdown=PendingShutdown(restart=False, at=NOW - 0.01))
    assert not v.healthy
    assert v.reasons == ("Asterisk shut down (Shutdown with Restart: False)",)


def test_shutdown_with_restart_waits_for_the_boot_timeout() -> None:
    restarting = verdict(fully_booted=False, shutdown=PendingShutdown(restart=True, at=NOW - 59))
    assert restarting.healthy and restarting.alerts == ("Asterisk restarting (59.0 s)",)
    late = verdict(fully_booted=False, shutdown=PendingShutdown(restart=True, at=NOW - 61))
    assert late.reasons == ("Asterisk restart not FullyBooted after 61.0 s",)


def test_boot_grace_extends_the_wait_for_fullybooted() -> None:
    inputs = replace(GOOD, fully_booted=False, asterisk_started_at=NOW - 65)
    assert not evaluate(inputs, POLICY, NOW).healthy
    assert evaluate(inputs, replace(POLICY, boot_grace=10.0), NOW).healthy


def _spans(*alarms: str | None) -> tuple[SpanState, ...]:
    return tuple(SpanState(i + 1, a, NOW - 20) for i, a in enumerate(alarms))


def test_red_on_every_critical_span_is_a_failure() -> None:
    v = verdict(spans=_spans("red", "red"))
    assert v.reasons == (
        "every critical span in alarm (span 1 red for 20.0 s, span 2 red for 20.0 s): "
        "points at our side (loss of signal at our card: card, cable or appliance port)",
    )


def test_red_on_some_critical_spans_only_alerts() -> None:
    v = verdict(spans=_spans("red", None))
    assert v.healthy and v.alerts == (
        "span alarm (span 1 red for 20.0 s): points at our side (loss of signal at our card: "
        "card, cable or appliance port) (not every critical span, so not our "
        "card as a whole)",
    )


@pytest.mark.parametrize("kind", ["blue", "yellow", "loopback", "notopen"])
def test_far_end_alarms_alert_without_failover(kind: str) -> None:
    v = verdict(spans=_spans(kind, kind))
    assert v.healthy and len(v.alerts) == 1
    assert f"span 1 {kind} for 20.0 s, span 2 {kind} for 20.0 s" in v.alerts[0]


def test_recovering_is_ignored_and_policy_is_configurable() -> None:
    assert verdict(spans=_spans("recovering", "recovering")) == verdict()
    strict = replace(POLICY, span_policy={**POLICY.span_policy, "blue": "failover"})
    assert not evaluate(replace(GOOD, spans=_spans("blue", "blue")), strict, NOW).healthy


@pytest.mark.parametrize(("routed_ago", "healthy"), [(14.9, True), (15.0, False)])
def test_span_verdicts_start_after_the_delay_since_the_route(
    routed_ago: float, healthy: bool
) -> None:
    assert verdict(spans=_spans("red", "red"), spans_routed_at=NOW - routed_ago).healthy is healthy


def test_spans_never_routed_here_are_not_judged() -> None:
    assert verdict(spans=_spans("red", "red"), spans_routed_at=None).healthy


@pytest.mark.parametrize(("streak", "healthy"), [(2, True), (3, False)])
def test_test_call_failure_streak(streak: int, healthy: bool) -> None:
    v = verdict(test_call_failures=streak)
    assert v.healthy is healthy
    if not healthy:
        assert v.reasons == ("3 test calls failed in a row (limit 3)",)


@pytest.mark.parametrize(("since", "healthy"), [(NOW - 4.9, True), (NOW - 5.0, False)])
def test_ari_failing_counts_after_its_grace(since: float, healthy: bool) -> None:
    assert verdict(ari_ok=False, ari_since=since).healthy is healthy


def test_policy_from_config() -> None:
    cfg = parse_config(
        """
        [node]
        id = "a"
        [cluster]
        name = "lab"
        [health]
        ami_grace = "2s"
        [spans]
        critical = [1, 2]
        grace = "5s"
        policy = { blue = "failover" }
        [test_call]
        failures = 4
        """
    )
    p = HealthPolicy.from_config(cfg)
    assert (p.ami_grace, p.span_grace, p.critical_spans, p.test_call_failures) == (
        2.0,
        5.0,
        (1, 2),
        4,
    )
    assert p.span_policy["blue"] == "failover" and p.span_policy["red"] == "failover"


UP = (("r0", "UpToDate"),)


@pytest.mark.parametrize(
    ("facts", "reasons"),
    [
        (ReadinessFacts(drbd_disks=UP, rseries_link_up=True), ()),
        (ReadinessFacts(), ()),  # nothing configured but Asterisk
        (ReadinessFacts(drbd_disks=(("r0", "Inconsistent"),)), ("drbd r0: disk Inconsistent",)),
        (ReadinessFacts(drbd_error="drbdadm: not found"), ("drbd: drbdadm: not found",)),
        (
            ReadinessFacts(drbd_disks=UP, drbd_outdated_on_bus=True),
            ("drbd: this node is marked outdated on the cluster bus",),
        ),
        (
            ReadinessFacts(drbd_disks=UP, drbd_local_mark="outdated by b at 12:00"),
            ("drbd: this node's data is outdated by b at 12:00 (waiting for resync)",),
        ),
        # An operator's force-promote accepts outdated data, never a missing disk.
        (
            ReadinessFacts(
                drbd_disks=(("r0", "Outdated"), ("r1", "Diskless")),
                drbd_outdated_on_bus=True,
                drbd_local_mark="outdated",
                drbd_forced=True,
            ),
            ("drbd r1: disk Diskless",),
        ),
        (ReadinessFacts(drbd_disks=UP, rseries_link_up=False), ("R-Series link down",)),
        (
            ReadinessFacts(asterisk_commands_missing=("asterisk.start: x not found",)),
            ("asterisk.start: x not found",),
        ),
        (ReadinessFacts(ami_configured=False), ("no AMI secret configured",)),
    ],
)
def test_readiness_is_one_rule_over_every_part(
    facts: ReadinessFacts, reasons: tuple[str, ...]
) -> None:
    assert readiness(facts) == (not reasons, reasons)


# A certain death needs no grace: the link closed and a status check begun after that
# found no Asterisk process. Anything less certain still waits for ami_grace.
GONE = "Asterisk process gone (status check) and the AMI link closed"


def test_a_process_known_gone_with_the_link_closed_fails_at_once() -> None:
    v = verdict(ami_up=False, ami_since=NOW - 0.01, process_gone_at=NOW - 0.005)
    assert not v.healthy
    assert v.reasons == (GONE,)


def test_the_link_lost_while_the_process_runs_still_waits_the_grace() -> None:
    # No check found it gone (it runs, or the check could not tell): ambiguous.
    assert verdict(ami_up=False, ami_since=NOW - 2.9, process_gone_at=None).healthy
    assert verdict(ami_up=False, ami_since=NOW - 3.0).reasons == ("AMI link down for 3.0 s",)


def test_a_check_older_than_the_link_loss_is_not_certain() -> None:
    # "Gone" said while the link was still up is a status command that disagrees with a
    # live AMI: only a check begun after the link closed makes the death certain.
    v = verdict(ami_up=False, ami_since=NOW - 1.0, process_gone_at=NOW - 1.5)
    assert v.healthy


def test_a_check_older_than_the_current_asterisk_is_not_certain() -> None:
    # Found gone before this Asterisk was started (a restart since): that one is gone.
    v = verdict(
        ami_up=False,
        ami_since=NOW - 2.0,
        process_gone_at=NOW - 1.5,
        asterisk_started_at=NOW - 1.0,
    )
    assert v.healthy


def test_a_process_found_gone_while_the_link_is_up_is_no_reason() -> None:
    # The AMI answers: something runs there; the status command alone is not believed.
    assert verdict(process_gone_at=NOW - 0.1).healthy


def test_a_slow_ping_still_waits_the_grace() -> None:
    # The link is up but the Ping is late (an ambiguous signal), whatever a check says.
    assert verdict(last_ping_ok_at=NOW - 4.9, process_gone_at=None).healthy


def test_a_status_command_that_denied_a_live_asterisk_is_not_believed() -> None:
    from bot.health import STATUS_DISAGREES

    v = verdict(
        ami_up=False, ami_since=NOW - 0.01, process_gone_at=NOW - 0.005, status_disagrees=True
    )
    assert v.healthy and v.alerts == (STATUS_DISAGREES,)
    late = verdict(ami_up=False, ami_since=NOW - 3.0, status_disagrees=True)
    assert late.reasons == ("AMI link down for 3.0 s",)
