"""Unit tests of the lease rules and the decisions that do not change the role."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bot.config import parse_config
from bot.ha import (
    ControlsView,
    HaConfig,
    HaState,
    LeaseView,
    LocalServices,
    OwnLease,
    PeerView,
    RSeriesNotification,
    acts_as_primary,
    lease_valid_until,
    may_promise,
    renewal_decision,
    step,
)
from tests.ha.helpers import CFG, OWN, PEER_OK, T, holder_obs, obs, run, state

HELD_BY_B = LeaseView("b", 7, T + 2.0, expires_not_before=T + 1.99)


# ----------------------------------------------------------------- rule 1, 3, 4


def test_validity_counts_from_the_send_time() -> None:
    assert lease_valid_until(10.0, CFG) == pytest.approx(10.0 + 3.0 - 0.1)


@pytest.mark.parametrize(
    ("own", "result", "now", "promise", "expected"),
    [
        (OWN, "renewed", T, None, "keep"),
        (OWN, "held_by_other", T, None, "fence"),
        (OWN, "missing", T, None, "reacquire"),
        (None, None, T, None, "fence"),
        (OwnLease(5, T - 2.41), None, T, None, "fence"),  # 2.9 - 2.41 < fence budget
        (OwnLease(5, T - 2.39), None, T, None, "keep"),
        (OwnLease(5, T - 2.5), None, T, T + 2.0, "keep"),  # the peer's promise holds
    ],
)
def test_renewal_decision(own, result, now, promise, expected) -> None:  # type: ignore[no-untyped-def]
    assert renewal_decision(own, result, now, CFG, promise) == expected


def test_primary_stays_on_the_peer_promise_while_redis_is_away() -> None:
    s = state("primary")
    o = holder_obs(
        own_lease=OwnLease(5, T - 2.6),
        lease_read_ok=False,
        lease=None,
        peer=replace(holder_obs().peer, promise_valid_until=T + 2.0),
    )
    after, kinds, _ = run(s, o)
    assert after.role == "primary" and kinds == []
    assert acts_as_primary(after, T + 1.9) and not acts_as_primary(after, T + 2.0)


def test_fencing_node_keeps_counting_as_primary_until_its_lease_ends() -> None:
    after, kinds, _ = run(state("primary"), holder_obs(own_lease=OwnLease(5, T - 2.5)))
    assert kinds[0] == "fence" and after.fencing
    assert acts_as_primary(after, T + 0.39) and not acts_as_primary(after, T + 0.4)
    again, kinds2, _ = run(after, holder_obs(own_lease=None))
    assert kinds2 == [] and again.valid_until == after.valid_until  # never extended


def test_reacquired_lease_keeps_the_role_and_records_the_new_epoch() -> None:
    after, kinds, _ = run(state("primary"), holder_obs(own_lease=OwnLease(9, T - 0.1)))
    assert after.role == "primary" and after.epoch == 9 and kinds == ["record_epoch"]


# ----------------------------------------------------------------- rule 5


def _standby(**kw: object) -> HaState:
    return state("standby", **kw)


def test_free_key_is_taken_when_all_conditions_hold() -> None:
    after, kinds, why = run(_standby(), obs())
    assert kinds == ["acquire"] and after.acquiring_since == T
    assert why == "acquiring the lease (free)"
    assert not may_promise(after)


def test_just_started_node_waits_a_whole_lease() -> None:
    s = HaState.initial(CFG, T - 1.0)
    s = replace(s, role="standby")
    _, kinds, why = run(s, obs())
    assert kinds == [] and "waiting 2.1 s more (rule 5 long wait)" in why
    _, kinds, _ = run(s, obs(), T - 1.0 + 3.1)
    assert kinds == ["acquire"]


def test_key_is_not_taken_before_its_predicted_expiry() -> None:
    s, _, _ = run(_standby(), obs(lease=HELD_BY_B))
    _, kinds, why = run(s, obs(), T + 1.995)  # free between earliest and predicted
    assert kinds == [] and "before its predicted expiry" in why
    _, kinds, _ = run(s, obs(), T + 2.0)
    assert kinds == ["acquire"]


def test_key_that_vanished_early_costs_a_whole_lease() -> None:
    s, _, _ = run(_standby(), obs(lease=HELD_BY_B))
    s, kinds, _ = run(s, obs(), T + 1.0)
    assert kinds == [] and s.wait_until == pytest.approx(T + 1.0 + 3.1)
    _, kinds, _ = run(s, obs(), T + 4.0)
    assert kinds == []
    _, kinds, _ = run(s, obs(), T + 4.11)
    assert kinds == ["acquire"]


def test_redis_run_id_change_costs_a_whole_lease() -> None:
    s, _, _ = run(_standby(), obs(lease=HELD_BY_B))
    s, kinds, _ = run(s, obs(redis_run_id="r2"), T + 2.5)
    assert kinds == [] and s.wait_until == pytest.approx(T + 2.5 + 3.1)


def test_release_naming_this_node_is_taken_at_once_despite_the_promise() -> None:
    s, _, _ = run(_standby(), obs(lease=HELD_BY_B))
    released = LeaseView(None, 7, T + 3, released_to="a")
    _, kinds, why = run(s, obs(lease=released, promise_given_until=T + 2), T + 0.1)
    assert kinds == ["acquire"] and "released to this node" in why


def test_release_naming_another_node_is_not_taken() -> None:
    _, kinds, why = run(_standby(), obs(lease=LeaseView(None, 7, T + 3, released_to="c")))
    assert kinds == [] and "release to c" in why


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"healthy": False, "health_reasons": ("AMI link down for 4.0 s",)}, "unhealthy"),
        ({"ready": False, "ready_reasons": ("DRBD disk is Inconsistent",)}, "not ready"),
        ({"promise_given_until": T + 1.5}, "promised the peer not to take the lease for 1.5 s"),
        ({"controls": ControlsView(switchover_to="b")}, "switchover to b requested"),
        ({"controls": ControlsView(outdated=frozenset({"a"}))}, "marked outdated"),
        ({"lease_read_ok": False}, "lease read failed"),
    ],
)
def test_standby_does_not_acquire_when(change: dict[str, object], why: str) -> None:
    _, kinds, reason = run(_standby(), obs(**change))
    assert kinds == [] and why in reason


def test_acquire_in_flight_is_not_repeated_and_gives_up() -> None:
    s = _standby(acquiring_since=T)
    _, kinds, why = run(s, obs(), T + 0.5)
    assert kinds == [] and why == "standby: acquire in flight"
    after, _, _ = run(s, obs(acquire_result="busy"), T + 0.5)
    assert after.acquiring_since is None
    after, _, _ = run(s, obs(), T + CFG.acquire_timeout + 0.1)
    assert after.acquiring_since is None


def test_unasked_own_lease_is_dropped() -> None:
    after, kinds, _ = run(_standby(), obs(own_lease=OWN))
    assert after.role == "standby" and kinds == ["drop_lease"]


# ----------------------------------------------------------------- rule 7 and 8


@pytest.mark.parametrize(
    ("lease", "services", "why"),
    [
        (LeaseView("a", 4, T + 1), LocalServices(asterisk=True), "state has 5"),
        (LeaseView("a", 5, T + 1), LocalServices(asterisk=True, vip=False), "not up"),
    ],
)
def test_start_does_not_adopt_a_lease_that_disagrees(
    lease: LeaseView, services: LocalServices, why: str
) -> None:
    after, kinds, reason = run(state("starting"), obs(lease=lease, local_services=services))
    assert after.role == "standby" and kinds == ["fence"] and why in reason


def test_failed_adoption_starts_as_standby_and_fences() -> None:
    s = state("starting", adopting=True, epoch=5, since=T)
    o = obs(renew_result="missing", local_services=LocalServices(asterisk=True))
    after, kinds, _ = run(s, o, T + 0.1)
    assert after.role == "standby" and kinds == ["fence"]


def test_pause_survives_a_lost_flag() -> None:
    s = state("paused", paused_from="standby")
    after, kinds, _ = run(s, obs(controls=ControlsView(paused=None), persisted_paused=True))
    assert after.role == "paused" and kinds == []


def test_paused_start_with_services_waits_for_redis() -> None:
    o = obs(lease_read_ok=False, lease=None, persisted_paused=True)
    o = replace(o, local_services=LocalServices(asterisk=True))
    after, kinds, _ = run(state("starting"), o)
    assert after.role == "starting" and kinds == []


# ----------------------------------------------------------------- primary duties


def test_unhealthy_primary_without_standby_restarts_asterisk_then_alerts() -> None:
    lonely = PeerView(node_id="b", reachable=False)
    sick = {"healthy": False, "health_reasons": ("3 test calls failed in a row",), "peer": lonely}
    s = state("primary")
    s, kinds, why = run(s, holder_obs(**sick))
    assert kinds == ["restart_asterisk", "alert"] and "(1 of 2)" in why
    s, kinds, _ = run(s, holder_obs(**sick, restart_result="succeeded"), T + 1)
    assert kinds == ["alert"] and s.restarts == 1  # too soon for attempt 2: boot timeout
    s, kinds, why = run(s, holder_obs(**sick, own_lease=OwnLease(5, T + 60)), T + 61)
    assert kinds == ["restart_asterisk", "alert"] and "(2 of 2)" in why
    s, kinds, _ = run(
        s, holder_obs(**sick, restart_result="failed", own_lease=OwnLease(5, T + 121)), T + 122
    )
    assert kinds == [] and s.restarts == 2  # stuck alert was already sent once
    assert s.role == "primary"


def test_holddown_blocks_a_health_handover() -> None:
    s = state("primary", holddown_until=T + 10)
    _, kinds, why = run(s, holder_obs(healthy=False))
    assert "demote" not in kinds and "hold-down for 10 s more" in why


def test_took_over_from_a_release_starts_the_holddown() -> None:
    s = _standby(acquiring_since=T, acquiring_released=True)
    after, _, _ = run(s, obs(own_lease=OwnLease(6, T)))
    assert after.holddown_until == T + CFG.failover_holddown


def test_switchover_to_unready_peer_is_refused() -> None:
    o = holder_obs(
        controls=ControlsView(switchover_to="b"), peer=PeerView(node_id="b", reachable=True)
    )
    after, kinds, why = run(state("primary"), o)
    assert after.role == "primary" and kinds == ["clear_switchover"] and "refused" in why


def test_failback_waits_for_delay_and_quiet() -> None:
    cfg = replace(CFG, preferred_primary="b")
    s = state("primary", cfg=cfg)
    s, kinds, why = run(s, holder_obs(active_calls=0))
    assert kinds == [] and "failback to b in 300 s" in why
    later = holder_obs(active_calls=3, own_lease=OwnLease(5, T + 300))
    _, kinds, why = run(s, later, T + 301)
    assert kinds == [] and "waits for no calls (3)" in why


# ----------------------------------------------------------------- R-Series notifications


def test_poweron_makes_the_primary_route_again() -> None:
    note = RSeriesNotification("POWERON", "B")
    _, kinds, _ = run(state("primary"), holder_obs(rseries_notification=note))
    assert kinds == ["route_spans", "alert"]


def test_button_pauses_the_cluster() -> None:
    note = RSeriesNotification("BUTTON", "B")
    after, kinds, _ = run(state("primary"), holder_obs(rseries_notification=note))
    assert after.role == "paused" and kinds[:2] == ["pause_cluster", "alert"]


def test_watchdog_is_an_observation_only() -> None:
    note = RSeriesNotification("WATCHDOG", "A")
    s, _, _ = run(_standby(), obs(lease=HELD_BY_B))
    after, kinds, _ = run(s, obs(lease=HELD_BY_B, rseries_notification=note))
    assert kinds == ["alert"] and after.role == "standby"


def test_ha_config_from_config(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    cfg = parse_config(
        """
        [node]
        id = "a"
        rseries_host = "A"
        [cluster]
        name = "lab"
        peers = [{ id = "b", api = "http://127.0.0.1:9442" }]
        secret_file = "secret"
        lease_ttl = "4s"
        preferred_primary = "a"
        [asterisk]
        restart_attempts = 1
        """,
        tmp_path,
    )
    ha = HaConfig.from_config(cfg)
    assert (ha.node_id, ha.peers, ha.lease_ttl, ha.preferred_primary) == ("a", ("b",), 4.0, "a")
    assert (ha.restart_attempts, ha.rseries_host, ha.acquire_timeout) == (1, "A", 2.0)


def test_spans_moved_away_by_a_command_are_routed_back_by_the_primary() -> None:
    note = RSeriesNotification("COMMAND", "B")
    after, kinds, _ = run(state("primary"), holder_obs(rseries_notification=note))
    assert kinds == ["route_spans", "alert"] and after.role == "primary"


@pytest.mark.parametrize("active", ["A", "B"])
def test_a_command_is_not_fought_by_a_node_that_is_not_serving(active: str) -> None:
    note = RSeriesNotification("COMMAND", active)
    s, _, _ = run(_standby(), obs(lease=HELD_BY_B))
    after, kinds, _ = run(s, obs(lease=HELD_BY_B, rseries_notification=note))
    assert kinds == [] and after.role == "standby"


def test_the_primary_own_route_is_not_routed_again() -> None:
    note = RSeriesNotification("COMMAND", "A")
    _, kinds, _ = run(state("primary"), holder_obs(rseries_notification=note))
    assert kinds == []


# ----------------------------------------------------------------- a fault both nodes share

PEER_FAILED_TEST_CALL = replace(PEER_OK, test_call_failed=True)


def _promote_args(peer: PeerView, **kw: object) -> dict[str, object]:
    s = _standby(acquiring_since=T, acquiring_released=True)
    _, actions, _ = step(s, obs(own_lease=OwnLease(6, T), peer=peer, **kw), T)  # type: ignore[arg-type]
    (promote,) = [a for a in actions if a.kind == "promote"]
    return dict(promote.args)


@pytest.mark.parametrize(
    ("peer", "controls", "only_node"),
    [
        (PEER_OK, ControlsView(), False),
        (PeerView(node_id="b"), ControlsView(), True),  # unreachable
        (PEER_FAILED_TEST_CALL, ControlsView(), True),  # the old primary failed the same way
        (replace(PEER_OK, role="failed"), ControlsView(), True),  # says healthy, is failed
        (replace(PEER_OK, role="cordoned"), ControlsView(), True),
        (PEER_OK, ControlsView(failed=frozenset({"b"})), True),
        (PEER_OK, ControlsView(outdated=frozenset({"b"})), True),
    ],
)
def test_the_takeover_knows_whether_it_is_the_only_node_that_can_serve(
    peer: PeerView, controls: ControlsView, only_node: bool
) -> None:
    assert _promote_args(peer, controls=controls)["only_node"] is only_node


def test_a_primary_whose_test_call_fails_keeps_serving_when_the_peer_failed_it_too() -> None:
    sick = {"healthy": False, "health_reasons": ("2 test calls failed in a row",)}
    _, kinds, why = run(state("primary"), holder_obs(**sick, peer=PEER_FAILED_TEST_CALL))
    assert "demote" not in kinds and kinds[0] == "restart_asterisk"
    assert "b's own last test call failed too" in why
    _, kinds, _ = run(state("primary"), holder_obs(**sick, peer=PEER_OK))
    assert kinds == ["demote"]


def test_an_operator_may_switch_over_to_a_peer_whose_test_call_failed() -> None:
    o = holder_obs(controls=ControlsView(switchover_to="b"), peer=PEER_FAILED_TEST_CALL)
    after, kinds, _ = run(state("primary"), o)
    assert after.role == "demoting" and kinds == ["demote"]


def test_the_loop_wakes_at_the_next_instant_rule_5_can_change() -> None:
    from bot.ha import next_deadline

    s = _standby(predicted_expiry=T + 1.5, wait_until=T + 4.0)
    assert next_deadline(s, None, T) == T + 1.5
    assert next_deadline(s, T + 0.7, T) == T + 0.7  # the promise given ends first
    assert next_deadline(s, T - 1.0, T + 2.0) == T + 4.0  # past instants do not count
    assert next_deadline(_standby(), None, T) is None


def test_a_planned_hand_over_arms_no_holddown() -> None:
    """Only a health failover arms failover_holddown: after a switchover, failback, cordon
    or stop an unhealthy new primary still hands back to a healthy peer (rule 9)."""
    s, kinds, _ = run(_standby(), obs(lease=LeaseView(None, 7, T + 3, released_to="a")))
    assert kinds == ["acquire"] and s.acquiring_released and not s.acquiring_planned
    planned = LeaseView(None, 7, T + 3, released_to="a", released_planned=True)
    s, kinds, _ = run(_standby(), obs(lease=planned))
    assert kinds == ["acquire"] and s.acquiring_planned
    after, _, _ = run(s, obs(own_lease=OwnLease(8, T)))
    assert after.role == "promoting" and after.holddown_until is None
    _, kinds, why = run(
        replace(after, role="primary", valid_until=T + 2.9),
        holder_obs(healthy=False, own_lease=OwnLease(8, T), lease=LeaseView("a", 8, T + 3)),
        T + 0.1,
    )
    assert kinds == ["demote"] and "unhealthy" in why


@pytest.mark.parametrize(
    ("controls", "health", "planned"),
    [
        (ControlsView(switchover_to="b"), True, True),
        (ControlsView(cordoned=frozenset({"a"})), True, True),
        (ControlsView(), False, False),
    ],
    ids=["switchover", "cordon", "health"],
)
def test_the_release_says_whether_the_hand_over_was_planned(
    controls: ControlsView, health: bool, planned: bool
) -> None:
    demoting, kinds, _ = run(state("primary"), holder_obs(controls=controls, healthy=health))
    assert kinds == ["demote"]
    after, actions, _ = step(demoting, holder_obs(demote_result="succeeded"), T + 1)
    release = [a for a in actions if a.kind == "release"]
    assert [(a.args["to"], a.args["planned"]) for a in release] == [("b", planned)]
    assert after.role == "standby"
