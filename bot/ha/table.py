"""The role transition table: every change of role, in one place.

Theory. A node's role says which services it may run and which safety duties it
has. Only three roles run the primary's services: ``promoting``, ``primary`` and
``demoting``; a node enters them only by holding the lease (``lease_acquired``
from ``standby``, ``lease_adopted`` from ``starting``) and leaves them on
``lease_lost`` (fence at ``valid_until - fence_budget``, or a renewal that found
another holder) or by demoting on purpose. ``step`` first turns an observation
into at most one *event*, then looks the pair (role, event) up here; a pair that
is not in the table cannot happen, and the table is the whole state machine. The
actions that go with an event (acquire, promote, fence, release, ...) are chosen
by the handler that names the event, so the table stays readable as a diagram:
``docs/roles.md`` is drawn from it (``python -m bot.ha > docs/roles.md``)
and a test checks that the committed drawing matches.

Safety never depends on the table alone: ``acts_as_primary`` also requires a
valid lease (or the peer's promise) on the node's own clock.
"""

from __future__ import annotations

from typing import Literal

from bot.ha.types import ROLES, Role

Event = Literal[
    "lease_adopted",
    "start_as_standby",
    "pause",
    "lease_acquired",
    "cordon",
    "mark_failed",
    "takeover_succeeded",
    "takeover_degraded",
    "takeover_failed",
    "takeover_refused",
    "lease_lost",
    "unhealthy_handover",
    "switchover",
    "failback",
    "demoted",
    "demote_failed",
    "resume_as_primary",
    "resume_as_standby",
    "holddown_over",
    "cleared",
    "uncordon",
]

# (role, event) -> next role, with the rule that drives it.
TRANSITIONS: dict[tuple[Role, Event], tuple[Role, str]] = {
    # starting: rule 7 (adopt only our own lease, epoch and services agreeing)
    ("starting", "lease_adopted"): ("primary", "own lease renewed, epoch and services agree"),
    ("starting", "start_as_standby"): ("standby", "no lease of ours to adopt, fence local"),
    ("starting", "pause"): ("paused", "pause flag, or a pause remembered (rule 8)"),
    # standby: rule 5
    ("standby", "lease_acquired"): ("promoting", "took the free lease (rule 5)"),
    ("standby", "pause"): ("paused", "cluster paused"),
    ("standby", "cordon"): ("cordoned", "operator cordoned this node"),
    ("standby", "mark_failed"): ("failed", "failed mark on the bus"),
    # promoting: takeover sequence (design section 5)
    ("promoting", "takeover_succeeded"): ("primary", "takeover done"),
    ("promoting", "takeover_degraded"): ("primary", "serving, test call failing"),
    ("promoting", "takeover_failed"): ("failed", "rolled back, lease released"),
    ("promoting", "takeover_refused"): (
        "standby",
        "peer still DRBD Primary: rolled back, not failed",
    ),
    ("promoting", "lease_lost"): ("demoting", "fence (rule 3/4)"),
    # primary
    ("primary", "lease_lost"): ("demoting", "fence (rule 3/4)"),
    ("primary", "unhealthy_handover"): ("demoting", "unhealthy, standby ready"),
    ("primary", "switchover"): ("demoting", "switchover to the peer"),
    ("primary", "failback"): ("demoting", "fail back to the preferred node"),
    ("primary", "cordon"): ("demoting", "cordoned, hand over"),
    ("primary", "pause"): ("paused", "cluster paused, services stay"),
    # demoting
    ("demoting", "demoted"): ("standby", "services stopped, lease released"),
    ("demoting", "demote_failed"): ("failed", "fenced, lease left to expire"),
    ("demoting", "lease_lost"): ("demoting", "fence now"),
    # paused: rule 8, no automatic action
    ("paused", "resume_as_primary"): ("primary", "resumed, lease still ours"),
    ("paused", "resume_as_standby"): ("standby", "resumed"),
    ("paused", "lease_lost"): ("paused", "another holder: fence even when paused"),
    # failed and cordoned
    ("failed", "holddown_over"): ("standby", "failed hold-down passed"),
    ("failed", "cleared"): ("standby", "clear-failed"),
    ("failed", "pause"): ("paused", "cluster paused"),
    ("cordoned", "uncordon"): ("standby", "uncordoned"),
    ("cordoned", "pause"): ("paused", "cluster paused"),
}


def next_role(role: Role, event: Event) -> Role:
    try:
        return TRANSITIONS[(role, event)][0]
    except KeyError:
        raise AssertionError(f"no transition for {event} in role {role}") from None


def render_roles_md() -> str:
    """docs/roles.md: the role diagram drawn from TRANSITIONS."""
    lines = [
        "# Roles",
        "",
        "Generated from `bot/ha/table.py` by `python -m bot.ha > docs/roles.md`;",
        "a test checks that this file matches the table. Edges read `event - rule`.",
        "Only `promoting`, `primary` and `demoting` run the primary's services, and",
        "only while the lease (or the peer's promise) is valid on the node's own clock.",
        "",
        "```mermaid",
        "stateDiagram-v2",
        "    [*] --> starting",
    ]
    for (role, event), (target, why) in TRANSITIONS.items():
        lines.append(f"    {role} --> {target}: {event} - {why}")
    lines += ["```", "", "| role | event | next role | rule |", "|---|---|---|---|"]
    for (role, event), (target, why) in TRANSITIONS.items():
        lines.append(f"| {role} | {event} | {target} | {why} |")
    unreachable = [
        r for r in ROLES if r != "starting" and r not in {t for t, _ in TRANSITIONS.values()}
    ]
    assert not unreachable, unreachable
    return "\n".join(lines) + "\n"
