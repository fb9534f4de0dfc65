"""The outdated mark on Redis is confirmed as the lease is: WAIT 1, or it did not happen."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.bus import Bus, BusUnavailable
from bot.config import RedisConfig
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
