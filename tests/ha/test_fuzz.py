"""step never raises, whatever the observation: the agent must not crash on input."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from bot.ha import ROLES, Action, HaState, Observation, step
from tests.ha.helpers import CFG

times = st.floats(-1e6, 1e6, allow_nan=False)
maybe_times = st.none() | times

states = st.builds(
    HaState,
    cfg=st.just(CFG),
    role=st.sampled_from(ROLES),
    since=times,
    epoch=st.none() | st.integers(0, 10),
    valid_until=maybe_times,
    promise_until=maybe_times,
    acquiring_since=maybe_times,
    adopting=st.booleans(),
    predicted_expiry=maybe_times,
    earliest_expiry=maybe_times,
    wait_until=maybe_times,
    paused_from=st.none() | st.sampled_from(ROLES),
    handover_to=st.none() | st.sampled_from(["b", "c"]),
    holddown_until=maybe_times,
    failed_until=maybe_times,
    fencing=st.booleans(),
)
observations = st.from_type(Observation).map(lambda o: replace(o, started_at=0.0))


@given(states, observations, times)
def test_step_never_raises(state: HaState, obs: Observation, now: float) -> None:
    new, actions, reason = step(state, obs, now)
    assert new.role in ROLES
    assert all(isinstance(a, Action) for a in actions)
    assert reason and "\n" not in reason
