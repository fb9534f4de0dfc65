"""The model world's bus against the real one: the same operations, the same replies.

``tests/ha/world.py``'s ``ModelBus`` is a copy, in Python, of what the Lua scripts
of ``bot.bus.scripts`` do on Redis. A copy can drift: here both are driven, step
by step, with the same seeded sequences of acquires, renewals, releases (to nobody,
to the other node, twice), reads, expiries and restarts, the real ``Bus`` against a
real redis-server, and every reply is compared.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aredis

from bot.bus import Bus, Keys
from bot.config import RedisConfig
from tests.ha.world import Key, ModelBus
from tests.helpers import RedisServer

NODES = ("a", "b")
TTL = 60.0  # no key expires by itself during a sequence: expiry is an operation
SEQUENCES = 40
STEPS = 40


class BusWorld:
    """Just the model Redis of ``World``: no links, no delays, a clock that stands still."""

    def __init__(self) -> None:
        self.key: Key | None = None
        self.counter = 0
        self.run_id = 0
        self.records: dict[str, Any] = {}
        self.paused: bool | None = None
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def redis_up(self, node: str) -> bool:
        return True

    def live_key(self) -> Key | None:
        return self.key

    async def exchange(self, node: str, link: Callable[[], bool], op: Callable[[], Any]) -> Any:
        return op()

    def restart_redis(self) -> None:
        self.key, self.counter, self.run_id = None, 0, self.run_id + 1


def draw_op(rng: random.Random, epochs: list[int]) -> tuple[Any, ...]:
    node = rng.choice(NODES)
    other = NODES[1 - NODES.index(node)]
    epoch = rng.choice([*epochs[-3:], 0, 1, 99]) if epochs else rng.choice([0, 1])
    kind = rng.choices(
        ["acquire", "renew", "release", "read", "expire", "restart"], [5, 4, 4, 3, 1, 1]
    )[0]
    if kind == "acquire":
        return ("acquire", node, rng.choice([0, 0, 1, max(epochs, default=0) + 2]))
    if kind == "renew":
        return ("renew", node, epoch)
    if kind == "release":
        return ("release", node, epoch, rng.choice([None, other, node]))
    if kind == "read":
        return ("read", node)
    return (kind,)


async def apply(op: tuple[Any, ...], bus: dict[str, Any], expire: Callable[[], Any]) -> Any:
    """One operation on one implementation; the reply in a comparable shape."""
    kind = op[0]
    if kind == "acquire":
        grant = await bus[op[1]].acquire(TTL, op[2])
        return ("granted", grant.epoch) if grant is not None else ("refused",)
    if kind == "renew":
        result = await bus[op[1]].renew(op[2], TTL)
        found = result.lease
        shape = (found.holder, found.epoch, found.next_node) if found is not None else None
        return (result.outcome, result.holder, shape)
    if kind == "release":
        return await bus[op[1]].release(op[2], op[3])
    if kind == "read":
        read = await bus[op[1]].read_lease()
        lease = read.lease
        shape = (lease.holder, lease.epoch, lease.next_node) if lease is not None else None
        return (shape, read.pttl_ms is not None)
    await expire()
    return None


@pytest.mark.parametrize("seed", range(SEQUENCES))
async def test_model_bus_answers_as_the_real_bus(redis_server: RedisServer, seed: int) -> None:
    rng = random.Random(seed)
    keys = Keys("t")
    raw = aredis.Redis.from_url(redis_server.url, socket_timeout=2)
    await raw.flushall()
    cfg = RedisConfig(url=redis_server.url, timeout=2.0)
    real = {n: Bus(cfg, "t", n, lease_ttl=TTL) for n in NODES}
    world = BusWorld()
    model = {n: ModelBus(world, n, world.now, 2.0) for n in NODES}  # type: ignore[arg-type]
    epochs: list[int] = []

    async def real_expire() -> None:
        await raw.delete(keys.leader)

    async def real_restart() -> None:
        await raw.flushall()  # a restart without persistence: every key is gone

    async def model_expire() -> None:
        world.key = None

    async def model_restart() -> None:
        world.restart_redis()

    history: list[str] = []
    try:
        for _ in range(STEPS):
            op = draw_op(rng, epochs)
            if op[0] == "restart":
                got_real = await apply(op, real, real_restart)
                got_model = await apply(op, model, model_restart)
            else:
                got_real = await apply(op, real, real_expire)
                got_model = await apply(op, model, model_expire)
            history.append(f"{op} -> real {got_real}, model {got_model}")
            assert got_model == got_real, "the model bus drifted from the real one:\n" + "\n".join(
                history
            )
            seen = {n: (real[n].highest_epoch_seen, model[n].highest_epoch_seen) for n in NODES}
            assert all(r == m for r, m in seen.values()), (seen, "\n".join(history))
            if isinstance(got_real, tuple) and got_real[0] == "granted":
                epochs.append(got_real[1])
    finally:
        for bus in real.values():
            await bus.close()
        await raw.aclose()
