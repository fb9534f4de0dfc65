"""Hypothesis strategies for the model world: clocks, faults, schedules."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.ha.world import COMMANDS, NODES, Fault, Scenario

# Bounded drift: the default drift_margin (100 ms on a 3 s lease) covers two
# clocks that are each up to 1.5 % off.
MAX_DRIFT = 0.015

HORIZON = 16.0  # virtual seconds per scenario: faults start between 3 s and 12 s

DURATIONS = {
    "slow": (0.5, 5.0),
    "isolate": (0.3, 6.0),
    "redis_cut": (0.3, 6.0),
    "peer_cut": (0.3, 6.0),
    "crash": (0.1, 4.0),
    "redis_restart": (0.0, 0.0),
    "sick": (1.0, 8.0),
}
# A command on one node that fails, hangs until its limit, or succeeds late (a broken
# host: drbdadm, ip addr, the Asterisk kill), for a while.
COMMAND_FAULTS = {"cmd_fail": (0.5, 8.0), "cmd_hang": (0.5, 8.0), "cmd_late": (0.5, 8.0)}
ALL_DURATIONS = {**DURATIONS, **COMMAND_FAULTS}


@st.composite
def faults(
    draw: st.DrawFn,
    kinds: tuple[str, ...] = tuple(sorted(DURATIONS)),
    durations: dict[str, tuple[float, float]] | None = None,
) -> Fault:
    kind = draw(st.sampled_from(kinds))
    lo, hi = {**ALL_DURATIONS, **(durations or {})}[kind]
    return Fault(
        kind=kind,
        node="*" if kind == "peer_cut" else draw(st.sampled_from(NODES)),
        start=draw(st.floats(3.0, 12.0)),
        duration=draw(st.floats(lo, hi)),
        fenced=draw(st.booleans()),
        command=draw(st.sampled_from(COMMANDS)) if kind in COMMAND_FAULTS else "",
    )


@st.composite
def scenarios(
    draw: st.DrawFn,
    kinds: tuple[str, ...] = tuple(sorted(DURATIONS)),
    max_faults: int = 6,
    max_drift: float = MAX_DRIFT,
    extreme_drift: bool = False,
    durations: dict[str, tuple[float, float]] | None = None,
) -> Scenario:
    """Two clocks within +-max_drift (often at the bounds), faults of the given kinds."""
    bounds = st.sampled_from([-max_drift, max_drift])
    drift = bounds if extreme_drift else st.one_of(bounds, st.floats(-max_drift, max_drift))
    return Scenario(
        rates=(1.0 + draw(drift), 1.0 + draw(drift)),
        offsets=(draw(st.floats(0.0, 1e5)), draw(st.floats(0.0, 1e5))),
        faults=tuple(
            draw(
                st.lists(faults(kinds, durations), min_size=min(1, max_faults), max_size=max_faults)
            )
        ),
        seed=draw(st.integers(0, 2**32 - 1)),
        horizon=HORIZON,
    )
