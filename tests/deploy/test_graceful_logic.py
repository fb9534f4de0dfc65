"""The stop hand-over's decisions (bot.graceful), apart from the waiting."""

from __future__ import annotations

import pytest

from bot.graceful import progress, skip_reason


@pytest.mark.parametrize(
    ("role", "paused", "peer", "expected"),
    [
        ("primary", False, "b", None),
        ("primary", True, "b", "paused"),
        ("standby", False, "b", "not primary"),
        ("demoting", False, "b", "not primary"),
        ("primary", False, None, "no peer"),
    ],
)
def test_who_tries_a_hand_over(
    role: str, paused: bool, peer: str | None, expected: str | None
) -> None:
    why = skip_reason(role, paused, peer)
    assert (why is None) if expected is None else (why is not None and expected in why)


def test_progress() -> None:
    # Not yet read by the loop: wait, even though the request is not visible yet.
    assert progress("primary", True, request_seen=False, request_pending=False) == "waiting"
    # Read and still there, or demoting: wait.
    assert progress("primary", True, request_seen=True, request_pending=True) == "waiting"
    assert progress("demoting", True, request_seen=True, request_pending=False) == "waiting"
    # Read and cleared while still primary: the loop refused it.
    assert progress("primary", True, request_seen=True, request_pending=False) == "refused"
    # Demoted and the lease gone: handed over.
    assert progress("standby", False, request_seen=True, request_pending=False) == "handed_over"
    # Standby but still holding the lease: not done yet.
    assert progress("standby", True, request_seen=True, request_pending=False) == "waiting"
