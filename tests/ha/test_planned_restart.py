"""Rule 7 for a planned restart that outlasted the lease (pause -> restart -> resume)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.ha import ControlsView, LeaseView, LocalServices, OwnLease
from tests.ha.helpers import T, obs, run, state

UP = LocalServices(vip=True, asterisk=True, drbd_primary=True)
PAUSED = ControlsView(paused=True)


def test_paused_restart_after_the_key_expired_takes_it_again_with_a_higher_epoch() -> None:
    o = obs(lease=LeaseView(None), controls=PAUSED, persisted_paused=True, local_services=UP)
    s, kinds, why = run(state("starting", since=T), o)
    assert s.role == "starting" and kinds == ["acquire"] and "taking it again" in why
    assert s.reclaiming and s.adopting
    # The acquire script gives an epoch above everything seen and persisted (here 5).
    got = replace(o, own_lease=OwnLease(6, T + 0.1), acquire_result="acquired")
    s, kinds, _ = run(s, got, T + 0.2)
    assert s.role == "paused" and s.paused_from == "primary" and s.epoch == 6
    assert "fence" not in kinds and not s.reclaiming
    # Resume: primary again, nothing fenced.
    resumed = replace(got, controls=ControlsView(paused=False), persisted_paused=False)
    resumed = replace(resumed, acquire_result=None, own_lease=OwnLease(6, T + 0.3))
    s, kinds, _ = run(s, resumed, T + 0.4)
    assert s.role == "primary" and "fence" not in kinds


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"controls": ControlsView(paused=False), "persisted_paused": False}, "not paused"),
        ({"persisted_epoch": None}, "no epoch held"),
        ({"local_services": LocalServices(vip=True, asterisk=False, drbd_primary=True)}, "down"),
        ({"lease": LeaseView(None, released_to="b")}, "released to the peer"),
        ({"lease": LeaseView("b", 6, T + 2)}, "held by the peer"),
    ],
)
def test_otherwise_a_restart_still_fences(change: dict[str, object], why: str) -> None:
    o = obs(lease=LeaseView(None), controls=PAUSED, persisted_paused=True, local_services=UP)
    o = replace(o, **change)  # type: ignore[arg-type]
    s, kinds, _ = run(state("starting", since=T), o)
    assert "acquire" not in kinds, why
    assert s.role in ("standby", "paused") and not s.reclaiming, why
    if s.role == "standby":
        assert kinds == ["fence"], why


def test_a_key_taken_first_by_the_peer_means_standby_and_fence() -> None:
    o = obs(lease=LeaseView(None), controls=PAUSED, persisted_paused=True, local_services=UP)
    s, _, _ = run(state("starting", since=T), o)
    s, kinds, why = run(s, replace(o, acquire_result="busy"), T + 0.2)
    assert s.role == "standby" and kinds == ["fence"] and "took the key first" in why


def test_a_redis_error_tries_again_without_fencing() -> None:
    o = obs(lease=LeaseView(None), controls=PAUSED, persisted_paused=True, local_services=UP)
    s, _, _ = run(state("starting", since=T), o)
    s, kinds, _ = run(s, replace(o, acquire_result="error"), T + 0.2)
    assert s.role == "starting" and kinds == [] and not s.reclaiming
    s, kinds, _ = run(s, o, T + 0.4)
    assert kinds == ["acquire"] and s.reclaiming


def test_takeover_refused_by_a_primary_peer_is_not_a_failure() -> None:
    """The old primary's DRBD stayed Primary: roll back, release, alert, wait a lease
    time, and do not mark this node failed (it did nothing wrong)."""
    s = state("promoting", since=T - 5)
    o = obs(lease=LeaseView("a", 5, T + 2.8), own_lease=OwnLease(5, T - 0.2))
    after, kinds, why = run(s, replace(o, takeover_result="refused"))
    assert after.role == "standby" and after.failed_until is None
    assert kinds == ["release", "alert"] and "set_failed" not in kinds
    assert "no service" in why or "refused" in why
    assert after.wait_until is not None and after.wait_until >= T + 3.0
