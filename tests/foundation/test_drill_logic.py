"""The drill's pure logic: when it refuses, what it measures, what it reports."""

from __future__ import annotations

from typing import Any

from bot.drill import OutageMeter, Report, Step, channels_left, refusals, serving


def pair(**b: Any) -> dict[str, Any]:
    a = {"id": "a", "role": "primary", "healthy": True, "ready": True, "stale": False}
    node_b = {"id": "b", "role": "standby", "healthy": True, "ready": True, "stale": False}
    node_b.update(b)
    return {"nodes": [a, node_b], "paused": False, "switchover": None}


def test_a_healthy_ready_pair_may_drill() -> None:
    assert refusals(pair()) == []
    assert serving(pair()) == "a"


def test_every_reason_to_refuse_is_named() -> None:
    assert refusals(pair(stale=True)) == ["b is not reporting"]
    assert refusals(pair(ready=False, ready_reasons=["drbd: outdated"])) == [
        "standby b is not ready: drbd: outdated"
    ]
    assert refusals(pair(healthy=False)) == ["b is not healthy: not healthy"]
    assert refusals(pair(cordoned=True)) == ["b is cordoned"]
    assert refusals({**pair(), "paused": True}) == ["the cluster is paused"]
    assert "0 primary node(s), not one" in refusals(pair(role="standby") | {"nodes": []})
    two = pair(role="primary")
    assert "2 primary node(s), not one" in refusals(two)


def test_outage_is_the_time_without_a_serving_node() -> None:
    meter = OutageMeter()
    for now, server in ((0.0, "a"), (1.0, None), (1.5, None), (3.0, "b"), (4.0, None)):
        meter.sample(now, server)
    assert meter.finish(4.5) == 2.0 + 0.5


def test_channels_left_from_the_drain_step() -> None:
    assert channels_left("drain ok in 120 ms: no calls left") == 0
    assert channels_left("drain ok in 30000 ms: 3 channel(s) left after drain") == 3
    assert channels_left("drain FAILED in 10 ms") is None


def test_report_passes_only_when_both_steps_passed_and_the_original_serves() -> None:
    over = Step("switch over to b", "a", "b", ok=True, seconds=3.2, calls_at_start=2, calls_left=0)
    back = Step("switch back to a", "b", "a", ok=True, seconds=3.0, test_call="answered")
    report = Report("pbx", 1.0, steps=[over, back], serving_at_end="a", original_primary="a")
    assert report.ok and over.calls_drained == 2
    assert report.summary().startswith("drill passed")
    text = report.textfile()
    assert 'failoverbot_drill_success{cluster="pbx"} 1' in text
    assert 'failoverbot_drill_calls_drained{cluster="pbx",to="b"} 2' in text
    report.serving_at_end = "b"
    assert not report.ok
    refused = Report("pbx", 1.0, refused=["b is cordoned"])
    assert not refused.ok and refused.summary() == "drill refused: b is cordoned"


def test_a_drain_is_not_an_outage_a_stopped_asterisk_is() -> None:
    from bot.drill import answering

    def status(role: str, booted: bool) -> dict[str, Any]:
        extra = {"asterisk": {"fully_booted": booted}}
        return {"nodes": [{"id": "a", "role": role, "healthy": True, "extra": extra}]}

    assert answering(status("primary", True)) == "a"
    assert answering(status("demoting", True)) == "a"  # draining: calls still carried
    assert answering(status("demoting", False)) is None  # Asterisk stopped
    assert answering(status("standby", True)) is None
