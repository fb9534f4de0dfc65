"""Rule 6 with Redis Sentinel: never two holders of a confirmed lease across failovers.

Two contenders keep acquiring and renewing through the bus. A confirmed lease (WAIT 1
answered) is valid over [t_sent, t_sent + ttl - drift]; the check is that no two
different holders' validity intervals ever overlap, whatever the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.bus import Bus, BusError
from bot.config import RedisConfig
from tests.bus.sentinel_lab import SERVICE, SentinelLab
from tests.helpers import wait_for

TTL = 1.5
DRIFT = 0.1
RENEW_EVERY = 0.3
RETRY_EVERY = 0.1

pytestmark = pytest.mark.slow


@dataclass
class Contender:
    bus: Bus
    intervals: list[tuple[float, float, int]] = field(default_factory=list)
    epoch: int | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if self.epoch is None:
                    grant = await self.bus.acquire(TTL, 0)
                    if grant is not None:
                        self.epoch = grant.epoch
                        self._valid(grant.sent_at, grant.epoch)
                else:
                    result = await self.bus.renew(self.epoch, TTL)
                    if result.outcome == "renewed":
                        self._valid(result.sent_at, self.epoch)
                    else:
                        self.epoch = None
            except BusError:
                pass  # unconfirmed or unreachable: nothing gained, validity runs out
            # Pacing of the loop (not synchronisation): the checker reads the intervals.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), RENEW_EVERY if self.epoch is not None else RETRY_EVERY
                )

    def _valid(self, sent_at: float, epoch: int) -> None:
        self.intervals.append((sent_at, sent_at + TTL - DRIFT, epoch))

    def confirmed_since(self, t: float) -> bool:
        return any(start >= t for start, _end, _epoch in self.intervals)


def overlaps(a: Contender, b: Contender) -> list[tuple[tuple[float, float, int], ...]]:
    return [(x, y) for x in a.intervals for y in b.intervals if x[0] < y[1] and y[0] < x[1]]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[SentinelLab]:
    lab = SentinelLab(tmp_path)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


def sentinel_bus(lab: SentinelLab, node: str) -> Bus:
    cfg = RedisConfig(sentinels=lab.sentinel_addrs, service_name=SERVICE, timeout=0.5)
    return Bus(cfg, "t", node)


async def run_scenario(lab: SentinelLab, a_bus: Bus, fault: str) -> None:
    b_bus = sentinel_bus(lab, "b")
    a, b = Contender(a_bus), Contender(b_bus)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop)) for c in (a, b)]
    try:
        await wait_for(lambda: bool(a.intervals or b.intervals), 10, what="a first lease")
        old_port = lab.proxy.port
        if fault == "failover":
            await asyncio.to_thread(
                lambda: lab.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", SERVICE)
            )
        elif fault == "kill":
            await asyncio.to_thread(lab.master.kill)
        elif fault == "isolate":
            await asyncio.to_thread(lab.proxy.cut)
        await wait_for(lambda: lab.master_port_seen() not in (None, old_port), 20, what="failover")
        if fault == "kill":
            await asyncio.to_thread(lab.master.start)  # comes back; Sentinel makes it a replica
        elif fault == "isolate":
            await asyncio.to_thread(lab.proxy.start)  # heal: Sentinel demotes the old master
        t_after = b_bus.clock()

        def converged() -> bool:
            # Sentinel may settle on either server after a heal (the old master can win
            # back its role): wait for whichever master a majority names to take writes.
            port = lab.master_port_seen()
            return port is not None and lab.writable_with_replica(port)

        await wait_for(converged, 40, what="a master with a replica")
        await wait_for(
            lambda: a.confirmed_since(t_after) or b.confirmed_since(t_after),
            20,
            what="a confirmed lease after the fault",
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await a_bus.close()
        await b_bus.close()
    assert not overlaps(a, b), overlaps(a, b)[:3]
    epochs = sorted({e for c in (a, b) for *_t, e in c.intervals})
    assert epochs == sorted(set(epochs)) and len(epochs) >= 1


async def test_forced_failover_never_two_confirmed_holders(lab: SentinelLab) -> None:
    await run_scenario(lab, sentinel_bus(lab, "a"), "failover")


async def test_master_killed_never_two_confirmed_holders(lab: SentinelLab) -> None:
    await run_scenario(lab, sentinel_bus(lab, "a"), "kill")


async def test_isolated_old_master_never_two_confirmed_holders(lab: SentinelLab) -> None:
    # Node a still reaches the old master directly, as a client whose connection outlived
    # the partition would; it must not get a confirmed lease there.
    direct = RedisConfig(url=lab.master.url, timeout=0.5)
    await run_scenario(lab, Bus(direct, "t", "a", confirm_writes=True), "isolate")
