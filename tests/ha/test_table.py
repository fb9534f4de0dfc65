"""One unit test per row of the role transition table, and the drawing's check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from bot.ha import (
    TRANSITIONS,
    ControlsView,
    HaState,
    LeaseView,
    LocalServices,
    Observation,
    OwnLease,
    render_roles_md,
)
from tests.ha.helpers import CFG, T, holder_obs, obs, run, state

Case = tuple[HaState, Observation, list[str], str]


def _cases() -> dict[tuple[str, str], Callable[[], Case]]:
    running = LocalServices(vip=True, asterisk=True, drbd_primary=True)
    old_own = OwnLease(5, T - 2.5)  # valid until T + 0.4: inside the fence budget
    return {
        ("starting", "lease_adopted"): lambda: (
            state("starting", adopting=True, epoch=5),
            obs(lease=LeaseView("a", 5, T + 1), own_lease=OwnLease(5, T - 0.01)),
            [],
            "adopted own lease epoch 5",
        ),
        ("starting", "start_as_standby"): lambda: (
            state("starting"),
            obs(lease=LeaseView("b", 7, T + 2), local_services=LocalServices(asterisk=True)),
            ["fence"],
            "standby: lease held by b, fencing local services",
        ),
        ("starting", "pause"): lambda: (
            state("starting"),
            obs(lease=LeaseView("b", 7, T + 2), persisted_paused=True),
            [],
            "paused at start",
        ),
        ("standby", "lease_acquired"): lambda: (
            state("standby", acquiring_since=T - 0.05),
            obs(own_lease=OwnLease(6, T - 0.05), acquire_result="acquired"),
            ["record_epoch", "promote"],
            "promoting: took the lease, epoch 6",
        ),
        ("standby", "pause"): lambda: (
            state("standby"),
            obs(controls=ControlsView(paused=True)),
            ["persist_pause"],
            "paused",
        ),
        ("standby", "cordon"): lambda: (
            state("standby"),
            obs(controls=ControlsView(cordoned=frozenset({"a"}))),
            [],
            "cordoned by an operator",
        ),
        ("standby", "mark_failed"): lambda: (
            state("standby"),
            obs(controls=ControlsView(failed=frozenset({"a"}))),
            [],
            "failed mark on the bus",
        ),
        ("promoting", "takeover_succeeded"): lambda: (
            state("promoting"),
            holder_obs(takeover_result="succeeded"),
            [],
            "primary: takeover done, epoch 5",
        ),
        ("promoting", "takeover_degraded"): lambda: (
            state("promoting"),
            holder_obs(takeover_result="degraded"),
            ["alert"],
            "primary (degraded)",
        ),
        ("promoting", "takeover_failed"): lambda: (
            state("promoting"),
            holder_obs(takeover_result="failed"),
            ["release", "set_failed", "alert"],
            "failed: takeover failed, not eligible for 600 s",
        ),
        ("promoting", "takeover_refused"): lambda: (
            state("promoting"),
            holder_obs(takeover_result="refused"),
            ["release", "alert"],
            "standby: takeover refused: the peer's DRBD is still Primary",
        ),
        ("promoting", "lease_lost"): lambda: (
            state("promoting"),
            holder_obs(renew_result="held_by_other", lease=LeaseView("b", 6, T + 3)),
            ["fence", "alert"],
            "fencing: lease taken by b",
        ),
        ("primary", "lease_lost"): lambda: (
            state("primary"),
            holder_obs(own_lease=old_own),
            ["fence", "alert"],
            "fencing: lease renewal failed for 2.5 s and no promise from the peer",
        ),
        ("primary", "unhealthy_handover"): lambda: (
            state("primary"),
            holder_obs(healthy=False, health_reasons=("AMI link down for 3.2 s",)),
            ["demote"],
            "demoting: unhealthy (AMI link down for 3.2 s), handing over to b",
        ),
        ("primary", "switchover"): lambda: (
            state("primary"),
            holder_obs(controls=ControlsView(switchover_to="b", switchover_drain=30.0)),
            ["demote"],
            "demoting: switchover to b, handing over to b",
        ),
        ("primary", "failback"): lambda: (
            state("primary", cfg=replace(CFG, preferred_primary="b"), peer_good_since=T - 301),
            holder_obs(active_calls=0),
            ["demote"],
            "demoting: failback to preferred b",
        ),
        ("primary", "cordon"): lambda: (
            state("primary"),
            holder_obs(controls=ControlsView(cordoned=frozenset({"a"}))),
            ["demote"],
            "demoting: cordoned",
        ),
        ("primary", "pause"): lambda: (
            state("primary"),
            holder_obs(controls=ControlsView(paused=True)),
            ["persist_pause"],
            "paused as primary: services stay",
        ),
        ("demoting", "demoted"): lambda: (
            state("demoting", handover_to="b"),
            holder_obs(demote_result="succeeded"),
            ["release"],
            "standby: demoted, lease released to b",
        ),
        ("demoting", "demote_failed"): lambda: (
            state("demoting", handover_to="b"),
            holder_obs(demote_result="failed"),
            ["fence", "drop_lease", "set_failed", "alert"],
            "failed: demotion failed",
        ),
        ("demoting", "lease_lost"): lambda: (
            state("demoting", handover_to="b"),
            holder_obs(own_lease=old_own),
            ["fence", "alert"],
            "fencing: lease renewal failed for 2.5 s",
        ),
        ("paused", "resume_as_primary"): lambda: (
            state("paused", paused_from="primary", epoch=5, valid_until=T + 2.7),
            holder_obs(controls=ControlsView(paused=False), persisted_paused=True),
            ["persist_pause"],
            "resumed as primary, epoch 5",
        ),
        ("paused", "resume_as_standby"): lambda: (
            state("paused", paused_from="standby"),
            obs(controls=ControlsView(paused=False), persisted_paused=True),
            ["persist_pause"],
            "resumed as standby",
        ),
        ("paused", "lease_lost"): lambda: (
            state("paused", paused_from="primary", epoch=5, valid_until=T + 2.7),
            holder_obs(renew_result="held_by_other", controls=ControlsView(paused=True)),
            ["fence", "alert", "drop_lease"],
            "fencing: lease taken by another node while paused",
        ),
        ("failed", "holddown_over"): lambda: (
            state("failed", failed_until=T - 1),
            obs(controls=ControlsView(failed=frozenset({"a"}))),
            [],
            "standby: failed hold-down over",
        ),
        ("failed", "cleared"): lambda: (
            state("failed", failed_until=T + 100, failed_seen_on_bus=True),
            obs(),
            [],
            "standby: failed mark cleared",
        ),
        ("failed", "pause"): lambda: (
            state("failed", failed_until=T + 100),
            obs(controls=ControlsView(paused=True)),
            ["persist_pause"],
            "paused",
        ),
        ("cordoned", "uncordon"): lambda: (state("cordoned"), obs(), [], "standby: uncordoned"),
        ("cordoned", "pause"): lambda: (
            state("cordoned"),
            obs(controls=ControlsView(paused=True, cordoned=frozenset({"a"}))),
            ["persist_pause"],
            "paused",
        ),
    } | {
        # a running service found at start is adopted only with the lease (see test_rules)
        ("starting", "lease_adopted_services"): lambda: (
            state("starting"),
            obs(lease=LeaseView("a", 5, T + 1), local_services=running),
            ["adopt"],
            "adopting own lease epoch 5",
        ),
    }


CASES = _cases()
ROWS = [key for key in CASES if key in TRANSITIONS]


def test_every_row_has_a_case() -> None:
    assert set(TRANSITIONS) <= set(CASES)


@pytest.mark.parametrize("row", ROWS, ids=[f"{r}-{e}" for r, e in ROWS])
def test_transition_row(row: tuple[str, str]) -> None:
    before, observation, kinds, reason = CASES[row]()
    expected_role = TRANSITIONS[row][0]  # type: ignore[index]
    after, actions, why = run(before, observation)
    assert after.role == expected_role, why
    assert actions == kinds
    assert why.startswith(reason), why


def test_adopt_is_requested_before_the_adopted_row() -> None:
    before, observation, kinds, reason = CASES[("starting", "lease_adopted_services")]()
    after, actions, why = run(before, observation)
    assert (after.role, after.adopting, actions) == ("starting", True, kinds)
    assert why == reason


def test_roles_md_matches_the_table() -> None:
    committed = (Path(__file__).parents[2] / "docs" / "roles.md").read_text(encoding="utf-8")
    assert committed == render_roles_md(), "regenerate: python -m bot.ha > docs/roles.md"
