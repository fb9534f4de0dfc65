"""At start-up, "could not tell whether Asterisk runs" counts as running (design §3
rule 7): a node whose status command timed out fences before it is standby.

The probe path as it ships: the takeover's service probe over the fake service
manager (its ``status`` hangs past the command timeout, as ``systemctl is-active``
does when systemd is wedged), the observer's snapshot with the lease held by the
peer on a real Redis, and the HA step's decision at start.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry

from bot.actions.asterisk import AsteriskService
from bot.actions.drbd import Drbd
from bot.actions.takeover import Takeover
from bot.actions.vip import Vip
from bot.agent.inbox import Inbox
from bot.agent.observer import Observer
from bot.bus import Bus
from bot.config import Config, parse_config
from bot.ha import HaConfig, HaState, step
from bot.health import Verdict
from bot.metrics import Metrics
from bot.state import StateDir
from harness.fakes import FakeWorld
from tests.actions.helpers import takeover_sections
from tests.helpers import RedisServer, node_config_text


def config(tmp_path: Path, redis_url: str) -> Config:
    sections = takeover_sections(tmp_path)
    sections["asterisk"]["command_timeout"] = "2s"
    sections["redis"] = {"url": redis_url, "timeout": "500ms"}
    return parse_config(node_config_text(**sections), tmp_path)


async def decision_at_start(cfg: Config, bus: Bus) -> tuple[list[str], str, Any]:
    assert cfg.drbd and cfg.vip
    drbd = Drbd(cfg.drbd)
    takeover = Takeover(
        cfg,
        drbd=drbd,
        vip=Vip(cfg.vip),
        asterisk=AsteriskService(cfg.asterisk),
        pstn=None,
        ami=None,
        lease_valid=lambda: False,
    )
    health = SimpleNamespace(
        verdict=lambda role, routed_at: Verdict(True),
        active_calls=None,
        clock=time.monotonic,
        note_process=lambda running, began: None,  # the process check is not this test's
    )
    observer = Observer(
        me=cfg.node.id,
        peer_id="b",
        bus=bus,
        takeover=takeover,
        drbd=drbd,
        health=health,  # type: ignore[arg-type]
        keeper=SimpleNamespace(own=None, granted=None, promise_until=None, peer_reachable=False),  # type: ignore[arg-type]
        fencer=SimpleNamespace(incomplete=False),  # type: ignore[arg-type]
        state_dir=StateDir(cfg.node.state_dir),
        metrics=Metrics(CollectorRegistry()),
        ami_configured=False,
        routed_at=lambda: None,
        started_at=time.monotonic(),
        failed_holddown=600.0,
    )
    await observer.probe_once()
    ha = HaState.initial(HaConfig.from_config(cfg), time.monotonic())
    obs = await observer.observe(ha, Inbox())
    _, actions, reason = step(ha, obs, time.monotonic())
    return [a.kind for a in actions], reason, obs.local_services


async def test_status_that_timed_out_counts_as_running_at_start(
    tmp_path: Path, world: FakeWorld, redis_server: RedisServer
) -> None:
    cfg = config(tmp_path, redis_server.url)
    peer = Bus(cfg.redis, cfg.cluster.name, "b")
    bus = Bus(cfg.redis, cfg.cluster.name, cfg.node.id)
    try:
        assert await peer.acquire(30.0, 0) is not None  # the peer is primary
        world.set_fault("fake-service status", sleep=10)  # is-active hangs
        kinds, reason, services = await decision_at_start(cfg, bus)
        assert "fence" in kinds, (reason, services)
        assert "fencing local services" in reason
        assert services.any and not services.all
        # Rule 7's other side: a guess never counts as "all services up" for adoption.
        world.clear_faults()
        kinds, reason, services = await decision_at_start(cfg, bus)
        # Told: nothing runs. (The peer's 30 s key, above lease_ttl, also draws an alert.)
        acting = [k for k in kinds if k != "alert"]
        assert acting == [] and not services.any, (reason, services)
    finally:
        await peer.close()
        await bus.close()
