"""The outdated mark on Redis is confirmed as the lease is: WAIT 1, or it did not happen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.bus import Bus, BusUnavailable, MarkedOutdated
from bot.config import RedisConfig
from tests.bus.conftest import BusFactory
from tests.helpers import RedisServer, wait_for


async def test_unconfirmed_mark_is_an_error_not_a_fence(tmp_path: Path) -> None:
    lone = RedisServer(tmp_path / "lone")
    lone.start()
    bus = Bus(RedisConfig(url=lone.url, timeout=1.0), "t", "a", confirm_writes=True)
    try:
        with pytest.raises(BusUnavailable, match="no replica confirmed"):
            await bus.set_outdated("b", True)
    finally:
        await bus.close()
        lone.stop()


async def test_mark_confirmed_by_a_replica(tmp_path: Path) -> None:
    master = RedisServer(tmp_path / "master")
    master.start()
    replica = RedisServer(
        tmp_path / "replica", extra=["--replicaof", "127.0.0.1", str(master.port)]
    )
    replica.start()
    bus = Bus(RedisConfig(url=master.url, timeout=3.0), "t", "a", confirm_writes=True)
    on_replica = Bus(RedisConfig(url=replica.url, timeout=1.0), "t", "b")
    try:

        async def replica_linked() -> bool:
            info = await bus._r.info("replication")
            slave = info.get("slave0")
            return isinstance(slave, dict) and slave.get("state") == "online"

        await wait_for(replica_linked, 10, what="the replica to connect")
        assert await bus.set_outdated("b", True, by="a") == 1
        assert "b" in (await on_replica.controls()).outdated
        assert await bus.set_outdated("b", False) == 1
        assert "b" not in (await on_replica.controls()).outdated
    finally:
        await bus.close()
        await on_replica.close()
        replica.stop()
        master.stop()


async def test_acquire_refuses_a_node_marked_outdated(make_bus: BusFactory) -> None:
    a, b = make_bus("a"), make_bus("b")
    await a.set_outdated("b", True, by="a")
    with pytest.raises(MarkedOutdated, match="b is marked outdated"):
        await b.acquire(3.0, 0)
    assert (await b.read_lease()).lease is None
    # Not even a lease released to it (a switchover): its data must not be promoted.
    grant = await a.acquire(3.0, 0)
    assert grant is not None
    await a.release(grant.epoch, next_node="b")
    with pytest.raises(MarkedOutdated):
        await b.acquire(3.0, 0)
    await a.set_outdated("b", False)
    taken = await b.acquire(3.0, 0)
    assert taken is not None and taken.epoch == grant.epoch + 1


async def test_mark_is_refused_for_the_lease_holder_in_one_script(make_bus: BusFactory) -> None:
    a, b = make_bus("a"), make_bus("b")
    grant = await b.acquire(3.0, 0)
    assert grant is not None
    holder, _ = await a.mark_outdated("b", by="a")
    assert holder is not None and (holder.holder, holder.epoch) == ("b", grant.epoch)
    assert "b" not in (await a.controls()).outdated
    await b.release(grant.epoch, next_node="a")  # released: b no longer holds it
    holder, replicas = await a.mark_outdated("b", by="a")
    assert (holder, replicas) == (None, None)
    assert "b" in (await a.controls()).outdated


async def test_clear_takes_only_the_mark_that_was_seen(make_bus: BusFactory) -> None:
    a, b = make_bus("a"), make_bus("b")
    await a.mark_outdated("b", by="a")
    seen = await b.outdated_mark("b")
    assert seen is not None and json.loads(seen)["by"] == "a"
    # The link broke again meanwhile: a newer mark replaced the one seen.
    await wait_for(lambda: _later(a), 2, what="a newer mark")
    assert not await b.clear_outdated_mark("b", seen)
    assert "b" in (await b.controls()).outdated
    assert await b.clear_outdated_mark("b", str(await b.outdated_mark("b")))
    assert "b" not in (await b.controls()).outdated
    assert await b.outdated_mark("b") is None


async def _later(bus: Bus) -> bool:
    before = await bus.outdated_mark("b")
    await bus.mark_outdated("b", by="a")
    return await bus.outdated_mark("b") != before
