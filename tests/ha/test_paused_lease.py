"""Rule 8 on the step's side: a paused primary whose lease ran out (Redis gone) keeps its
services; a resume waits for the renewal to take the free key again instead of fencing."""

from __future__ import annotations

from bot.ha import ControlsView, LeaseView, OwnLease
from tests.ha.helpers import PEER_OK, T, obs, run, state

EXPIRED = OwnLease(5, T - 10.0)  # renewed last 10 s ago: long past its lease


def _paused_primary() -> object:
    return state("paused", paused_from="primary", epoch=5, valid_until=T - 7.1)


def test_a_paused_primary_with_an_expired_lease_takes_no_action() -> None:
    o = obs(lease_read_ok=False, own_lease=EXPIRED, persisted_paused=True, peer=PEER_OK)
    after, kinds, why = run(_paused_primary(), o)  # type: ignore[arg-type]
    assert after.role == "paused" and kinds == [], why


def test_a_resume_with_the_key_free_waits_for_the_renewal_to_take_it_again() -> None:
    resumed = ControlsView(paused=False)
    o = obs(lease=LeaseView(None), controls=resumed, own_lease=EXPIRED, peer=PEER_OK)
    after, kinds, why = run(_paused_primary(), o)  # type: ignore[arg-type]
    assert after.role == "paused" and kinds == []
    assert why == "paused: resume waits for the free key to be taken again"
    # The renewal took it again (epoch 6): the resume goes through, services untouched.
    again = obs(
        lease=LeaseView("a", 6, T + 3), controls=resumed, own_lease=OwnLease(6, T), peer=PEER_OK
    )
    after, kinds, _ = run(after, again, T + 1)
    assert after.role == "primary" and "fence" not in kinds and after.epoch == 6


def test_a_resume_with_the_key_held_by_another_node_fences() -> None:
    resumed = ControlsView(paused=False)
    o = obs(lease=LeaseView("b", 9, T + 3), controls=resumed, own_lease=EXPIRED, peer=PEER_OK)
    after, kinds, _ = run(_paused_primary(), o)  # type: ignore[arg-type]
    assert after.role == "standby" and "fence" in kinds
