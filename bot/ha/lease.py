"""Lease arithmetic (design section 3, rules 1, 4 and 5), pure."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from bot.ha.types import HaConfig, HaState, LeaseView, OwnLease, RenewOutcome

RenewalDecision = Literal["keep", "fence", "reacquire"]


def lease_valid_until(sent_at: float, cfg: HaConfig) -> float:
    """Rule 1: valid until the *send* time of the last good acquire/renew + ttl - drift margin."""
    return sent_at + cfg.lease_ttl - cfg.drift_margin


def holder_valid_until(
    own_lease: OwnLease | None, promise_valid_until: float | None, cfg: HaConfig
) -> float | None:
    """How long the holder may act: its lease, or the peer's promise if that lasts longer."""
    ends = [lease_valid_until(own_lease.sent_at, cfg)] if own_lease else []
    if promise_valid_until is not None:
        ends.append(promise_valid_until)
    return max(ends) if ends else None


def renewal_decision(
    own_lease: OwnLease | None,
    renew_result: RenewOutcome | None,
    now: float,
    cfg: HaConfig,
    promise_valid_until: float | None = None,
) -> RenewalDecision:
    """What the renewal task does after a renewal attempt (rule 4 and rule 3)."""
    if renew_result == "held_by_other" or own_lease is None:
        return "fence"
    if renew_result == "missing":
        return "reacquire"
    until = holder_valid_until(own_lease, promise_valid_until, cfg)
    if until is None or now >= until - cfg.fence_budget:
        return "fence"
    return "keep"


def track_lease(state: HaState, lease: LeaseView, run_id: str | None, now: float) -> HaState:
    """Update the rule-5 bookkeeping of a non-holder from one successful read.

    The key counts as free only after the expiry the last read predicted. If it
    vanished earlier than it could have expired (send time + PTTL, less the drift
    margin), or Redis's run_id changed, the node waits a whole
    ``lease_ttl + drift_margin`` from now: the holder may still believe in a lease
    that Redis forgot.
    """
    cfg = state.cfg
    long_wait = now + cfg.lease_ttl + cfg.drift_margin
    wait_until = state.wait_until
    predicted, earliest = state.predicted_expiry, state.earliest_expiry
    if run_id is not None and state.run_id is not None and run_id != state.run_id:
        wait_until = max(wait_until or long_wait, long_wait)
    held_by_other = lease.holder not in (None, cfg.node_id)
    released_to_other = lease.released_to not in (None, cfg.node_id)
    if held_by_other or released_to_other:
        predicted = lease.expires_at
        earliest = lease.expires_not_before if lease.expires_not_before is not None else predicted
    elif lease.free:
        if earliest is not None and now < earliest - cfg.drift_margin:
            wait_until = max(wait_until or long_wait, long_wait)
            predicted = earliest = None
        elif predicted is None or now >= predicted:
            predicted = earliest = None
    return replace(
        state,
        predicted_expiry=predicted,
        earliest_expiry=earliest,
        wait_until=wait_until,
        run_id=run_id or state.run_id,
    )


# PTTL is whole milliseconds counted down from at most lease_ttl: anything above is not
# rounding.
PTTL_TOLERANCE = 0.002


def pttl_beyond_ttl(lease: LeaseView, cfg: HaConfig) -> str | None:
    """A lease key that lives longer than ``lease_ttl`` (None: it does not).

    Every acquire and renewal sets ``lease_ttl``; more means Redis's clock stepped back
    (it keeps expiries as wall-clock instants) or a node runs with another lease_ttl.
    Nothing unsafe follows (a standby waits the longer time, the holder counts its own),
    but takeovers are late by the difference: it is alerted."""
    if lease.pttl is None or lease.pttl <= cfg.lease_ttl + PTTL_TOLERANCE:
        return None
    return (
        f"the lease key lives {lease.pttl:.2f} s, more than lease_ttl {cfg.lease_ttl:g} s: "
        "the Redis host's clock stepped back, or a node has another lease_ttl"
    )


def free_for_me(state: HaState, lease: LeaseView, now: float) -> tuple[bool, str]:
    """Rule 5's timing part: may this node take the key now? (and why not)."""
    me = state.cfg.node_id
    if lease.released_to == me:
        return True, f"lease released to {me}"
    if not lease.free:
        holder = lease.holder or f"release to {lease.released_to}"
        return False, f"lease held by {holder}"
    if state.predicted_expiry is not None and now < state.predicted_expiry:
        return False, f"key free {state.predicted_expiry - now:.2f} s before its predicted expiry"
    if state.wait_until is not None and now < state.wait_until:
        return False, f"waiting {state.wait_until - now:.1f} s more (rule 5 long wait)"
    return True, "lease free"


def next_deadline(state: HaState, promise_until: float | None, now: float) -> float | None:
    """The next instant at which rule 5's timing answer can change for this node: the
    key's predicted expiry, the end of a long wait, the end of the promise it gave.

    The loop wakes then rather than at its next periodic cycle, so a standby reads the
    key right after it can have expired (not up to a cycle later)."""
    times = (state.predicted_expiry, state.wait_until, promise_until)
    return min((t for t in times if t is not None and t > now), default=None)


def may_promise(state: HaState) -> bool:
    """May this node promise the peer not to take the lease (answer its heartbeat)?

    Never while it holds, takes or adopts the lease: a promise given while an
    acquire is in flight would let both act as primary.
    """
    return (
        state.role in ("standby", "failed", "cordoned", "paused", "starting")
        and state.acquiring_since is None
        and not state.adopting
        and state.epoch is None
    )
