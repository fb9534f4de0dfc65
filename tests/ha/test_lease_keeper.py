"""The lease keeper on a real redis-server: the fence deadline is never delayed by Redis.

A renewal sent just before ``valid_until - fence_budget`` to a Redis that does not
answer (SIGSTOP) must not hold the fence back until the renewal's own timeout:
every attempt is bounded by the time left before the fence (design §3 rule 3).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bot.actions.asterisk import AsteriskService
from bot.actions.takeover import StepTiming, Takeover
from bot.agent.fencer import Fencer
from bot.agent.inbox import Inbox
from bot.agent.jobs import Jobs
from bot.agent.lease import LeaseKeeper
from bot.boottime import boottime
from bot.bus import Bus
from bot.config import Config, RedisConfig, parse_config
from bot.ha import HaConfig, HaState, OwnLease, Role
from bot.metrics import Metrics
from bot.state import StateDir
from harness.fakes import FakeWorld
from tests.helpers import RedisServer, wait_for

CONFIG = """
[node]
id = "a"
state_dir = "{state}"

[cluster]
name = "t"
lease_ttl = "5s"
renew_interval = "1s"
drift_margin = "100ms"
fence_budget = "500ms"

[redis]
url = "{url}"
timeout = "1500ms"

[asterisk]
start = ["fake-service", "start", "asterisk"]
stop = ["fake-service", "stop", "asterisk"]
kill = ["fake-service", "kill", "asterisk"]
status = ["fake-service", "status", "asterisk"]
"""
# The fence is due 4.4 s after the last good renewal; unbounded, the attempt sent at
# about +4 s holds it back until that attempt's timeout (+5.5 s or later).
LATE = 0.5


class Rig:
    def __init__(self, cfg: Config) -> None:
        self.steps: list[tuple[StepTiming, OwnLease | None]] = []
        self.events: list[str] = []
        self.bus = Bus.from_config(cfg)
        jobs = Jobs(on_done=lambda kind: None)
        metrics = Metrics.for_config(cfg, registry=CollectorRegistry())
        takeover = Takeover(
            cfg,
            drbd=None,
            vip=None,
            asterisk=AsteriskService(cfg.asterisk),
            pstn=None,
            ami=None,
            lease_valid=lambda: False,
            on_step=lambda timing: self.steps.append((timing, self.keeper.own)),
            clock=boottime,
        )
        fencer = Fencer(
            takeover, cfg.fence, jobs=jobs, metrics=metrics, events=self.event, clock=boottime
        )
        ha_cfg = HaConfig.from_config(cfg)
        self.role: Role = "starting"  # the HA role the keeper sees
        self.keeper = LeaseKeeper(
            cfg,
            ha_cfg,
            bus=self.bus,
            state_dir=StateDir(cfg.node.state_dir),
            fencer=fencer,
            events=self.event,
            inbox=Inbox(),
            jobs=jobs,
            metrics=metrics,
            clock=boottime,
            ha_state=lambda: replace(HaState.initial(ha_cfg, 0.0), role=self.role),
            wake=lambda: None,
        )

    def event(self, kind: str, message: str, **_: Any) -> None:
        self.events.append(kind)


@pytest.fixture
async def rig(tmp_path: Path, redis_server: RedisServer, world: FakeWorld) -> AsyncIterator[Rig]:
    text = CONFIG.format(state=tmp_path / "state", url=redis_server.url)
    r = Rig(parse_config(text, tmp_path))
    yield r
    await r.bus.close()


@pytest.mark.parametrize("bounded", [True, False], ids=["shipping", "seeded-unbounded"])
async def test_a_hanging_renewal_does_not_delay_the_fence(
    rig: Rig, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, bounded: bool
) -> None:
    if not bounded:  # the seeded bug: an attempt limited only by its own timeout
        monkeypatch.setattr(LeaseKeeper, "_bounded", lambda self, fence_at: 2.0)
    keeper = rig.keeper
    await keeper.acquire(fence_peer=False)
    assert keeper.own is not None
    renewal = asyncio.create_task(keeper.run_renewal())
    assert redis_server.proc is not None
    try:
        # Stop Redis right after a renewal succeeded: the next attempts then fall at
        # +1, +2.5 and +4 s (each times out after 1.5 s), the last just before the fence.
        first_sent = keeper.own.sent_at
        await wait_for(
            lambda: keeper.own is not None and keeper.own.sent_at != first_sent,
            5,
            interval=0.005,
            what="a renewal",
        )
        os.kill(redis_server.proc.pid, signal.SIGSTOP)  # Redis stops answering
        await wait_for(lambda: bool(rig.steps), 15, what="the fence")
        first, own = rig.steps[0]
        assert own is not None
        cfg = keeper.ha_cfg
        due = own.sent_at + cfg.lease_ttl - cfg.drift_margin - cfg.fence_budget
        late = first.started - due
        assert late > -0.05, f"fenced {-late:.2f} s early"
        if bounded:
            assert late < LATE, f"the fence started {late:.2f} s late"
        else:
            assert late >= LATE, f"the seeded bug went unseen ({late:.2f} s late)"
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
        renewal.cancel()
        await asyncio.gather(renewal, return_exceptions=True)


async def test_a_paused_holder_whose_lease_runs_out_does_not_fence(
    rig: Rig, redis_server: RedisServer
) -> None:
    """Rule 8: paused means no automatic action on the renewal's path too. The lease runs
    out with Redis gone and the services stay; once Redis answers again the renewal
    takes the key again (here it expired meanwhile: a new epoch)."""
    keeper = rig.keeper
    await keeper.acquire(fence_peer=False)
    assert keeper.own is not None
    first = keeper.own
    rig.role = "paused"
    renewal = asyncio.create_task(keeper.run_renewal())
    assert redis_server.proc is not None
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        cfg = keeper.ha_cfg
        # Watched until a whole lease after the key ran out: no fence step at all.
        watched_until = first.sent_at + 2 * cfg.lease_ttl
        await wait_for(lambda: bool(rig.steps) or boottime() > watched_until, 15, what="the window")
        assert not rig.steps, f"fenced while paused: {rig.steps[0][0]}"
        assert keeper.own is first and rig.events.count("paused_lease_lost") == 1
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    await wait_for(
        lambda: keeper.own is not None and keeper.own.epoch > first.epoch, 10, what="retaken"
    )
    renewal.cancel()
    await asyncio.gather(renewal, return_exceptions=True)
    assert not rig.steps


async def test_the_fence_command_runs_after_the_key_is_taken_and_only_against_a_holder_that_did_not_release(  # noqa: E501
    tmp_path: Path, redis_server: RedisServer, world: FakeWorld
) -> None:
    record = tmp_path / "fenced.txt"
    (tmp_path / "secret").write_text("s3cret\n")
    script = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + chr(10))"
    text = CONFIG.format(state=tmp_path / "state", url=redis_server.url).replace(
        'name = "t"',
        'name = "t"\npeers = [{ id = "b", api = "http://127.0.0.1:9" }]\n'
        'secret_file = "secret"\n'
        f'fence_command = ["{sys.executable}", "-c", "{script}", "{record}", "{{peer}}"]',
    )
    rig = Rig(parse_config(text, tmp_path))
    peer = Bus(RedisConfig(url=redis_server.url, timeout=0.5), "t", "b")
    keeper = rig.keeper
    fenced = lambda: record.read_text().split() if record.exists() else []  # noqa: E731
    try:
        # Held by the peer: busy, and nobody is fenced (the key comes first).
        held = await peer.acquire(0.3, 0)
        assert held is not None
        await keeper.acquire(fence_peer=True)
        assert keeper.inbox.acquire_result == "busy" and fenced() == []
        # The peer's lease ran out without a release: fenced, then the lease is usable.
        keeper.inbox.take()
        await wait_for(lambda: _free(peer), 5, what="the peer's lease to expire")
        await keeper.acquire(fence_peer=True)
        assert keeper.inbox.acquire_result == "acquired" and fenced() == ["b"]
        assert keeper.granted is not None
        own = keeper.own
        assert own is not None
        await keeper.release(None)
        # The peer takes the lease and gives it up: taking it after that fences nobody.
        keeper.inbox.take()
        taken = await peer.acquire(3.0, 0)
        assert taken is not None and await peer.release(taken.epoch)
        await keeper.acquire(fence_peer=True)
        assert keeper.inbox.acquire_result == "acquired" and fenced() == ["b"]
    finally:
        await peer.close()
        await rig.bus.close()


async def _free(bus: Bus) -> bool:
    return (await bus.read_lease()).lease is None
