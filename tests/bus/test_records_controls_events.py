"""Node records, control requests, the event stream and wake-ups on a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aredis

from bot.bus import Bus, BusCorrupt, Keys
from bot.config import Secret
from tests.bus.conftest import BusFactory
from tests.helpers import RedisServer, node_record, wait_for

KEYS = Keys("t")


async def next_wake(it: AsyncIterator[str], want: str, within: float = 2.0) -> None:
    async with asyncio.timeout(within):
        async for kind in it:
            if kind == want:
                return
    raise AssertionError(f"no {want} wake-up")


async def test_node_records_round_trip_and_expire(make_bus: BusFactory) -> None:
    a = make_bus("a", lease_ttl=0.2)  # records live three lease times: 0.6 s
    b = make_bus("b")
    rec = node_record(
        "a", health_reasons=["ami down"], ready_reasons=[], extra={"spans": {"1": "ok"}}
    )
    await a.publish_node_record(rec)
    await b.publish_node_record(node_record("b", role="primary", epoch=7))
    records = await b.node_records()
    assert records["a"] == rec and records["b"].role == "primary"
    assert b.highest_epoch_seen == 7 and a.highest_epoch_seen == 3

    async def a_gone() -> bool:
        return "a" not in await b.node_records()

    await wait_for(a_gone, within=3, what="a's record to expire")
    assert "b" in await b.node_records()


async def test_record_publishes_a_wakeup_only_when_it_changes(
    redis_server: RedisServer, make_bus: BusFactory
) -> None:
    a, b = make_bus("a"), make_bus("b")
    raw = aredis.Redis.from_url(redis_server.url)
    wake = b.wakeups()
    try:
        assert await anext(wake) == "subscribed"
        await a.publish_node_record(node_record("a", last_seen=1.0))
        await next_wake(wake, "record")
        await a.publish_node_record(node_record("a", last_seen=2.0))  # only last_seen: silent
        # Redis delivers one channel's messages in order: a wake-up from the publish
        # above would come before this marker.
        await raw.publish(KEYS.wake, "marker")
        async with asyncio.timeout(2):
            assert await anext(wake) == "marker"
        await a.publish_node_record(node_record("a", last_seen=3.0, healthy=False))
        async with asyncio.timeout(2):
            assert await anext(wake) == "record"
    finally:
        await wake.aclose()
        await raw.aclose()


async def test_corrupt_record_is_an_error(redis_server: RedisServer, make_bus: BusFactory) -> None:
    b = make_bus("b")
    await b.publish_node_record(node_record("b"))
    raw = aredis.Redis.from_url(redis_server.url)
    try:
        await raw.sadd(KEYS.nodes, "a")
        await raw.set(KEYS.node("a"), b'{"v": 1, "id": "a", "role": "standby", "healthy": "yes"}')
        with pytest.raises(BusCorrupt, match="healthy"):
            await b.node_records()
    finally:
        await raw.aclose()


async def test_controls_round_trip_with_wakeups(make_bus: BusFactory) -> None:
    cli, ha = make_bus("cli"), make_bus("a")
    assert await ha.controls() == type(await ha.controls())()  # all defaults
    wake = ha.wakeups()
    try:
        assert await anext(wake) == "subscribed"
        await cli.set_paused(True)
        await next_wake(wake, "control")
        await cli.set_cordon("b", True)
        await cli.set_failed("a", 2000.0)
        await cli.set_outdated("b", True)
        await cli.request_switchover("b", 30.0, request_id="r1")
        c = await ha.controls()
        assert c.paused and c.cordoned == {"b"} and c.failed == {"a": 2000.0}
        assert c.outdated == {"b"}
        assert c.switchover is not None
        assert (c.switchover.target, c.switchover.drain_timeout) == ("b", 30.0)
        assert c.switchover.request_id == "r1"
        # Clearing someone else's (older) request leaves the newer one alone.
        assert not await ha.clear_switchover("old")
        assert await ha.clear_switchover("r1")
        await cli.set_paused(False)
        await cli.set_cordon("b", False)
        await cli.set_failed("a", None)
        await cli.set_outdated("b", False)
        c = await ha.controls()
        assert not c.paused and not c.cordoned and not c.failed and not c.outdated
        # An explicit resume is kept, unlike a flag that vanished (design §3 rule 8).
        assert c.paused is False
        assert c.switchover is None
    finally:
        await wake.aclose()


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("paused", b'{"v": 1, "on": "yes"}', "field 'on'"),
        ("paused", b'{"on": true}', "no schema version"),
        ("switchover", b'{"v": 9, "target": "b"}', "unknown schema version 9"),
        ("bogus", b'{"v": 1}', "unknown control field"),
    ],
)
async def test_corrupt_control_is_an_error(
    redis_server: RedisServer, make_bus: BusFactory, field: str, value: bytes, reason: str
) -> None:
    raw = aredis.Redis.from_url(redis_server.url)
    try:
        await raw.hset(KEYS.control, field, value)
        with pytest.raises(BusCorrupt) as info:
            await make_bus("a").controls()
        assert reason in info.value.reason and field in info.value.key
    finally:
        await raw.aclose()


async def test_events_are_capped_ordered_and_redacted(make_bus: BusFactory) -> None:
    a = make_bus("a", events_maxlen=20)
    token = Secret("hunter2-token", "env:TOKEN")
    for i in range(200):
        await a.append_event("tick", f"tick {i}", n=i, epoch=4, token=token)
    events = await a.read_events(1000)
    assert 20 <= len(events) < 200  # approximate trimming keeps about maxlen
    assert [e["fields"]["n"] for e in events] == sorted(e["fields"]["n"] for e in events)
    assert events[-1]["message"] == "tick 199" and events[-1]["node"] == "a"
    assert all("hunter2" not in repr(e) for e in events)
    assert events[-1]["fields"]["token"].endswith("***)")
    assert (await a.read_events(3))[-1]["fields"]["n"] == 199


async def test_corrupt_event_entry_is_shown_not_fatal(
    redis_server: RedisServer, make_bus: BusFactory
) -> None:
    a = make_bus("a")
    await a.append_event("one", "first")
    raw = aredis.Redis.from_url(redis_server.url)
    try:
        await raw.xadd(KEYS.events, {"e": b"{broken"})
        await raw.xadd(KEYS.events, {"other": b"x"})
    finally:
        await raw.aclose()
    await a.append_event("two", "last")
    kinds = [e["kind"] for e in await a.read_events()]
    assert kinds == ["one", "corrupt", "corrupt", "two"]


async def test_follow_events_streams_new_entries(make_bus: BusFactory) -> None:
    a, b = make_bus("a"), make_bus("b")
    await a.append_event("old", "before following")
    since = (await b.read_events(1))[-1]["id"]
    stream = b.follow_events(since)
    try:
        first = asyncio.create_task(anext(stream))  # blocks in XREAD until something comes
        for i in range(3):
            await a.append_event("new", f"new {i}")
        got = [(await asyncio.wait_for(first, 5))["message"]]
        for _ in range(2):
            got.append((await asyncio.wait_for(anext(stream), 5))["message"])
    finally:
        await stream.aclose()
    assert got == ["new 0", "new 1", "new 2"]


async def test_wakeups_end_with_bus_unavailable_when_redis_goes(
    redis_server: RedisServer, make_bus: BusFactory
) -> None:
    from bot.bus import BusUnavailable

    b: Bus = make_bus("b")
    wake = b.wakeups()
    assert await anext(wake) == "subscribed"
    redis_server.stop()
    try:
        with pytest.raises(BusUnavailable):
            async with asyncio.timeout(5):
                await anext(wake)
    finally:
        await wake.aclose()
        redis_server.start()


async def test_pause_flag_is_three_valued(make_bus: BusFactory) -> None:
    """No flag (None) differs from an explicit resume (False): rule 8 needs to tell."""
    bus = make_bus("a")
    assert (await bus.controls()).paused is None
    await bus.set_paused(True)
    assert (await bus.controls()).paused is True
    await bus.set_paused(False)
    assert (await bus.controls()).paused is False
