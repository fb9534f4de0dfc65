"""Rule 9: an operator's request can delay service, never forbid it.

A switchover request names a target. The node that handed over waits for that
target, but not forever: the request ends when the target failed its takeover,
refused it, is out of eligibility, or has not taken the lease within
``drain + lease_ttl + handover_budget`` of the node first seeing the request. The
node that ends it clears it on the bus, and the event log says why.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bot.ha import ControlsView, LeaseView, OwnLease, PeerView, step
from bot.ha.machine import switchover_ended
from tests.ha.helpers import CFG, PEER_OK, T, obs, run, state

TO_B = ControlsView(switchover_to="b", switchover_drain=5.0, switchover_id="r1")
LIMIT = 5.0 + CFG.lease_ttl + CFG.handover_budget


def _standby(**kw: Any) -> Any:
    return state("standby", **kw)


def _clears(s: Any, o: Any, now: float = T) -> tuple[Any, list[Any], str]:
    """The step with its actions whole (``run`` keeps only their kinds)."""
    return step(s, o, now)


def test_a_fresh_switchover_to_the_peer_holds_the_standby_back() -> None:
    _, kinds, why = run(_standby(), obs(controls=TO_B, peer=PEER_OK))
    assert kinds == [] and why == "standby: switchover to b requested"


def test_a_switchover_whose_target_is_marked_failed_ends_and_the_lease_is_taken() -> None:
    o = obs(controls=replace(TO_B, failed=frozenset({"b"})), peer=PEER_OK)
    after, actions, why = _clears(_standby(), o, T)
    kinds = [a.kind for a in actions]
    assert kinds == ["clear_switchover", "acquire"], why
    clear = actions[0]
    assert clear.args["request"] == "r1"
    assert clear.args["outcome"] == "to b ended: b is marked failed"
    # once per request: the next cycle does not ask again
    _, again, _ = _clears(replace(after, acquiring_since=None), o, T + 0.2)
    assert [a.kind for a in again] == ["acquire"]


def test_a_switchover_whose_target_reports_itself_failed_ends() -> None:
    failed_b = replace(PEER_OK, role="failed")
    _, kinds, _ = run(_standby(), obs(controls=TO_B, peer=failed_b))
    assert kinds == ["clear_switchover", "acquire"]


def test_a_switchover_not_taken_in_time_ends() -> None:
    s, kinds, _ = run(_standby(), obs(controls=TO_B, peer=PEER_OK))
    assert kinds == [] and s.switchover_seen == ("r1", T)
    _, kinds, why = run(s, obs(controls=TO_B, peer=PEER_OK), T + LIMIT)
    assert kinds == [] and "switchover to b requested" in why
    _, actions, _ = _clears(s, obs(controls=TO_B, peer=PEER_OK), T + LIMIT + 0.01)
    assert [a.kind for a in actions] == ["clear_switchover", "acquire"]
    assert "has not taken the lease within" in actions[0].args["outcome"]


def test_a_switchover_whose_target_holds_the_lease_is_not_ended_by_time() -> None:
    held = LeaseView("b", 8, T + LIMIT + 3)
    s = _standby(switchover_seen=("r1", T - 10 * LIMIT))
    o = obs(controls=TO_B, peer=PEER_OK, lease=held)
    assert switchover_ended(s, o, T) is None


def test_a_new_request_restarts_the_clock() -> None:
    s = _standby(switchover_seen=("r1", T - 10 * LIMIT), switchover_ended="r1")
    newer = replace(TO_B, switchover_id="r2")
    after, kinds, why = run(s, obs(controls=newer, peer=PEER_OK))
    assert kinds == [] and after.switchover_seen == ("r2", T) and "requested" in why


def test_a_switchover_to_an_unknown_node_holds_nobody_back() -> None:
    o = obs(controls=ControlsView(switchover_to="c", switchover_id="r1"), peer=PEER_OK)
    _, actions, _ = _clears(_standby(), o, T)
    assert [a.kind for a in actions] == ["clear_switchover", "acquire"]
    assert "c is not a node of this cluster" in actions[0].args["outcome"]


def _promoting_b() -> Any:
    cfg = replace(CFG, node_id="b", peers=("a",))
    return state("promoting", cfg=cfg)


def _asked_b(**kw: Any) -> Any:
    peer_a = PeerView(node_id="a", role="standby", healthy=True, ready=True, reachable=True)
    kw.setdefault("own_lease", OwnLease(5, T - 0.2))
    return obs(controls=TO_B, peer=peer_a, lease=LeaseView("b", 5, T + 2.8), **kw)


def test_the_target_whose_takeover_failed_ends_the_request() -> None:
    after, actions, _ = _clears(_promoting_b(), _asked_b(takeover_result="failed"))
    assert after.role == "failed"
    clears = [a for a in actions if a.kind == "clear_switchover"]
    assert [c.args["outcome"] for c in clears] == ["to b ended: b's takeover failed"]
    assert clears[0].args["request"] == "r1"


def test_the_target_whose_takeover_was_refused_ends_the_request() -> None:
    after, actions, _ = _clears(_promoting_b(), _asked_b(takeover_result="refused"))
    assert after.role == "standby"
    clears = [a for a in actions if a.kind == "clear_switchover"]
    assert [c.args["outcome"] for c in clears] == ["to b ended: b refused"]
