"""The lease against a real redis-server: epochs, expiry, renewal, release, corruption."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
import redis.asyncio as aredis

from bot.boottime import boottime
from bot.bus import Bus, BusCorrupt, BusError, BusUnavailable, Keys
from bot.config import RedisConfig
from bot.state import StateDir
from tests.bus.conftest import BusFactory
from tests.helpers import RedisServer, free_port, wait_for

KEYS = Keys("t")


async def raw_client(server: RedisServer) -> aredis.Redis:
    return aredis.Redis.from_url(server.url, socket_timeout=2)


async def test_key_names_keep_the_hash_tag() -> None:
    assert KEYS.leader == "failover:{t}:leader"
    assert KEYS.epoch == "failover:{t}:epoch"
    assert KEYS.node("a") == "failover:{t}:node:a"
    assert KEYS.control == "failover:{t}:control"
    assert KEYS.events == "failover:{t}:events"
    assert KEYS.wake == "failover:{t}:wake"


async def test_acquire_sets_value_and_ttl_and_only_one_wins(make_bus: BusFactory) -> None:
    a, b = make_bus("a"), make_bus("b")
    before = boottime()
    grant = await a.acquire(3.0, 0)
    assert grant is not None and grant.epoch == 1
    assert before <= grant.sent_at <= boottime()
    assert await b.acquire(3.0, 0) is None
    read = await b.read_lease()
    assert read.lease is not None and read.lease.holder == "a" and read.lease.epoch == 1
    assert read.pttl_ms is not None and 2000 < read.pttl_ms <= 3000
    assert read.sent_at <= read.reply_at
    assert read.run_id and len(read.run_id) == 40
    assert b.highest_epoch_seen == 1


async def test_lease_expires(make_bus: BusFactory) -> None:
    a, b = make_bus("a"), make_bus("b")
    assert await a.acquire(0.3, 0) is not None
    assert await b.acquire(0.3, 0) is None

    async def b_took_it() -> bool:
        return await b.acquire(3.0, 0) is not None

    await wait_for(b_took_it, within=3, what="lease to expire")
    read = await a.read_lease()
    assert read.lease is not None and read.lease.holder == "b" and read.lease.epoch == 2


async def test_epochs_strictly_increase_with_floors(make_bus: BusFactory) -> None:
    a, b = make_bus("a"), make_bus("b")
    seen = []
    for i in range(5):
        bus = a if i % 2 else b
        grant = await bus.acquire(3.0, 0)
        assert grant is not None
        seen.append(grant.epoch)
        assert await bus.release(grant.epoch)
    assert seen == sorted(set(seen)) and seen[0] == 1
    # A node's persisted floor wins over a smaller counter.
    grant = await a.acquire(3.0, 41)
    assert grant is not None and grant.epoch == 42
    assert await a.release(42)
    # The counter wins over a smaller floor.
    grant = await b.acquire(3.0, 3)
    assert grant is not None and grant.epoch == 43


async def test_epochs_grow_across_redis_restart_without_persistence(
    redis_server: RedisServer, make_bus: BusFactory, tmp_path: object
) -> None:
    state = StateDir(str(tmp_path) + "/state-a")
    a = make_bus("a")
    for _ in range(3):
        grant = await a.acquire(3.0, state.highest_epoch)
        assert grant is not None
        state.record_epoch(grant.epoch)
        await a.release(grant.epoch)
    assert state.highest_epoch == 3
    old_run_id = a.last_run_id
    redis_server.restart()  # no save, no AOF: everything is gone
    # A fresh bus (a restarted bot) has only its state directory as memory.
    fresh = make_bus("a")
    read = await fresh.read_lease()
    assert read.lease is None
    assert read.run_id != old_run_id
    grant = await fresh.acquire(3.0, StateDir(str(tmp_path) + "/state-a").highest_epoch)
    assert grant is not None and grant.epoch == 4
    await fresh.release(4)
    # The counter in the new server carries on from there for everyone.
    grant_b = await make_bus("b").acquire(3.0, 0)
    assert grant_b is not None and grant_b.epoch == 5


async def test_restart_is_noticed_through_run_id(
    redis_server: RedisServer, make_bus: BusFactory
) -> None:
    a = make_bus("a")
    await a.connect()
    first = a.last_run_id
    assert first == (await a.read_lease()).run_id == await a.server_run_id()
    redis_server.restart()
    try:
        read = await a.read_lease()
    except BusUnavailable:  # the pooled connection died with the server: next call reconnects
        read = await a.read_lease()
    assert read.run_id != first and a.last_run_id == read.run_id


async def test_renew_extends_only_own_value(make_bus: BusFactory) -> None:
    a, b = make_bus("a"), make_bus("b")
    grant = await a.acquire(0.5, 0)
    assert grant is not None
    result = await a.renew(grant.epoch, 5.0)
    assert result.outcome == "renewed" and result.sent_at >= grant.sent_at
    assert ((await b.read_lease()).pttl_ms or 0) > 4000
    # Another node, or a stale epoch, cannot renew it.
    other = await b.renew(grant.epoch, 5.0)
    assert other.outcome == "held_by_other" and other.holder == "a"
    stale = await a.renew(grant.epoch - 1 if grant.epoch > 1 else 99, 5.0)
    assert stale.outcome == "held_by_other"
    # Released: renewal reports the key missing (rule 4: take it again).
    assert await a.release(grant.epoch)
    assert (await a.renew(grant.epoch, 5.0)).outcome == "missing"


async def test_release_is_compare_and_delete(make_bus: BusFactory) -> None:
    a, b = make_bus("a"), make_bus("b")
    grant = await a.acquire(3.0, 0)
    assert grant is not None
    assert not await b.release(grant.epoch)
    assert not await a.release(grant.epoch + 1)
    assert (await b.read_lease()).lease is not None
    assert await a.release(grant.epoch)
    assert (await b.read_lease()).lease is None


async def test_release_naming_next_node_hands_over_within_200ms(make_bus: BusFactory) -> None:
    a, b, c = make_bus("a"), make_bus("b"), make_bus("c")
    grant = await a.acquire(30.0, 0)
    assert grant is not None
    wake = b.wakeups()
    assert await anext(wake) == "subscribed"

    async def b_takes_over() -> float:
        async for kind in wake:
            if kind == "lease_released":
                read = await b.read_lease()
                assert read.lease is not None and read.lease.next_node == "b"
                assert read.lease.released and not read.lease.held_by("a")
                got = await b.acquire(3.0, 0)
                assert got is not None and got.epoch == grant.epoch + 1
                return time.monotonic()
        raise AssertionError("wake-ups ended")

    taker = asyncio.create_task(b_takes_over())
    try:
        # A third node may not take a lease released to b, even though it is "released".
        start = time.monotonic()
        assert await a.release(grant.epoch, next_node="b")
        assert await c.acquire(3.0, 0) is None
        done = await asyncio.wait_for(taker, 2)
    finally:
        taker.cancel()
        await wake.aclose()
    assert done - start < 0.2, f"hand-over took {done - start:.3f}s"
    read = await c.read_lease()
    assert read.lease is not None and read.lease.holder == "b" and not read.lease.released


async def test_released_value_keeps_the_old_expiry(make_bus: BusFactory) -> None:
    a, c = make_bus("a"), make_bus("c")
    grant = await a.acquire(0.4, 0)
    assert grant is not None
    assert await a.release(grant.epoch, next_node="b")

    async def c_took_it() -> bool:
        return await c.acquire(3.0, 0) is not None

    # b never comes: after the old expiry anyone may take it.
    await wait_for(c_took_it, within=3, what="released lease to expire")


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"hello", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"holder": "a", "epoch": 3}', "no schema version"),
        (b'{"v": 2, "holder": "a", "epoch": 3}', "unknown schema version 2"),
        (b'{"v": true, "holder": "a", "epoch": 3}', "unknown schema version True"),
        (b'{"v": 1, "holder": "", "epoch": 3}', "field 'holder'"),
        (b'{"v": 1, "holder": "a", "epoch": "3"}', "field 'epoch'"),
        (b'{"v": 1, "holder": "a", "epoch": 0}', "field 'epoch'"),
    ],
)
async def test_corrupt_or_foreign_lease_is_an_error_never_free(
    redis_server: RedisServer, make_bus: BusFactory, value: bytes, reason: str
) -> None:
    raw = await raw_client(redis_server)
    try:
        await raw.set(KEYS.leader, value)
        a = make_bus("a")
        with pytest.raises(BusCorrupt) as info:
            await a.read_lease()
        assert info.value.key == KEYS.leader and reason in info.value.reason
        with pytest.raises(BusCorrupt):
            await a.acquire(3.0, 0)
        with pytest.raises(BusCorrupt):
            await a.renew(1, 3.0)
        assert not await a.release(3)
        assert await raw.get(KEYS.leader) == value  # nobody overwrote it
    finally:
        await raw.aclose()


async def test_corrupt_epoch_counter_refuses_acquire(
    redis_server: RedisServer, make_bus: BusFactory
) -> None:
    raw = await raw_client(redis_server)
    try:
        await raw.set(KEYS.epoch, b"lots")
        with pytest.raises(BusError, match="epoch counter"):
            await make_bus("a").acquire(3.0, 0)
        assert await raw.get(KEYS.leader) is None
    finally:
        await raw.aclose()


async def test_unreachable_redis_fails_fast_without_retries() -> None:
    port = free_port()  # nothing listens here
    bus = Bus(RedisConfig(url=f"redis://127.0.0.1:{port}/0", timeout=0.3), "t", "a")
    try:
        for call in (bus.read_lease(), bus.acquire(3.0, 0), bus.connect()):
            start = time.monotonic()
            with pytest.raises(BusUnavailable):
                await call
            assert time.monotonic() - start < 0.3 + 0.2
    finally:
        await bus.close()


async def test_unresponsive_redis_times_out_within_the_command_timeout(
    redis_server: RedisServer, make_bus: BusFactory
) -> None:
    a = make_bus("a", timeout=0.3)
    await a.connect()
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(BusUnavailable, match=r"within 0\.3s|Timeout"):
            await a.renew(1, 3.0)
        assert time.monotonic() - start < 0.3 + 0.2
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)


async def test_values_written_by_lua_parse_as_json(
    redis_server: RedisServer, make_bus: BusFactory
) -> None:
    a = make_bus("a")
    grant = await a.acquire(3.0, 2**40)
    assert grant is not None and grant.epoch == 2**40 + 1
    raw = await raw_client(redis_server)
    try:
        value = json.loads(await raw.get(KEYS.leader))
        assert value == {"v": 1, "holder": "a", "epoch": 2**40 + 1}
        assert int(await raw.get(KEYS.epoch)) == 2**40 + 1
    finally:
        await raw.aclose()


async def test_confirmation_refuses_a_write_no_replica_has(tmp_path: Path) -> None:
    lone = RedisServer(tmp_path / "lone")
    lone.start()
    bus = Bus(RedisConfig(url=lone.url, timeout=0.3), "t", "a", confirm_writes=True)
    try:
        with pytest.raises(BusError, match="no replica confirmed"):
            await bus.acquire(3.0, 0)
        assert (await bus.read_lease()).lease is None  # the unconfirmed lease was dropped
    finally:
        await bus.close()
        lone.stop()


async def test_a_release_marks_the_epoch_given_up_and_an_expiry_does_not(
    make_bus: BusFactory,
) -> None:
    """The mark tells the next holder that its predecessor let the lease go: no
    cluster.fence_command against it (design §3 rule 10)."""
    a, b = make_bus("a"), make_bus("b")
    assert await b.released_epoch() is None
    grant = await a.acquire(3.0, 0)
    assert grant is not None
    assert await a.release(grant.epoch) is True
    assert await b.released_epoch() == grant.epoch
    taken = await b.acquire(0.2, 0)
    assert taken is not None and taken.epoch == grant.epoch + 1

    async def expired() -> bool:
        return (await a.read_lease()).lease is None

    await wait_for(expired, 5, what="b's lease to expire")
    assert await a.released_epoch() == grant.epoch  # an expiry is no release
    again = await a.acquire(3.0, 0)
    assert again is not None and await a.release(again.epoch, next_node="b")
    assert await b.released_epoch() == again.epoch


async def test_a_planned_release_says_so_on_the_key(
    make_bus: BusFactory, redis_server: RedisServer
) -> None:
    a = make_bus("a")
    r = await raw_client(redis_server)
    try:
        for planned in (True, False):
            grant = await a.acquire(3.0, 0)
            assert grant is not None
            assert await a.release(grant.epoch, next_node="b", planned=planned)
            lease = (await a.read_lease()).lease
            assert lease is not None and (lease.next_node, lease.planned) == ("b", planned)
            await r.delete(KEYS.leader)
    finally:
        await r.aclose()
