"""The span policy's fallbacks and reason text (ami/spans.py): what survived the fast tests."""

from __future__ import annotations

from ami.events import SpanStatus, parse_event
from ami.spans import SpanModel


def alarm(span: int, text: str):
    return parse_event(
        {"Event": "SpanAlarm", "Privilege": "system,all", "Span": str(span), "Alarm": text}
    )


def row(span: int, alarms: str, kind: str) -> SpanStatus:
    return SpanStatus(span=span, description=f"T1 span {span}", alarms=alarms, kind=kind)


def test_a_kind_missing_from_the_policy_alerts() -> None:
    m = SpanModel()
    m.snapshot([row(1, "Unknown", "unknown"), row(2, "Red Alarm", "red")], now=5.0)
    # "unknown" is in no configured policy: the fallback table says alert.
    verdict = m.classify([1], {"red": "failover"}, now=7.0)
    assert verdict.action == "alert"
    assert verdict.reason == "span alarm (span 1 unknown for 2.0 s): points at an unknown alarm"
    # A kind in neither table alerts too; one the policy names follows the policy.
    assert m.classify([2], {}, now=7.0).action == "alert"
    assert m.classify([2], {"red": "ignore"}, now=7.0).action == "none"
    assert m.classify([1, 2], {"red": "failover", "unknown": "failover"}).action == "failover"


def test_reason_says_how_old_the_alarm_is_or_nothing_without_a_clock() -> None:
    m = SpanModel()
    m.feed(alarm(1, "Red Alarm"), now=100.0)
    m.feed(alarm(2, "Red Alarm"), now=101.5)
    verdict = m.classify([1, 2], {"red": "failover"}, now=104.0)
    assert verdict.action == "failover"
    assert verdict.reason == (
        "every critical span in alarm (span 1 red for 4.0 s, span 2 red for 2.5 s): points at "
        "our side (loss of signal at our card: card, cable or appliance port)"
    )
    assert m.classify([1], {"red": "failover"}).reason.startswith(
        "every critical span in alarm (span 1 red): "
    )


def test_no_critical_spans_and_no_alarm() -> None:
    m = SpanModel()
    assert (m.classify([], {"red": "failover"}).action, m.classify([], {}).reason) == (
        "none",
        "no critical spans configured",
    )
    assert m.classify([1], {"red": "failover"}).reason == "critical spans without alarm"


def test_a_snapshot_reports_a_change_on_any_row() -> None:
    m = SpanModel()
    m.snapshot([row(1, "OK", "none"), row(2, "OK", "none")], now=1.0)
    # Span 1 changes, span 2 (the last row) does not: the snapshot still changed something.
    assert m.snapshot([row(1, "Red Alarm", "red"), row(2, "OK", "none")], now=2.0) is True
    assert m.snapshot([row(1, "Red Alarm", "red"), row(2, "OK", "none")], now=3.0) is False


def test_verdicts_carry_every_critical_span_s_kind() -> None:
    m = SpanModel()
    m.feed(alarm(1, "Red Alarm"), now=1.0)
    m.feed(alarm(2, "Blue Alarm"), now=1.0)
    partial = m.classify([1, 2], {"red": "failover", "blue": "alert"}, now=3.0)
    assert (partial.action, partial.kinds) == ("alert", {1: "red", 2: "blue"})
    assert partial.reason == (
        "span alarm (span 1 red for 2.0 s, span 2 blue for 2.0 s): points at our side "
        "(loss of signal at our card: card, cable or appliance port) "
        "(not every critical span, so not our card as a whole)"
    )
    assert m.classify([1], {"red": "failover"}).kinds == {1: "red"}
    assert m.classify([3], {"red": "failover"}).kinds == {3: "none"}


def test_channel_alarms_and_status_rows_through_feed() -> None:
    m = SpanModel()
    assert m.span_of_channel(24) == 1 and m.span_of_channel(25) == 2  # T1: 24 per span
    assert m.since(9) is None and m.kind(9) == "none"
    # A clear for a channel that never was in alarm changes nothing and does not fail.
    assert m.feed(parse_event({"Event": "AlarmClear", "DAHDIChannel": "30"}), 1.0) is False
    m.feed(parse_event({"Event": "Alarm", "DAHDIChannel": "30", "Alarm": "Red Alarm"}), 2.0)
    assert m.kind(2) == "red"
    status = parse_event(
        {
            "Event": "DAHDIShowStatus",
            "Span": "2",
            "Description": "T1 span 2",
            "Alarms": "OK",
            "IRQ": "0",
            "bpviol": "0",
        }
    )
    assert m.feed(status, 3.0) is True
    assert (m.kind(2), m.since(2)) == ("none", 3.0)


def test_a_no_alarm_channel_event_clears_that_channel() -> None:
    m = SpanModel()
    no_alarm = parse_event({"Event": "Alarm", "DAHDIChannel": "30", "Alarm": "No Alarm"})
    assert m.feed(no_alarm, 1.0) is False  # never in alarm: nothing to clear, no failure
    m.feed(parse_event({"Event": "Alarm", "DAHDIChannel": "30", "Alarm": "Red Alarm"}), 2.0)
    assert m.kind(2) == "red"
    assert m.feed(no_alarm, 3.0) is True
    assert (m.kind(2), m.since(2)) == ("none", 3.0)
