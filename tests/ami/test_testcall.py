"""Test calls against the simulator: every outcome, including timeout."""

from __future__ import annotations

import pytest

from ami.errors import AmiConnectionError
from ami.simulator import AsteriskSimulator, control
from ami.testcall import originate_fields, run_test_call
from bot.config import TestCallConfig as CallCfg


@pytest.mark.parametrize(
    "mode,outcome,code",
    [
        ("answer", "answered", 4),
        ("busy", "busy", 5),
        ("noanswer", "no_answer", 3),
        ("congestion", "congestion", 8),
        ("fail", "failed", 0),
    ],
)
async def test_outcomes(
    sim: AsteriskSimulator, make_client, mode: str, outcome: str, code: int
) -> None:
    c = make_client(sim, ping_interval=5.0)
    await c.start()
    await c.wait_fully_booted(3)
    await control(sim.control_port, {"cmd": "testcall", "mode": mode})
    result = await run_test_call(c, CallCfg(timeout=0.2))
    assert result.outcome == outcome, result
    assert result.reason_code == code
    assert result.setup_seconds is not None and result.setup_seconds < 2
    if outcome == "answered":
        assert result.channel.startswith("Local/100@test-") and result.uniqueid != "<unknown>"
    else:
        assert result.channel == "Local/100@test"


async def test_dialplan_outcomes_and_refusal(sim: AsteriskSimulator, make_client) -> None:
    c = make_client(sim, ping_interval=5.0)
    await c.start()
    await c.wait_fully_booted(3)
    busy = await run_test_call(c, CallCfg(channel="Local/busy@test", timeout=1))
    assert busy.outcome == "busy"
    refused = await run_test_call(c, CallCfg(exten="nosuch", timeout=1))
    assert refused.outcome == "failed" and "Extension does not exist." in refused.reason
    app = await run_test_call(c, CallCfg(application="Wait", data="1", context=None))
    assert app.outcome == "answered"
    await control(sim.control_port, {"cmd": "span_alarm", "span": 1, "kind": "red"})
    await control(sim.control_port, {"cmd": "span_alarm", "span": 2, "kind": "red"})
    pstn = await run_test_call(c, CallCfg(channel="DAHDI/g1/5551234", timeout=1))
    assert pstn.outcome == "congestion"


async def test_timeout(sim: AsteriskSimulator, make_client, monkeypatch) -> None:
    monkeypatch.setattr("ami.testcall.RESPONSE_MARGIN", 0.1)
    c = make_client(sim, ping_interval=5.0)
    await c.start()
    await c.wait_fully_booted(3)
    await control(sim.control_port, {"cmd": "testcall", "mode": "silent"})
    result = await run_test_call(c, CallCfg(timeout=0.2))
    assert result.outcome == "timeout" and result.setup_seconds is None
    assert "no OriginateResponse" in result.reason


async def test_not_connected(sim: AsteriskSimulator, make_client) -> None:
    c = make_client(sim)
    with pytest.raises(AmiConnectionError):
        await run_test_call(c, CallCfg())


def test_originate_fields_always_async_and_cdr_off() -> None:
    f = originate_fields(CallCfg(variables={"X": "1"}, timeout=2.5), "id-1")
    assert f["Async"] == "true" and f["ActionID"] == "id-1" and f["Timeout"] == "2500"
    assert f["Variable"] == ["CDR_PROP(disable)=1", "X=1"]
    assert (f["Context"], f["Exten"], f["Priority"]) == ("test", "answer", "1")


async def test_a_missing_write_right_is_named(make_client) -> None:
    """As a real Asterisk does, the simulator answers only "Permission denied" to a user
    without `write = originate`; the client names the missing right."""
    sim = AsteriskSimulator(port=0, secret="s", write=["reporting"], auth_fail_delay=0.1)
    await sim.start()
    try:
        c = make_client(sim, secret="s", ping_interval=5.0)
        await c.start()
        await c.wait_fully_booted(3)
        assert await c.active_channels() == 0  # write = reporting is granted
        result = await run_test_call(c, CallCfg(timeout=0.5))
        assert result.outcome == "failed"
        assert "Permission denied" in result.reason
        assert "lacks `write = originate`" in result.reason
    finally:
        await sim.stop()


async def test_without_read_call_no_originate_response_arrives(make_client) -> None:
    """As a real Asterisk: a user without `read = call` never sees its OriginateResponse."""
    sim = AsteriskSimulator(port=0, secret="s", read=["system"], auth_fail_delay=0.1)
    await sim.start()
    try:
        c = make_client(sim, secret="s", ping_interval=5.0)
        await c.start()
        await c.wait_fully_booted(3)  # FullyBooted is class system: still seen
        result = await run_test_call(c, CallCfg(timeout=0.2))
        assert result.outcome == "timeout", result
        assert "`read = call`" in result.reason
    finally:
        await sim.stop()


async def test_a_shared_dialplan_file_is_read_at_each_call(
    sim: AsteriskSimulator, make_client, tmp_path
) -> None:
    c = make_client(sim, ping_interval=5.0)
    await c.start()
    await c.wait_fully_booted(3)
    sim.dialplan_file = tmp_path / "dialplan.json"
    assert (await run_test_call(c, CallCfg(timeout=1))).outcome == "answered"  # no file yet
    sim.dialplan_file.write_text('{"test": {"100": "congestion", "101": "bogus"}}')
    assert (await run_test_call(c, CallCfg(timeout=1))).outcome == "congestion"
    unknown = await run_test_call(c, CallCfg(channel="Local/101@test", timeout=1))
    assert unknown.outcome == "failed"  # an outcome the simulator does not know is ignored
    sim.dialplan_file.write_text("{not json")
    assert (await run_test_call(c, CallCfg(timeout=1))).outcome == "answered"
    sim.dialplan_file.unlink()
    assert (await run_test_call(c, CallCfg(timeout=1))).outcome == "answered"
