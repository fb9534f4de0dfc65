"""The agent logs a decision when it changes, not each cycle its countdown ticks."""

from __future__ import annotations

import pytest

from bot.agent.reporter import reason_changed


@pytest.mark.parametrize(
    ("previous", "reason", "logged"),
    [
        ("", "standby: lease held by nobody", True),
        (
            "standby: waiting 2.8 s more (rule 5 long wait)",
            "standby: waiting 2.6 s more (rule 5 long wait)",
            False,
        ),
        (
            "standby: promised the peer not to take the lease for 2.8 s more",
            "standby: promised the peer not to take the lease for 12 s more",
            False,
        ),
        ("standby: waiting 0.3 s more (rule 5 long wait)", "acquiring the lease (free)", True),
        ("standby: lease held by a", "standby: lease held by b", True),
        ("standby: lease held by b", "standby: lease held by b", False),
    ],
)
def test_a_countdown_alone_is_not_a_new_decision(previous: str, reason: str, logged: bool) -> None:
    assert reason_changed(previous, reason) is logged
