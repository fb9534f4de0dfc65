"""Builders for single-step unit tests of the HA machine."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bot.ha import ControlsView, HaConfig, HaState, LeaseView, Observation, OwnLease, PeerView, step

CFG = HaConfig(node_id="a", peers=("b",), rseries_host="A")
T = 1000.0  # "now" in every single-step test
OWN = OwnLease(5, T - 0.2)  # renewed 0.2 s ago: valid for 2.7 s more
PEER_OK = PeerView(node_id="b", role="standby", healthy=True, ready=True, reachable=True)


def state(role: str, cfg: HaConfig = CFG, **kw: Any) -> HaState:
    base = HaState(cfg=cfg, role=role, since=T - 50)  # type: ignore[arg-type]
    if role in ("promoting", "primary", "demoting"):
        base = replace(base, epoch=5, valid_until=T + 2.7)
    return replace(base, **kw)


def obs(**kw: Any) -> Observation:
    base = Observation(
        lease=LeaseView(None),
        lease_read_ok=True,
        redis_run_id="r1",
        controls=ControlsView(),
        started_at=T - 100,
        persisted_epoch=5,
    )
    return replace(base, **kw)


def holder_obs(**kw: Any) -> Observation:
    kw.setdefault("lease", LeaseView("a", 5, T + 2.8))
    kw.setdefault("own_lease", OWN)
    kw.setdefault("peer", PEER_OK)
    return obs(**kw)


def run(s: HaState, o: Observation, now: float = T) -> tuple[HaState, list[str], str]:
    new, actions, reason = step(s, o, now)
    return new, [a.kind for a in actions], reason
