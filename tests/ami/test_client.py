"""The AMI client against the simulator over loopback."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from ami.client import AUTH_RETRY, AmiState, backoff_delay
from ami.errors import AmiActionError, AmiConnectionError, AmiTimeout
from ami.events import AmiEvent, Shutdown, SpanAlarm
from ami.simulator import AsteriskSimulator, control
from tests.ami.conftest import SECRET
from tests.helpers import wait_for


async def test_login_and_actions(sim: AsteriskSimulator, make_client) -> None:
    c = make_client(sim)
    await c.start()
    await c.wait_fully_booted(3)
    assert c.state is AmiState.FULLY_BOOTED
    assert c.ami_version == "11.0.0"
    status = await c.core_status()
    assert status["CoreCurrentCalls"] == "0"
    assert await c.active_channels() == 0
    await control(sim.control_port, {"cmd": "channels", "count": 3})
    assert await c.active_channels() == 3
    rows = await c.dahdi_show_status()
    assert [(r.span, r.kind) for r in rows] == [(1, "none"), (2, "none")]
    assert "Asterisk 22.10.1" in await c.command("core show version")
    with pytest.raises(AmiActionError, match="No such command"):
        await c.command("no such cli command")
    await wait_for(lambda: c.last_ping_rtt is not None, 2, what="a Ping round trip")


async def test_not_booted_until_fully_booted() -> None:
    sim = AsteriskSimulator(port=0, secret=SECRET, boot_delay=0.5)
    await sim.start()
    from ami.client import AmiClient

    c = AmiClient("127.0.0.1", sim.port, "failover", SECRET)
    try:
        await c.start()
        await wait_for(lambda: c.state is AmiState.AUTHENTICATED, 2, what="login")
        assert not sim.booted  # logged in, but an open port is no proof of readiness
        with pytest.raises(AmiTimeout):
            await c.wait_fully_booted(0.05)
        await c.wait_fully_booted(3)
        assert c.state is AmiState.FULLY_BOOTED
    finally:
        await c.close()
        await sim.stop()


async def test_wrong_secret_is_clear_slow_and_secret_free(
    sim: AsteriskSimulator, make_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wr0ng-secret-xyz"
    c = make_client(sim, secret=wrong)
    await c.start()
    await wait_for(lambda: c.last_error is not None, 3, what="login refusal")
    assert "Authentication failed" in c.last_error
    assert c.state is not AmiState.AUTHENTICATED
    attempts = c.connects + c.reconnects
    # No hot loop: the next attempt waits the slow auth retry (>= 5 s), not the backoff.
    await wait_for(lambda: c.retry_delay is not None, 3, what="the retry to be planned")
    assert c.retry_delay is not None and c.retry_delay >= AUTH_RETRY
    assert c.reconnects + c.connects == attempts
    text = caplog.text + repr(c) + str(c.last_error)
    assert wrong not in text and SECRET not in text
    assert "login refused" in caplog.text


async def test_action_when_disconnected_raises(make_client, sim: AsteriskSimulator) -> None:
    c = make_client(sim)
    with pytest.raises(AmiConnectionError):
        await c.core_status()


async def test_reconnect_after_drop(sim: AsteriskSimulator, make_client) -> None:
    c = make_client(sim)
    await c.start()
    await c.wait_fully_booted(3)
    states: list[AmiState] = []
    c.on_state(lambda s, _t: states.append(s))
    answer = await control(sim.control_port, {"cmd": "drop"})
    assert answer["dropped"] == 1
    await wait_for(lambda: AmiState.DISCONNECTED in states, 2, what="loss noticed")
    await c.wait_fully_booted(3)
    assert c.reconnects >= 1 and c.connects == 2
    assert await c.active_channels() == 0


@pytest.mark.parametrize("interval,ping_timeout", [(0.2, 0.2), (0.3, 0.15)])
async def test_stall_detected_within_bound(
    sim: AsteriskSimulator, make_client, interval: float, ping_timeout: float
) -> None:
    c = make_client(sim, ping_interval=interval, ping_timeout=ping_timeout)
    await c.start()
    await c.wait_fully_booted(3)
    await wait_for(lambda: c.last_ping_rtt is not None, 2, what="first Pong")
    lost = asyncio.Event()
    c.on_state(lambda s, _t: lost.set() if s is AmiState.DISCONNECTED else None)
    await control(sim.control_port, {"cmd": "stall"})
    t0 = time.monotonic()
    await asyncio.wait_for(lost.wait(), 5)
    took = time.monotonic() - t0
    assert took <= (interval + ping_timeout) * 1.1, took
    assert "no Ping reply" in (c.last_error or "")
    await control(sim.control_port, {"cmd": "unstall"})
    await c.wait_fully_booted(3)


async def test_shutdown_is_immediate_loss_and_single_reconnect_layer(
    sim: AsteriskSimulator, make_client
) -> None:
    c = make_client(sim)
    events: list[AmiEvent] = []
    c.subscribe(events.append)
    await c.start()
    await c.wait_fully_booted(3)
    await control(sim.control_port, {"cmd": "shutdown", "restart": True})
    await wait_for(lambda: c.last_shutdown is not None, 2, what="Shutdown")
    assert c.last_shutdown.restart is True and c.last_shutdown.cleanly is True
    assert any(isinstance(e, Shutdown) for e in events)
    await c.wait_fully_booted(3)  # the simulator rebooted; we reconnected once
    assert c.connects == 2
    assert sum(1 for s in sim.sessions if s.authenticated) == 1


async def test_span_events_reach_subscribers(sim: AsteriskSimulator, make_client) -> None:
    c = make_client(sim)
    got: list[AmiEvent] = []
    unsubscribe = c.subscribe(got.append)
    await c.start()
    await c.wait_fully_booted(3)
    await control(sim.control_port, {"cmd": "span_alarm", "span": 2, "kind": "blue"})
    await wait_for(lambda: any(isinstance(e, SpanAlarm) for e in got), 2, what="SpanAlarm")
    span = next(e for e in got if isinstance(e, SpanAlarm))
    assert (span.span, span.kind) == (2, "blue")
    assert sum(1 for e in got if e.name == "Alarm") == 24
    unsubscribe()
    n = len(got)
    await control(sim.control_port, {"cmd": "span_clear", "span": 2})
    assert (await c.dahdi_show_status())[1].kind == "none"
    assert len(got) == n


async def test_slow_action_times_out(sim: AsteriskSimulator, make_client) -> None:
    c = make_client(sim, ping_interval=5.0, action_timeout=0.1)
    await c.start()
    await c.wait_fully_booted(3)
    await control(sim.control_port, {"cmd": "slow", "delay": 0.3})
    with pytest.raises(AmiTimeout, match="CoreStatus"):
        await c.core_status()
    await control(sim.control_port, {"cmd": "slow", "delay": 0})


def test_backoff_bounds() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(n, rng) for n in range(12)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= 5.0 for d in delays)
    assert delays[-1] >= 2.5
