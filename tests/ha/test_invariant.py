"""Never two primaries, proven on the shipping agent core in the model world.

``tests/ha/world.py`` runs two real ``bot.agent`` cores (HA step, lease keeper,
fencer, executor, observer, reporter, peer channel) in virtual time against a
model Redis with latency, restarts and partitions. Seeded bugs are put into the
real code (monkeypatch) to show that the search finds each of them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings, target
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import bot.ha.machine
from bot.actions.takeover import Takeover, TakeoverReport
from bot.agent.lease import LeaseKeeper
from bot.agent.observer import Observer
from bot.ha import HaState, LeaseView, OwnLease
from tests.ha.strategies import ALL_DURATIONS, HORIZON, MAX_DRIFT, scenarios
from tests.ha.world import LATE, NODES, Fault, Scenario, World, simulate

SIM = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)  # thousands of simulated alerts
    yield
    logging.disable(logging.NOTSET)


def run(sc: Scenario, tmp: Path, **kw: Any) -> World:
    tmp.mkdir(parents=True, exist_ok=True)
    return simulate(sc, tmp, **kw)


def check_no_two_primaries(sc: Scenario, tmp: Path, **kw: Any) -> World:
    """The verdict on effects (the address, Asterisk, DRBD Primary held by both nodes),
    and on the HA states' beliefs (the lease rules' own claim)."""
    world = run(sc, tmp, **kw)
    if currently_in_test_context():
        target(world.closest_approach(), label="closest approach of two primaries")
    held = world.service_overlaps()
    assert not held, f"two primaries (services held by both) at real times {held[:3]}"
    overlaps = world.overlaps()
    assert not overlaps, f"two primaries (HA states) at real times {overlaps[:3]}"
    return world


@SIM
@given(scenarios())
def test_never_two_primaries(tmp_path_factory: pytest.TempPathFactory, sc: Scenario) -> None:
    check_no_two_primaries(sc, tmp_path_factory.mktemp("w"))


@st.composite
def deaths(draw: st.DrawFn) -> tuple[Scenario, float]:
    drift = st.floats(-MAX_DRIFT, MAX_DRIFT)
    death = draw(st.floats(6.0, 9.0))
    sc = Scenario(
        rates=(1.0 + draw(drift), 1.0 + draw(drift)),
        offsets=(draw(st.floats(0.0, 1e5)), draw(st.floats(0.0, 1e5))),
        faults=(),
        seed=draw(st.integers(0, 2**32 - 1)),
        horizon=death + 8.0,
    )
    return sc, death


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(deaths())
def test_standby_takes_over_within_ttl_plus_renew_interval(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[Scenario, float]
) -> None:
    sc, death = case
    probe = run(replace(sc, horizon=death), tmp_path_factory.mktemp("w"))
    primary = next(n for n in NODES if probe.primary_from(n, death - 1e-6) is not None)
    standby = next(n for n in NODES if n != primary)
    crash = Fault("crash", primary, death, 1e9, fenced=True)
    world = run(replace(sc, faults=(crash,)), tmp_path_factory.mktemp("w"))
    took = world.primary_from(standby, death)
    cfg = world.nodes[standby].cfg.cluster
    # The standby's cycle, the takeover's first steps and the peer's promise
    # (answered up to the death) add to the lease: ttl + renew interval + a cycle.
    limit = cfg.lease_ttl + cfg.renew_interval + 0.5
    assert took is not None, f"{standby} never became primary"
    assert took - death <= limit, f"{standby} took over after {took - death:.2f} s > {limit} s"
    assert not world.overlaps()


# ----------------------------------------------------------------------------- seeded bugs


def _validity_from_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease keeper counts validity from the reply instead of the send time."""
    for name in ("acquire", "_renew_once"):
        original = getattr(LeaseKeeper, name)

        async def late(self: LeaseKeeper, *args: Any, _orig: Any = original) -> None:
            await _orig(self, *args)
            if self.own is not None:
                self.own = OwnLease(self.own.epoch, self.clock())

        monkeypatch.setattr(LeaseKeeper, name, late)


def _ignore_promise(monkeypatch: pytest.MonkeyPatch) -> None:
    """The observer forgets the promise this node gave the peer."""
    original = Observer.observe

    async def observe(self: Observer, ha: HaState, inbox: Any) -> Any:
        return replace(await original(self, ha, inbox), promise_given_until=None)

    monkeypatch.setattr(Observer, "observe", observe)


def _adopt_without_renewal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adoption at start believes the key without renewing it."""

    async def adopt(self: LeaseKeeper, epoch: int) -> None:
        self.own = OwnLease(epoch, self.clock())
        self._changed.set()

    monkeypatch.setattr(LeaseKeeper, "adopt", adopt)


def _vanished_early_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take a key as soon as it reads free, whatever the last read predicted."""

    def track(state: HaState, lease: LeaseView, run_id: str | None, now: float) -> HaState:
        return replace(
            state, predicted_expiry=None, earliest_expiry=None, wait_until=None, run_id=run_id
        )

    monkeypatch.setattr(bot.ha.machine, "track_lease", track)


# Each seeded bug with the fault kinds that can expose it (all faults stay possible
# in test_never_two_primaries; narrowing them here keeps the search short).
SEEDED_BUGS: dict[str, dict[str, Any]] = {
    "validity from the reply": {
        "seed": _validity_from_reply,
        "kinds": ("slow", "isolate"),
        "max_faults": 8,
    },
    "zero drift margin": {
        # A longer lease makes the drift error (ttl x drift) larger than the jitter.
        "world": {"ttl": 6.0, "drift": 0.0},
        "kinds": ("isolate",),
        "extreme_drift": True,
        # The error shows only when a partition outlasts the lease: search those.
        "durations": {"isolate": (5.5, 8.0)},
    },
    "standby ignores its promise": {"seed": _ignore_promise, "kinds": ("redis_cut",)},
    "adopts a stale lease at start": {"seed": _adopt_without_renewal, "kinds": ("crash",)},
    "takes a key that vanished early": {
        "seed": _vanished_early_ignored,
        "kinds": ("redis_restart", "peer_cut", "isolate"),
    },
    "a fence that stops nothing": {
        "seed": lambda mp: _fence_stops_nothing(mp),
        "kinds": ("isolate",),
    },
}


@pytest.mark.parametrize("name", list(SEEDED_BUGS))
def test_search_finds_seeded_bug(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    seed = SEEDED_BUGS[name]
    if "seed" in seed:
        seed["seed"](monkeypatch)
    kw = seed.get("world", {})

    @settings(
        max_examples=200,
        phases=[Phase.generate, Phase.target],
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        scenarios(
            kinds=seed["kinds"],
            max_faults=seed.get("max_faults", 4),
            extreme_drift=seed.get("extreme_drift", False),
            durations=seed.get("durations"),
        )
    )
    def prop(sc: Scenario) -> None:
        check_no_two_primaries(sc, tmp_path_factory.mktemp("w"), **kw)

    with pytest.raises(AssertionError, match="two primaries"):
        prop()


def test_the_model_world_runs_the_shipping_agent(tmp_path: Path) -> None:
    world = run(Scenario((1.0, 1.0), (0.0, 7.0), (), seed=1, horizon=HORIZON), tmp_path)
    primaries = [n for n in NODES if world.primary_from(n, 5.0) is not None]
    assert len(primaries) == 1
    agent = world.nodes[primaries[0]].agent
    assert agent is not None and type(agent.keeper) is LeaseKeeper


def test_epochs_seen_from_the_other_node_are_persisted(tmp_path: Path) -> None:
    world = run(Scenario((1.0, 1.0), (0.0, 7.0), (), seed=2, horizon=8.0), tmp_path)
    primary = next(n for n in NODES if world.primary_from(n, 6.0) is not None)
    standby = next(n for n in NODES if n != primary)
    epoch = world.nodes[primary].state_dir.held_epoch
    assert epoch is not None
    # The standby never held it, yet its state directory remembers it (rule: epochs
    # only grow, even when Redis restarts empty and this node restarts too).
    assert world.nodes[standby].state_dir.held_epoch is None
    assert world.nodes[standby].state_dir.highest_epoch >= epoch


# ----------------------------------------------------------------------------- effects


def _fence_stops_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fence reports success and stops nothing (a command that lies)."""

    async def fence(self: Takeover, *, escalate: bool = False) -> TakeoverReport:
        return TakeoverReport("succeeded", [], "fenced")

    monkeypatch.setattr(Takeover, "fence", fence)


def test_a_fence_that_stops_nothing_is_caught_on_effects_not_beliefs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Seeded bug: the primary is isolated and its fence stops nothing. Every HA state
    is right (it believes it fenced, the other took the lease), so the beliefs never
    overlap; the services do, and that is the verdict."""
    sc = Scenario((1.0, 1.0), (0.0, 7.0), (), seed=5, horizon=16.0)
    probe = run(replace(sc, horizon=6.0), tmp_path / "probe")
    primary = next(n for n in NODES if probe.primary_from(n, 5.9) is not None)
    _fence_stops_nothing(monkeypatch)
    isolated = replace(sc, faults=(Fault("isolate", primary, 6.0, 9.0),))
    world = run(isolated, tmp_path / "world")
    assert world.overlaps() == [], "the beliefs alone would have shown it"
    held = {service for service, _, _ in world.service_overlaps()}
    assert held == {"vip", "asterisk", "drbd"}, world.service_overlaps()
    with pytest.raises(AssertionError, match="two primaries \\(services held by both\\)"):
        check_no_two_primaries(isolated, tmp_path / "again")


def test_the_model_fence_really_stops_the_isolated_primary(tmp_path: Path) -> None:
    """The same scenario on the code that ships: the isolated primary's services stop
    before the other node's start, and the other serves."""
    sc = Scenario((1.0, 1.0), (0.0, 7.0), (), seed=5, horizon=16.0)
    probe = run(replace(sc, horizon=6.0), tmp_path / "probe")
    primary = next(n for n in NODES if probe.primary_from(n, 5.9) is not None)
    other = next(n for n in NODES if n != primary)
    world = check_no_two_primaries(
        replace(sc, faults=(Fault("isolate", primary, 6.0, 9.0),)), tmp_path / "world"
    )
    assert not any(world.nodes[primary].held.values())
    assert all(world.nodes[other].held.values())


@SIM
@given(scenarios(kinds=tuple(sorted(ALL_DURATIONS))))
def test_never_two_primaries_with_broken_commands(
    tmp_path_factory: pytest.TempPathFactory, sc: Scenario
) -> None:
    """The faults of a broken host too: a DRBD, address or Asterisk command that fails,
    hangs or succeeds late, while the other faults go on.

    Left out: a node cut off from everything (the replication link too) while its own
    fence commands are broken. Nothing on either host can stop it then; that takes
    ``cluster.fence_command`` (power off through the BMC), which the model does not run."""
    assume(not _unstoppable(sc))
    check_no_two_primaries(sc, tmp_path_factory.mktemp("w"))


FENCE_COMMANDS = {"asterisk_kill", "asterisk_status", "vip_del", "drbd_secondary"}


def _unstoppable(sc: Scenario) -> bool:
    """A node isolated while one of its fence commands is broken (they overlap in time)."""
    for f in sc.faults:
        if not (f.kind.startswith("cmd_") and f.command in FENCE_COMMANDS):
            continue
        for g in sc.faults:
            if g.kind == "isolate" and g.node == f.node:
                # A late command's change can land up to LATE[1] after its fault ends.
                end = f.start + f.duration + (LATE[1] if f.kind == "cmd_late" else 0.0)
                if g.start < end:  # broken at some time after the isolation began
                    return True
    return False


def _primary_at(sc: Scenario, t: float, tmp: Path) -> str:
    probe = run(replace(sc, horizon=t), tmp)
    return next(n for n in NODES if probe.primary_from(n, t - 0.1) is not None)


@pytest.mark.parametrize("mode", ["cmd_fail", "cmd_hang"])
def test_a_demotion_whose_address_removal_fails_keeps_drbd_until_the_address_is_gone(
    mode: str, tmp_path: Path
) -> None:
    """The primary turns unhealthy and hands over while its ``ip addr del`` fails (or
    hangs): it must stay DRBD Primary (so the peer cannot promote) and keep the lease
    until the address is confirmed gone."""
    sc = Scenario((1.0, 1.0), (0.0, 7.0), (), seed=5, horizon=20.0)
    primary = _primary_at(sc, 6.0, tmp_path / "probe")
    faults = (
        Fault(mode, primary, 5.0, 10.0, command="vip_del"),
        Fault("sick", primary, 6.0, 8.0),
    )
    check_no_two_primaries(replace(sc, faults=faults), tmp_path / "world")
