from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.bus import Bus
from bot.config import RedisConfig
from tests.helpers import RedisServer

BusFactory = Callable[..., Bus]


@pytest.fixture
async def make_bus(redis_server: RedisServer) -> AsyncIterator[BusFactory]:
    """Buses on the test's redis-server; all closed at the end."""
    made: list[Bus] = []

    def factory(node_id: str, url: str | None = None, **kwargs: Any) -> Bus:
        cfg = RedisConfig(url=url or redis_server.url, timeout=kwargs.pop("timeout", 0.5))
        bus = Bus(cfg, kwargs.pop("cluster", "t"), node_id, **kwargs)
        made.append(bus)
        return bus

    yield factory
    for bus in made:
        await bus.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: Sentinel failover tests (about 20 s each)")
