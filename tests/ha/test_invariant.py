"""Property tests of the HA step inside the model of Redis, clocks and faults."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import bot.ha.machine
from bot.ha import HaConfig, HaState, LeaseView
from tests.ha.sim import CYCLE, NODES, Bugs, Fault, Scenario, Sim
from tests.ha.strategies import MAX_DRIFT, scenarios

CFG = HaConfig(node_id="a", peers=("b",))


NO_BUGS = Bugs()


def check_no_two_primaries(sc: Scenario, cfg: HaConfig = CFG, bugs: Bugs = NO_BUGS) -> None:
    sim = Sim(sc, cfg, bugs).run()
    overlaps = sim.overlaps()
    assert not overlaps, f"two primaries at real times {overlaps[:3]}"


@given(scenarios())
def test_never_two_primaries(sc: Scenario) -> None:
    check_no_two_primaries(sc)


@st.composite
def deaths(draw: st.DrawFn) -> tuple[Scenario, float]:
    drift = st.floats(-MAX_DRIFT, MAX_DRIFT)
    death = draw(st.floats(5.0, 9.0))
    sc = Scenario(
        rates=(1.0 + draw(drift), 1.0 + draw(drift)),
        offsets=(draw(st.floats(0.0, 1e5)), draw(st.floats(0.0, 1e5))),
        faults=(),
        seed=draw(st.integers(0, 2**32 - 1)),
        horizon=death + 8.0,
    )
    return sc, death


@given(deaths())
def test_standby_takes_over_within_ttl_plus_renew_interval(case: tuple[Scenario, float]) -> None:
    sc, death = case
    # Find who is primary at the moment of death, then kill it for good.
    probe = Sim(replace(sc, horizon=death)).run()
    primary = next(n for n in NODES if probe.primary_from(n, death - 1e-6) is not None)
    standby = next(n for n in NODES if n != primary)
    crash = Fault("crash", primary, death, 1e9, fenced=True)
    sim = Sim(replace(sc, faults=(crash,))).run()
    took = sim.primary_from(standby, death)
    limit = CFG.lease_ttl + CFG.renew_interval
    assert took is not None, f"{standby} never became primary"
    assert took - death <= limit, f"{standby} took over after {took - death:.2f} s > {limit} s"
    assert not sim.overlaps()


def _vanished_early_ignored(state: HaState, lease: LeaseView, run_id: str | None, now: float):
    # The seeded bug: take a key as soon as it reads free, whatever the last read predicted.
    return replace(
        state, predicted_expiry=None, earliest_expiry=None, wait_until=None, run_id=run_id
    )


# Each seeded bug with the fault kinds that can expose it (all faults stay possible
# in test_never_two_primaries; narrowing them here keeps the search short).
SEEDED_BUGS: dict[str, dict[str, Any]] = {
    "validity from the reply": {
        "bugs": Bugs(validity_from_reply=True),
        "kinds": ("slow", "isolate"),
        "max_faults": 10,
    },
    "zero drift margin": {
        # A longer lease makes the drift error (ttl x drift) larger than the polling jitter.
        "cfg": replace(CFG, lease_ttl=6.0, drift_margin=0.0),
        "kinds": ("isolate",),
        "extreme_drift": True,
        "max_faults": 10,
    },
    "standby ignores its promise": {"bugs": Bugs(ignore_promise=True), "kinds": ("redis_cut",)},
    "adopts a stale lease at start": {
        "bugs": Bugs(adopt_without_renewal=True),
        "kinds": ("crash",),
        "max_faults": 10,
    },
    "takes a key that vanished early": {
        "patch": _vanished_early_ignored,
        "kinds": ("redis_restart", "peer_cut", "isolate"),
        "max_faults": 10,
    },
}


@pytest.mark.parametrize("name", list(SEEDED_BUGS))
def test_checker_finds_seeded_bug(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seed = SEEDED_BUGS[name]
    if "patch" in seed:
        monkeypatch.setattr(bot.ha.machine, "track_lease", seed["patch"])
    cfg = seed.get("cfg", CFG)
    bugs = seed.get("bugs", NO_BUGS)

    @settings(max_examples=1000, phases=[Phase.generate], database=None, derandomize=True)
    @given(
        scenarios(
            kinds=seed["kinds"],
            max_faults=seed.get("max_faults", 6),
            extreme_drift=seed.get("extreme_drift", False),
        )
    )
    def prop(sc: Scenario) -> None:
        check_no_two_primaries(sc, cfg, bugs)

    with pytest.raises(AssertionError, match="two primaries"):
        prop()


def test_model_cycle_is_shorter_than_renewal() -> None:
    assert CFG.renew_interval > CYCLE
