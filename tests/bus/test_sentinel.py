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
    retire: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self.retire.is_set():
                await self._hand_over()
                await stop.wait()
                return
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

    async def _hand_over(self) -> None:
        """Stop holding: validity ends when the release is sent, then release the key."""
        if self.epoch is None:
            return
        now = self.bus.clock()
        self.intervals = [(s, min(e, now), ep) for s, e, ep in self.intervals]
        with contextlib.suppress(BusError):
            await self.bus.release(self.epoch)
        self.epoch = None

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
    b_bus, c_bus = sentinel_bus(lab, "b"), sentinel_bus(lab, "c")
    a, b, c = Contender(a_bus), Contender(b_bus), Contender(c_bus)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(x.run(stop)) for x in (a, b)]
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
            await asyncio.to_thread(lab.isolate_master)
        await wait_for(lambda: lab.master_port_seen() not in (None, old_port), 20, what="failover")
        if fault == "kill":
            await asyncio.to_thread(lab.master.start)  # comes back; Sentinel makes it a replica
        elif fault == "isolate":
            await asyncio.to_thread(lab.heal_master)  # Sentinel demotes the old master
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
        # Hand the lease over to a third node: its epoch must come from the counter that
        # survived the fault, so it is above every epoch before it.
        holder = max((a, b), key=lambda x: max((s for s, _e, _ep in x.intervals), default=0.0))
        holder.retire.set()
        t_retire = b_bus.clock()
        tasks.append(asyncio.create_task(c.run(stop)))
        await wait_for(
            lambda: any(x.confirmed_since(t_retire) for x in (a, b, c) if x is not holder),
            20,
            what="a lease after the hand-over",
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for bus in (a_bus, b_bus, c_bus):
            await bus.close()
    for x, y in ((a, b), (a, c), (b, c)):
        assert not overlaps(x, y), overlaps(x, y)[:3]
    assert_epochs_fence(a, b, c)


def assert_epochs_fence(*contenders: Contender) -> None:
    """Each epoch names one holder, and in time order the epoch never goes back."""
    holders = [x for x in contenders if x.intervals]
    assert len(holders) >= 2, "the lease changed hands"
    for i, x in enumerate(holders):
        for y in holders[i + 1 :]:
            shared = {e for *_t, e in x.intervals} & {e for *_t, e in y.intervals}
            assert not shared, f"epochs held by two nodes: {sorted(shared)}"
    in_time = [e for _start, _end, e in sorted(iv for x in holders for iv in x.intervals)]
    assert in_time == sorted(in_time), f"the epoch went back: {in_time}"


async def test_forced_failover_never_two_confirmed_holders(lab: SentinelLab) -> None:
    await run_scenario(lab, sentinel_bus(lab, "a"), "failover")


async def test_master_killed_never_two_confirmed_holders(lab: SentinelLab) -> None:
    await run_scenario(lab, sentinel_bus(lab, "a"), "kill")


async def test_isolated_old_master_never_two_confirmed_holders(lab: SentinelLab) -> None:
    # Node a still reaches the old master directly, as a client whose connection outlived
    # the partition would; it must not get a confirmed lease there.
    direct = RedisConfig(url=lab.master.url, timeout=0.5)
    await run_scenario(lab, Bus(direct, "t", "a", confirm_writes=True), "isolate")
