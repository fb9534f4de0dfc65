"""Span alarm model: every kind, both event families, snapshots, classification."""

from __future__ import annotations

import pytest

from ami.events import SpanStatus, parse_event
from ami.spans import SpanModel
from bot.config import DEFAULT_SPAN_POLICY

TEXT = {
    "red": "Red Alarm",
    "yellow": "Yellow Alarm",
    "blue": "Blue Alarm",
    "recovering": "Recovering",
    "loopback": "Loopback",
    "notopen": "Not Open",
}
EXPECTED_ACTION = {
    "red": "failover",
    "yellow": "alert",
    "blue": "alert",
    "recovering": "none",
    "loopback": "alert",
    "notopen": "alert",
}


def span_alarm(span: int, text: str):
    return parse_event(
        {"Event": "SpanAlarm", "Privilege": "system,all", "Span": str(span), "Alarm": text}
    )


@pytest.mark.parametrize("kind", list(TEXT))
def test_every_kind_via_span_events(kind: str) -> None:
    m = SpanModel()
    for span in (1, 2):
        assert m.feed(span_alarm(span, TEXT[kind]), now=10.0)
    assert m.kind(1) == kind and m.since(1) == 10.0
    verdict = m.classify([1, 2], DEFAULT_SPAN_POLICY, now=12.5)
    assert verdict.action == EXPECTED_ACTION[kind], verdict.reason
    if kind == "red":
        assert "our side" in verdict.reason and "2.5 s" in verdict.reason
    if kind == "blue":
        assert "carrier" in verdict.reason
    if kind == "yellow":
        assert "far end" in verdict.reason
    m.feed(parse_event({"Event": "SpanAlarmClear", "Span": "1"}), now=20.0)
    assert m.kind(1) == "none" and m.since(1) == 20.0


@pytest.mark.parametrize("kind", list(TEXT))
def test_every_kind_via_channel_events(kind: str) -> None:
    m = SpanModel(channels_per_span=24)
    for ch in range(25, 49):  # span 2
        m.feed(parse_event({"Event": "Alarm", "DAHDIChannel": str(ch), "Alarm": TEXT[kind]}), 5.0)
    assert m.kind(2) == kind and m.kind(1) == "none"
    for ch in range(25, 48):
        m.feed(parse_event({"Event": "AlarmClear", "DAHDIChannel": str(ch)}), 6.0)
    assert m.kind(2) == kind and m.since(2) == 5.0  # one channel still in alarm
    m.feed(parse_event({"Event": "AlarmClear", "DAHDIChannel": "48"}), 7.0)
    assert m.kind(2) == "none" and m.since(2) == 7.0


def test_red_on_some_critical_spans_alerts_only() -> None:
    m = SpanModel()
    m.feed(span_alarm(1, "Red Alarm"), 1.0)
    v = m.classify([1, 2], DEFAULT_SPAN_POLICY)
    assert v.action == "alert" and "not every critical span" in v.reason
    assert m.classify([1], DEFAULT_SPAN_POLICY).action == "failover"
    assert m.classify([], DEFAULT_SPAN_POLICY).action == "none"
    assert m.classify([2], DEFAULT_SPAN_POLICY).action == "none"


def test_policy_table_overrides() -> None:
    m = SpanModel()
    m.feed(span_alarm(1, "Blue Alarm"), 1.0)
    assert m.classify([1], {**DEFAULT_SPAN_POLICY, "blue": "failover"}).action == "failover"
    assert m.classify([1], {**DEFAULT_SPAN_POLICY, "blue": "ignore"}).action == "none"


def test_worst_alarm_wins_and_snapshot_replaces_events() -> None:
    m = SpanModel()
    m.feed(span_alarm(1, "Blue Alarm"), 1.0)
    m.feed(parse_event({"Event": "Alarm", "DAHDIChannel": "3", "Alarm": "Red Alarm"}), 2.0)
    assert m.kind(1) == "red"
    rows = [
        SpanStatus(1, "T1", "OK", "none"),
        SpanStatus(2, "T1", "BLU/YEL/RED", "red"),
    ]
    assert m.snapshot(rows, 3.0)
    assert m.kind(1) == "none" and m.kind(2) == "red" and m.since(2) == 3.0
    assert not m.snapshot(rows, 4.0)  # unchanged: since stays
    assert m.since(2) == 3.0


def test_dahdi_show_status_codes() -> None:
    ev = parse_event(
        {"Event": "DAHDIShowStatus", "Span": "1", "Description": "x", "Alarms": "BLU/YEL"}
    )
    assert ev.status.kind == "yellow"  # type: ignore[attr-defined]
    for codes, kind in [
        ("OK", "none"),
        ("UNCONFIGURED", "notopen"),
        ("UUU", "unknown"),
        ("LB", "loopback"),
        ("REC", "recovering"),
        ("NOP", "notopen"),
    ]:
        ev = parse_event({"Event": "DAHDIShowStatus", "Span": "1", "Alarms": codes})
        assert ev.status.kind == kind  # type: ignore[attr-defined]


def test_malformed_span_event_passes_through_untyped() -> None:
    ev = parse_event({"Event": "SpanAlarm", "Span": "one", "Alarm": "Red Alarm"})
    assert type(ev).__name__ == "AmiEvent" and ev.get("span") == "one"
    assert not SpanModel().feed(ev, 1.0)
