"""The stop hand-over's decisions (bot.agent.stop), apart from the waiting."""

from __future__ import annotations

import pytest

from bot.actions.takeover import FoundServices
from bot.agent.stop import fence_is_news, progress, skip_reason


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


def test_a_failed_demotion_is_no_hand_over() -> None:
    # The demotion failed: the node fenced itself and left the lease to expire; the peer
    # takes over as after a lost host, not from our hand-over.
    assert progress("failed", False, request_seen=True, request_pending=False) == "failed"


@pytest.mark.parametrize(
    ("found", "news"),
    [
        # A standby's stop, or one after a complete hand-over: nothing ran, a check only
        # (no self_fence alert, no failoverbot_self_fences_total{stopped}).
        (FoundServices(vip_present=False, asterisk_running=False, drbd_primary=False), False),
        # The demotion left Asterisk running: killing it is a self-fence, said as one
        # (never "nothing primary here").
        (FoundServices(vip_present=False, asterisk_running=True, drbd_primary=False), True),
        # Could not tell: counted as running.
        (FoundServices(vip_present=None, asterisk_running=False, drbd_primary=False), True),
        (None, True),
    ],
    ids=["nothing", "asterisk-left", "vip-unknown", "probe-failed"],
)
def test_the_stop_fence_is_announced_only_when_something_ran(
    found: FoundServices | None, news: bool
) -> None:
    assert fence_is_news(found) is news
