"""Boundaries of the lease rules (bot/ha/lease.py) that the model-based runs reach only by
chance: each test here kills mutants that survived the fast tests."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.ha import HaConfig, HaState, LeaseView, OwnLease
from bot.ha.lease import (
    free_for_me,
    holder_valid_until,
    may_promise,
    renewal_decision,
    track_lease,
)
from bot.ha.types import ROLES

CFG = HaConfig(node_id="a", peers=("b",), lease_ttl=3.0, drift_margin=0.1, fence_budget=0.5)
T = 1000.0
# The roles in which a node holds, takes or adopts nothing: only these may promise.
PROMISING = {"standby", "failed", "cordoned", "paused", "starting"}


@pytest.mark.parametrize("role", ROLES)
def test_only_non_holder_roles_may_promise(role: str) -> None:
    s = HaState(cfg=CFG, role=role)  # type: ignore[arg-type]
    assert may_promise(s) is (role in PROMISING)


@pytest.mark.parametrize(
    "change", [{"acquiring_since": T}, {"adopting": True}, {"epoch": 4}], ids=str
)
@pytest.mark.parametrize("role", sorted(PROMISING))
def test_no_promise_while_taking_adopting_or_holding(role: str, change: dict[str, object]) -> None:
    s = HaState(cfg=CFG, role=role)  # type: ignore[arg-type]
    assert may_promise(replace(s, **change)) is False  # type: ignore[arg-type]


def test_free_key_before_and_at_its_predicted_expiry() -> None:
    s = HaState(cfg=CFG, role="standby", predicted_expiry=T + 0.5)
    free = LeaseView(None)
    assert free_for_me(s, free, T) == (False, "key free 0.50 s before its predicted expiry")
    assert free_for_me(s, free, T + 0.5) == (True, "lease free")


def test_long_wait_ends_exactly_at_wait_until() -> None:
    s = HaState(cfg=CFG, role="standby", wait_until=T + 3.1)
    free = LeaseView(None)
    assert free_for_me(s, free, T) == (False, "waiting 3.1 s more (rule 5 long wait)")
    assert free_for_me(s, free, T + 3.1) == (True, "lease free")


def test_held_or_released_elsewhere_is_not_free() -> None:
    s = HaState(cfg=CFG, role="standby")
    assert free_for_me(s, LeaseView("b", 4, T + 2), T) == (False, "lease held by b")
    assert free_for_me(s, LeaseView(None, 4, released_to="c"), T) == (
        False,
        "lease held by release to c",
    )
    assert free_for_me(s, LeaseView(None, 4, released_to="a"), T) == (True, "lease released to a")


def test_fencing_starts_exactly_fence_budget_before_validity_ends() -> None:
    own = OwnLease(5, T)  # valid until T + 3.0 - 0.1
    start = T + 2.9 - 0.5
    assert renewal_decision(own, "renewed", start - 0.001, CFG) == "keep"
    assert renewal_decision(own, "renewed", start, CFG) == "fence"
    assert renewal_decision(own, "held_by_other", T, CFG) == "fence"
    assert renewal_decision(own, "missing", T, CFG) == "reacquire"
    assert renewal_decision(None, "renewed", T, CFG) == "fence"


def test_a_promise_extends_the_holder_only_when_it_lasts_longer() -> None:
    own = OwnLease(5, T)
    assert holder_valid_until(own, None, CFG) == pytest.approx(T + 2.9)
    assert holder_valid_until(own, T + 1.0, CFG) == pytest.approx(T + 2.9)
    assert holder_valid_until(own, T + 5.0, CFG) == T + 5.0
    assert holder_valid_until(None, T + 5.0, CFG) == T + 5.0
    assert holder_valid_until(None, None, CFG) is None
    assert renewal_decision(own, "renewed", T + 4.4, CFG, promise_valid_until=T + 5.0) == "keep"


def test_tracks_the_expiry_of_a_lease_released_to_another_node() -> None:
    s = HaState(cfg=CFG, role="standby")
    tracked = track_lease(s, LeaseView(None, 4, T + 2.0, released_to="c"), "r1", T)
    assert (tracked.predicted_expiry, tracked.earliest_expiry) == (T + 2.0, T + 2.0)


def test_earliest_expiry_is_the_send_time_bound_when_known() -> None:
    s = HaState(cfg=CFG, role="standby")
    known = track_lease(s, LeaseView("b", 4, T + 2.0, expires_not_before=T + 1.8), "r1", T)
    assert (known.predicted_expiry, known.earliest_expiry) == (T + 2.0, T + 1.8)
    unknown = track_lease(s, LeaseView("b", 4, T + 2.0), "r1", T)
    assert (unknown.predicted_expiry, unknown.earliest_expiry) == (T + 2.0, T + 2.0)


def test_a_key_that_vanished_early_means_the_long_wait() -> None:
    s = HaState(cfg=CFG, role="standby", predicted_expiry=T + 2.0, earliest_expiry=T + 1.8)
    edge = T + 1.8 - CFG.drift_margin
    on_time = track_lease(s, LeaseView(None), "r1", edge)  # not earlier than it could expire
    assert on_time.wait_until is None and on_time.predicted_expiry == T + 2.0
    early = track_lease(s, LeaseView(None), "r1", edge - 0.001)
    assert early.wait_until == pytest.approx(edge - 0.001 + 3.0 + 0.1)
    assert (early.predicted_expiry, early.earliest_expiry) == (None, None)


def test_a_free_key_is_forgotten_exactly_at_its_predicted_expiry() -> None:
    s = HaState(cfg=CFG, role="standby", predicted_expiry=T + 2.0, earliest_expiry=T + 2.0)
    at = track_lease(s, LeaseView(None), "r1", T + 2.0)
    assert (at.predicted_expiry, at.earliest_expiry, at.wait_until) == (None, None, None)
    assert free_for_me(at, LeaseView(None), T + 2.0) == (True, "lease free")
