"""Random, truncated and non-UTF-8 input never crashes the codec, the client or the simulator."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ami.client import AmiState
from ami.codec import FrameDecoder
from ami.errors import AmiProtocolError
from ami.events import AmiEvent, SpanAlarm, parse_event
from ami.simulator import AsteriskSimulator
from tests.ami.conftest import SECRET, captures_dir
from tests.helpers import wait_for

chunks = st.lists(st.binary(max_size=300), max_size=20)
frameish = st.lists(
    st.one_of(
        st.binary(max_size=60),
        st.sampled_from(
            [
                b"\r\n",
                b"\r\n\r\n",
                b"Event: SpanAlarm\r\n",
                b"Span: x\r\n",
                b"\xff\xfe: \x80\r\n",
                b"Event: Shutdown\r\n",
                b"ActionID: ",
                b":",
                b"Response: Error\r\n",
            ]
        ),
    ),
    max_size=40,
)


@given(chunks)
@settings(max_examples=300, deadline=None)
def test_decoder_never_crashes_on_random_bytes(data: list[bytes]) -> None:
    dec = FrameDecoder(max_frame=512)
    for chunk in data:
        dec.receive_data(chunk)
        try:
            for frame in dec.frames():
                assert isinstance(frame, dict)
                if "Event" in frame:
                    parse_event(frame)
        except AmiProtocolError:
            return
        assert dec.buffered <= 512 + 300


@given(frameish, st.integers(min_value=1, max_value=50))
@settings(max_examples=300, deadline=None)
def test_truncated_real_traffic_and_junk(parts: list[bytes], cut: int) -> None:
    real = (captures_dir() / "ami-login.txt").read_bytes()
    data = real[: len(real) * cut // 50] + b"".join(parts)
    dec = FrameDecoder(expect_greeting=True)
    dec.receive_data(data)
    try:
        for frame in dec.frames():
            if isinstance(frame, dict) and "Event" in frame:
                parse_event(frame)
    except AmiProtocolError:
        pass


def test_endless_line_is_bounded() -> None:
    dec = FrameDecoder(max_frame=4096)
    with pytest.raises(AmiProtocolError, match="without a terminator"):
        for _ in range(100):
            dec.receive_data(b"A" * 1000)
            list(dec.frames())
    assert dec.buffered == 0


@given(st.lists(st.binary(max_size=200), min_size=1, max_size=10))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_client_survives_random_frames(payloads: list[bytes]) -> None:
    async def run() -> None:
        from ami.client import AmiClient

        got: list[object] = []
        # Inject the junk straight into the live connection's protocol.
        sim = AsteriskSimulator(port=0, secret=SECRET)
        await sim.start()
        c = AmiClient("127.0.0.1", sim.port, "failover", SECRET, ping_interval=5.0)
        c.subscribe(got.append)
        try:
            await c.start()
            await c.wait_fully_booted(3)
            proto = c._proto
            assert proto is not None
            for p in payloads:
                proto.data_received(p + b"\r\n\r\n")
            # Still usable afterwards (or, if the junk broke framing, reconnected): actions
            # are answered and a real event still reaches the subscriber, parsed.
            await c.wait_fully_booted(3)
            await c.core_status()
            sim.set_span_alarm(3, "red")
            await wait_for(
                lambda: any(isinstance(e, SpanAlarm) and e.span == 3 for e in got),
                3,
                what="the span alarm after the junk",
            )
            assert all(isinstance(e, AmiEvent) for e in got), got
        finally:
            await c.close()
            await sim.stop()

    asyncio.run(run())


async def test_client_endless_line_closes_connection_with_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ami.client import AmiClient

    sim = AsteriskSimulator(port=0, secret=SECRET)
    await sim.start()
    c = AmiClient("127.0.0.1", sim.port, "failover", SECRET, ping_interval=5.0, max_frame=8192)
    try:
        await c.start()
        await c.wait_fully_booted(3)
        states: list[AmiState] = []
        c.on_state(lambda s, _t: states.append(s))
        proto = c._proto
        assert proto is not None
        for _ in range(20):
            proto.data_received(b"X" * 1000)
        await wait_for(lambda: AmiState.DISCONNECTED in states, 2, what="connection closed")
        assert "without a terminator" in caplog.text
        await c.wait_fully_booted(3)  # and it reconnects
    finally:
        await c.close()
        await sim.stop()


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=8))
@settings(max_examples=25, deadline=None)
def test_simulator_survives_random_input(payloads: list[bytes]) -> None:
    async def run() -> None:
        sim = AsteriskSimulator(port=0, secret=SECRET, max_frame=4096, auth_fail_delay=0.0)
        await sim.start()
        try:
            _, w = await asyncio.open_connection("127.0.0.1", sim.port)
            for p in payloads:
                w.write(p)
            w.write(b"\r\n\r\n")
            await w.drain()
            w.close()
            # A well-formed session still works afterwards.
            r2, w2 = await asyncio.open_connection("127.0.0.1", sim.port)
            w2.write(b"Action: Ping\r\nActionID: p\r\n\r\n")
            await asyncio.wait_for(r2.readuntil(b"Permission denied\r\n\r\n"), 3)
            w2.close()
        finally:
            await sim.stop()

    asyncio.run(run())


async def test_simulator_endless_line_closes_session(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    sim = AsteriskSimulator(port=0, secret=SECRET, max_frame=4096)
    await sim.start()
    try:
        r, w = await asyncio.open_connection("127.0.0.1", sim.port)
        await r.readline()
        w.write(b"Y" * 20000)
        assert await asyncio.wait_for(r.read(-1), 3) == b""
        assert "without a terminator" in caplog.text
        w.close()
    finally:
        await sim.stop()
