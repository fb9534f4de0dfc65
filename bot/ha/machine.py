"""The HA step: (state, observation, now) -> (state, actions, reason). Pure.

Each role has a handler that reads the observation and names at most one event
(see ``bot.ha.table``) with the actions that go with it; ``step`` applies the
table. Handlers return a reason sentence either way, so the caller can log why
the node did, or did not, act.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bot.ha.lease import (
    free_for_me,
    holder_valid_until,
    lease_valid_until,
    pttl_beyond_ttl,
    track_lease,
)
from bot.ha.table import Event, next_role
from bot.ha.types import HOLDER_ROLES, Action, ControlsView, HaState, LeaseView, Observation


@dataclass
class _Decision:
    reason: str
    event: Event | None = None
    actions: list[Action] = field(default_factory=list)
    updates: dict[str, Any] = field(default_factory=dict)


def primary_until(state: HaState) -> float | None:
    """Until when (own clock) this state acts as primary; None if it does not."""
    if not is_holder(state):
        return None
    ends = [t for t in (state.valid_until, state.promise_until) if t is not None]
    return max(ends) if ends else None


def acts_as_primary(state: HaState, now: float) -> bool:
    """The invariant's notion: a holder role and a valid lease or promise on its own clock."""
    until = primary_until(state)
    return until is not None and now < until


def step(state: HaState, obs: Observation, now: float) -> tuple[HaState, list[Action], str]:
    s = state
    pre: list[Action] = []
    if obs.lease_read_ok and obs.lease is not None:
        s = track_lease(s, obs.lease, obs.redis_run_id, now)
    if obs.lease_read_ok:
        s = _track_switchover(s, obs.controls, now)
    if is_holder(s):
        s, pre = _refresh_holder(s, obs)
    pre += _rseries_actions(s, obs, now)
    if obs.lease_read_ok and obs.lease is not None:
        s, pre = _check_pttl(s, obs.lease, pre)
    decision = _HANDLERS[s.role](s, obs, now)
    s = replace(s, **decision.updates) if decision.updates else s
    if decision.event is not None:
        role = next_role(state.role, decision.event)
        if role != s.role:
            s = replace(s, role=role, since=now)
    return s, pre + decision.actions, decision.reason


# --------------------------------------------------------------------------- shared pieces


def is_holder(s: HaState) -> bool:
    """A holder role, or paused from one: the one definition of a holder."""
    return s.role in HOLDER_ROLES or (s.role == "paused" and s.paused_from in HOLDER_ROLES)


def _refresh_holder(s: HaState, obs: Observation) -> tuple[HaState, list[Action]]:
    if s.fencing:
        return s, []  # a fencing node's lease is never extended
    actions: list[Action] = []
    own = obs.own_lease
    epoch = s.epoch
    if own is not None and own.epoch != s.epoch:
        # The renewal task took the key again after it went missing (rule 4).
        epoch = own.epoch
        actions.append(Action.of("record_epoch", epoch=own.epoch))
    # Without an own lease the last validity still bounds how long services may run.
    valid = lease_valid_until(own.sent_at, s.cfg) if own is not None else s.valid_until
    promise = obs.peer.promise_valid_until
    return replace(s, epoch=epoch, valid_until=valid, promise_until=promise), actions


def _lease_lost(s: HaState, obs: Observation, now: float) -> str | None:
    """Rules 3 and 4 from the holder's side: why it must fence now, or None."""
    cfg = s.cfg
    if obs.renew_result == "held_by_other":
        holder = obs.lease.holder if obs.lease and obs.lease.holder else "another node"
        return f"lease taken by {holder}"
    until = holder_valid_until(obs.own_lease, obs.peer.promise_valid_until, cfg)
    if until is None:
        return "lease lost by the renewal task"
    if now >= until - cfg.fence_budget:
        since = now - obs.own_lease.sent_at if obs.own_lease else cfg.lease_ttl
        return f"lease renewal failed for {since:.1f} s and no promise from the peer"
    return None


def _fence(s: HaState, why: str, event: Event = "lease_lost") -> _Decision:
    actions = [] if s.fencing else [Action.of("fence", reason=why), _alert("fenced", why)]
    # valid_until stays: the node counts as primary until the fence is done or the lease
    # ends, whichever is first (rule 3 budgets the fence to finish before then).
    return _Decision(f"fencing: {why}", event, actions, {"fencing": True, "handover_to": None})


def _check_pttl(s: HaState, lease: LeaseView, pre: list[Action]) -> tuple[HaState, list[Action]]:
    """Alert once when the lease key lives longer than lease_ttl, again after it did not."""
    beyond = pttl_beyond_ttl(lease, s.cfg)
    if beyond is not None and not s.pttl_alerted:
        return replace(s, pttl_alerted=True), [*pre, _alert("lease_pttl", beyond)]
    if beyond is None and s.pttl_alerted and lease.pttl is not None:
        return replace(s, pttl_alerted=False), pre
    return s, pre


def _alert(kind: str, text: str) -> Action:
    return Action.of("alert", topic=kind, text=text)


def _pause_wanted(s: HaState, obs: Observation) -> bool:
    if obs.rseries_notification is not None and obs.rseries_notification.cause == "BUTTON":
        return True
    if not obs.lease_read_ok:
        return obs.persisted_paused
    paused = obs.controls.paused
    return paused is True or (paused is None and obs.persisted_paused)


def _pause_actions(obs: Observation) -> list[Action]:
    return [] if obs.persisted_paused else [Action.of("persist_pause", paused=True)]


def _peer_eligible(s: HaState, obs: Observation, *, asked: bool = False) -> tuple[bool, str]:
    """Could the peer serve instead of this node? Its own record's flags are not enough:
    a failed or cordoned node still reports itself healthy and ready. ``asked``: an
    operator's switchover, who may know that the peer's failed test call is fixed."""
    peer = obs.peer
    name = s.cfg.peer or "peer"
    if not peer.reachable:
        return False, f"{name} unreachable"
    if not (peer.healthy and peer.ready):
        return False, f"{name} not healthy and ready"
    if name in obs.controls.cordoned or name in obs.controls.failed:
        return False, f"{name} is cordoned or failed"
    if peer.role in ("failed", "cordoned", "fencing"):
        return False, f"{name} is {peer.role}"
    if name in obs.controls.outdated:
        return False, f"{name} is outdated"
    if peer.test_call_failed and not asked:
        return False, f"{name}'s own last test call failed too"
    return True, f"{name} ready"


def _rseries_actions(s: HaState, obs: Observation, now: float) -> list[Action]:
    note = obs.rseries_notification
    if note is None:
        return []
    mine = note.active == s.cfg.rseries_host
    if note.cause == "POWERON":
        if is_holder(s) and s.role != "paused" and not mine:
            return [Action.of("route_spans"), _alert("rseries", "appliance powered on, re-routing")]
        return [_alert("rseries", f"appliance powered on, host {note.active} active")]
    if note.cause == "BUTTON":
        return [
            Action.of("pause_cluster"),
            _alert("rseries", f"operator pressed the appliance button: host {note.active} active"),
        ]
    if note.cause == "WATCHDOG":
        return [_alert("rseries", f"appliance watchdog made host {note.active} active")]
    if note.cause == "COMMAND" and not mine and s.role == "primary" and acts_as_primary(s, now):
        # Another host sent ROUTE (a stale peer, an operator's console): the spans must
        # follow the lease. The route is checked against the lease again before it is sent.
        return [
            Action.of("route_spans"),
            _alert(
                "rseries",
                f"spans moved to host {note.active} by a ROUTE from there while "
                f"{s.cfg.node_id} holds the lease: routing them back",
            ),
        ]
    return []


def _why_not_acquire(s: HaState, obs: Observation, now: float) -> str | None:
    """Rule 5 in full; None when this node may take the lease now."""
    me = s.cfg.node_id
    lease = obs.lease
    if not obs.lease_read_ok or lease is None:
        return "lease read failed"
    if not obs.healthy:
        return "unhealthy (" + ", ".join(obs.health_reasons or ("no reason",)) + ")"
    if not obs.ready:
        return "not ready (" + ", ".join(obs.ready_reasons or ("no reason",)) + ")"
    if me in obs.controls.outdated:
        return "marked outdated"
    promise = obs.promise_given_until
    if promise is not None and now < promise and lease.released_to != me:
        return f"promised the peer not to take the lease for {promise - now:.1f} s more"
    target = obs.controls.switchover_to
    if target is not None and target != me and switchover_ended(s, obs, now) is None:
        return f"switchover to {target} requested"
    ok, why = free_for_me(s, lease, now)
    return None if ok else why


def _request_key(c: ControlsView) -> str | None:
    if c.switchover_to is None:
        return None
    return c.switchover_id or f"to {c.switchover_to}"


def _track_switchover(s: HaState, controls: ControlsView, now: float) -> HaState:
    """When this node first saw the switchover request in view (its own clock)."""
    key = _request_key(controls)
    if key is None:
        if s.switchover_seen is None and s.switchover_ended is None:
            return s
        return replace(s, switchover_seen=None, switchover_ended=None)
    if s.switchover_seen is None or s.switchover_seen[0] != key:
        return replace(s, switchover_seen=(key, now))
    return s


def switchover_ended(s: HaState, obs: Observation, now: float) -> str | None:
    """Rule 9: why a switchover request naming another node holds this node back no
    more (None: it still does). A request may delay service, never forbid it: it ends
    when its target failed or is out of eligibility, or has not taken the lease within
    ``drain + lease_ttl + handover_budget`` of this node first seeing the request."""
    cfg, c = s.cfg, obs.controls
    target = c.switchover_to
    if target is None or target == cfg.node_id:
        return None
    if target not in cfg.peers:
        return f"{target} is not a node of this cluster"
    if target in c.failed:
        return f"{target} is marked failed"
    if target in c.cordoned:
        return f"{target} is cordoned"
    role = obs.peer.role if obs.peer.node_id == target else None
    if role in ("failed", "cordoned", "fencing"):
        return f"{target} is {role}"
    if obs.lease is not None and obs.lease.holder == target:
        return None  # taken: the target's takeover ends the request, or its lease runs out
    limit = c.switchover_drain + cfg.lease_ttl + cfg.handover_budget
    seen = s.switchover_seen
    if seen is not None and now - seen[1] > limit:
        return f"{target} has not taken the lease within {limit:g} s"
    return None


def _end_switchover(s: HaState, obs: Observation, why: str) -> tuple[list[Action], dict[str, Any]]:
    """Clear the request in view (once per request), saying why it ended."""
    key = _request_key(obs.controls)
    if key is None or s.switchover_ended == key:
        return [], {}
    target = obs.controls.switchover_to
    action = Action.of(
        "clear_switchover", outcome=f"to {target} ended: {why}", request=obs.controls.switchover_id
    )
    return [action], {"switchover_ended": key}


# --------------------------------------------------------------------------- role handlers


def _starting(s: HaState, obs: Observation, now: float) -> _Decision:
    cfg = s.cfg
    paused = _pause_wanted(s, obs)
    if s.adopting:
        own = obs.own_lease
        if own is not None and (own.epoch == s.epoch or s.reclaiming):
            valid = lease_valid_until(own.sent_at, cfg)
            updates: dict[str, Any] = {
                "adopting": False,
                "reclaiming": False,
                "epoch": own.epoch,
                "valid_until": valid,
                "fencing": False,
            }
            if paused:
                updates["paused_from"] = "primary"
                return _Decision(
                    f"paused as primary: adopted own lease epoch {own.epoch}",
                    "pause",
                    _pause_actions(obs),
                    updates,
                )
            return _Decision(f"adopted own lease epoch {own.epoch}", "lease_adopted", [], updates)
        if s.reclaiming and obs.acquire_result == "error":
            return _Decision(
                "paused: taking the free key again failed (Redis error), trying again",
                updates={"adopting": False, "reclaiming": False},
            )
        if s.reclaiming and obs.acquire_result == "busy":
            return _start_standby(s, obs, "another node took the key first")
        if obs.renew_result in ("missing", "held_by_other") or now - s.since > cfg.acquire_timeout:
            got = obs.renew_result or obs.acquire_result or "no answer"
            return _start_standby(s, obs, f"could not renew own lease at start ({got})")
        if s.reclaiming:
            return _Decision("paused: taking the free key again, acquire in flight")
        return _Decision(f"adopting own lease epoch {s.epoch}: renewal in flight")
    if not obs.lease_read_ok or obs.lease is None:
        if paused:
            if obs.local_services.any:
                return _Decision("starting paused: waiting for Redis to check the lease")
            return _Decision(
                "paused at start (remembered)", "pause", [], {"paused_from": "standby"}
            )
        return _start_standby(s, obs, "lease read failed at start")
    lease = obs.lease
    if lease.holder == cfg.node_id:
        if lease.epoch != obs.persisted_epoch:
            why = f"lease names this node with epoch {lease.epoch}, state has {obs.persisted_epoch}"
            return _start_standby(s, obs, why)
        if not obs.local_services.all:
            return _start_standby(s, obs, "lease names this node but its services are not up")
        return _Decision(
            f"adopting own lease epoch {lease.epoch}",
            None,
            [Action.of("adopt", epoch=lease.epoch)],
            {"adopting": True, "epoch": lease.epoch},
        )
    if paused and lease.free and obs.persisted_epoch is not None and obs.local_services.all:
        # A planned restart (pause, restart, resume) that outlasted the lease: this node
        # held epoch N when it stopped and its services agree, so nothing changed hands.
        # It takes the free key again with a new, higher epoch instead of fencing.
        return _Decision(
            f"paused: lease key expired during a planned restart (held epoch "
            f"{obs.persisted_epoch}), taking it again",
            None,
            [Action.of("acquire", fence_peer=False)],
            {"adopting": True, "reclaiming": True, "epoch": None},
        )
    holder = lease.holder or "nobody"
    if paused and not obs.local_services.any:
        return _Decision("paused at start", "pause", [], {"paused_from": "standby"})
    return _start_standby(s, obs, f"lease held by {holder}")


def _start_standby(s: HaState, obs: Observation, why: str) -> _Decision:
    actions = [Action.of("fence", reason=why)] if obs.local_services.any else []
    return _Decision(
        f"standby: {why}" + (", fencing local services" if actions else ""),
        "start_as_standby",
        actions,
        {"adopting": False, "reclaiming": False, "epoch": None, "valid_until": None},
    )


def _standby(s: HaState, obs: Observation, now: float) -> _Decision:
    cfg, me = s.cfg, s.cfg.node_id
    if obs.own_lease is not None and s.acquiring_since is None:
        # A late renewal answer after a release or fence; the key is not ours to use.
        return _Decision(
            "standby: ignoring a lease this node did not ask for", None, [Action.of("drop_lease")]
        )
    if obs.own_lease is not None:
        own = obs.own_lease
        valid = lease_valid_until(own.sent_at, cfg)
        if now < valid - cfg.fence_budget:
            updates: dict[str, Any] = {
                "epoch": own.epoch,
                "valid_until": valid,
                "promise_until": None,
                "acquiring_since": None,
                "fencing": False,
                "degraded": False,
            }
            if s.acquiring_released and not s.acquiring_planned:
                # Only a health failover arms the hold-down: after a planned hand-over
                # an unhealthy node must still hand back to a healthy peer (rule 9).
                updates["holddown_until"] = now + cfg.failover_holddown
            peer_ok, _ = _peer_eligible(s, obs)
            return _Decision(
                f"promoting: took the lease, epoch {own.epoch}",
                "lease_acquired",
                [
                    Action.of("record_epoch", epoch=own.epoch),
                    Action.of("promote", epoch=own.epoch, only_node=not peer_ok),
                ],
                updates,
            )
        return _Decision(
            "standby: the lease came back too late to use, releasing it",
            None,
            [Action.of("release", to=None)],
            {"acquiring_since": None},
        )
    if _pause_wanted(s, obs):
        return _Decision("paused", "pause", _pause_actions(obs), {"paused_from": "standby"})
    if obs.lease_read_ok and me in obs.controls.cordoned:
        return _Decision("cordoned by an operator", "cordon")
    if obs.lease_read_ok and me in obs.controls.failed:
        return _Decision(
            "failed mark on the bus",
            "mark_failed",
            [],
            {"failed_until": now + cfg.failed_holddown, "failed_seen_on_bus": True},
        )
    if s.acquiring_since is not None:
        if obs.acquire_result in ("busy", "error"):
            return _Decision(
                f"standby: acquire answered {obs.acquire_result}", updates={"acquiring_since": None}
            )
        if now - s.acquiring_since > cfg.acquire_timeout:
            return _Decision("standby: acquire unanswered", updates={"acquiring_since": None})
        return _Decision("standby: acquire in flight")
    ended = switchover_ended(s, obs, now) if obs.lease_read_ok else None
    clear, cleared = _end_switchover(s, obs, ended) if ended is not None else ([], {})
    why_not = _why_not_acquire(s, obs, now)
    if why_not is not None:
        return _Decision(f"standby: {why_not}", None, clear, cleared)
    lease = obs.lease
    assert lease is not None
    released = lease.released_to == me
    return _Decision(
        "acquiring the lease (" + ("released to this node" if released else "free") + ")",
        None,
        [*clear, Action.of("acquire", fence_peer=not released)],
        {
            **cleared,
            "acquiring_since": now,
            "acquiring_released": released,
            "acquiring_planned": released and lease.released_planned,
        },
    )


def _promoting(s: HaState, obs: Observation, now: float) -> _Decision:
    cfg = s.cfg
    lost = _lease_lost(s, obs, now)
    if lost:
        return _fence(s, lost)
    result = obs.takeover_result
    if result == "succeeded":
        return _Decision(f"primary: takeover done, epoch {s.epoch}", "takeover_succeeded")
    if result == "degraded":
        return _Decision(
            f"primary (degraded): takeover done but the test call fails, epoch {s.epoch}",
            "takeover_degraded",
            [_alert("degraded", "takeover done but the test call fails")],
            {"degraded": True},
        )
    # A switchover to this node ends with its takeover's failure (rule 9).
    asked = obs.lease_read_ok and obs.controls.switchover_to == cfg.node_id
    if result == "refused":
        # The peer's DRBD stayed Primary (it has not fenced): this node did nothing wrong,
        # so it is not marked failed; it waits a lease time before it tries again.
        why = "takeover refused: the peer's DRBD is still Primary; rolled back, lease released"
        ended, cleared = _end_switchover(s, obs, f"{cfg.node_id} refused") if asked else ([], {})
        return _Decision(
            f"standby: {why}",
            "takeover_refused",
            [
                *ended,
                Action.of("release", to=None),
                _alert(
                    "takeover_refused",
                    f"{why}; the spans may be routed to this node while no service runs here",
                ),
            ],
            {
                **cleared,
                "epoch": None,
                "valid_until": None,
                "promise_until": None,
                "wait_until": now + cfg.lease_ttl + cfg.drift_margin,
            },
        )
    if result == "failed":
        why = f"{cfg.node_id}'s takeover failed"
        ended, cleared = _end_switchover(s, obs, why) if asked else ([], {})
        return _Decision(
            f"failed: takeover failed, not eligible for {cfg.failed_holddown:.0f} s",
            "takeover_failed",
            [
                *ended,
                Action.of("release", to=None),
                Action.of("set_failed", seconds=cfg.failed_holddown),
                _alert("takeover_failed", "takeover failed and was rolled back"),
            ],
            {
                **cleared,
                "failed_until": now + cfg.failed_holddown,
                "failed_seen_on_bus": False,
                "epoch": None,
                "valid_until": None,
                "promise_until": None,
            },
        )
    return _Decision(f"promoting: takeover running, epoch {s.epoch}")


def _primary(s: HaState, obs: Observation, now: float) -> _Decision:
    cfg, me = s.cfg, s.cfg.node_id
    lost = _lease_lost(s, obs, now)
    if lost:
        return _fence(s, lost)
    if _pause_wanted(s, obs):
        return _Decision(
            "paused as primary: services stay",
            "pause",
            _pause_actions(obs),
            {"paused_from": "primary"},
        )
    peer_ok, peer_why = _peer_eligible(s, obs)
    peer = cfg.peer
    controls = obs.controls if obs.lease_read_ok else None
    asked_ok, asked_why = _peer_eligible(s, obs, asked=True)
    if controls is not None and me in controls.cordoned:
        if peer_ok:
            return _handover(s, "cordon", f"cordoned: handing over to {peer}", peer, 0.0)
        return _alert_once(s, "cordon", f"primary: cordoned but {peer_why}")
    if controls is not None and controls.switchover_to is not None:
        target = controls.switchover_to
        if target == me:
            return _Decision(
                "primary: switchover target is this node",
                None,
                [Action.of("clear_switchover", outcome="done", request=controls.switchover_id)],
            )
        if target == peer and asked_ok:
            return _handover(
                s, "switchover", f"switchover to {target}", target, controls.switchover_drain
            )
        why = asked_why if target == peer else f"{target} is not a node of this cluster"
        return _Decision(
            f"primary: switchover to {target} refused: {why}",
            None,
            [
                Action.of(
                    "clear_switchover",
                    outcome=f"refused: {why}",
                    request=controls.switchover_id,
                )
            ],
        )
    if not obs.healthy:
        return _unhealthy(s, obs, now, peer_ok, peer_why)
    updates: dict[str, Any] = {
        "unhealthy_since": None,
        "restarts": 0,
        "restarting": False,
        "alerted": frozenset(),
    }
    return _failback(s, obs, now, updates)


def _unhealthy(s: HaState, obs: Observation, now: float, peer_ok: bool, peer_why: str) -> _Decision:
    cfg = s.cfg
    since = s.unhealthy_since if s.unhealthy_since is not None else now
    what = ", ".join(obs.health_reasons or ("unhealthy",))
    base = {"unhealthy_since": since}
    in_holddown = s.holddown_until is not None and now < s.holddown_until
    if peer_ok and not in_holddown:
        d = _handover(s, "unhealthy_handover", f"unhealthy ({what})", cfg.peer, 0.0)
        d.updates.update(base)
        return d
    why_stay = (
        f"hold-down for {s.holddown_until - now:.0f} s more"
        if in_holddown and s.holddown_until is not None
        else peer_why
    )
    restarting = s.restarting and obs.restart_result is None
    due = s.last_restart_at is None or now - s.last_restart_at >= cfg.boot_timeout
    if not restarting and due and s.restarts < cfg.restart_attempts:
        attempt = s.restarts + 1
        return _Decision(
            f"primary unhealthy ({what}), {why_stay}: restarting Asterisk "
            f"({attempt} of {cfg.restart_attempts})",
            None,
            [
                Action.of("restart_asterisk", attempt=attempt),
                _alert("unhealthy", f"{what}: restarting Asterisk"),
            ],
            {**base, "restarts": attempt, "restarting": True, "last_restart_at": now},
        )
    d = _alert_once(
        s, "unhealthy_stuck", f"primary unhealthy ({what}) for {now - since:.1f} s, {why_stay}"
    )
    d.updates.update(base, restarting=restarting)
    return d


def _alert_once(s: HaState, key: str, text: str) -> _Decision:
    if key in s.alerted:
        return _Decision(text)
    return _Decision(text, None, [_alert(key, text)], {"alerted": s.alerted | {key}})


def _handover(s: HaState, event: Event, why: str, to: str | None, drain: float) -> _Decision:
    return _Decision(
        f"demoting: {why}, handing over to {to}",
        event,
        [Action.of("demote", drain=drain, to=to)],
        {"handover_to": to, "handover_planned": event != "unhealthy_handover"},
    )


def _failback(s: HaState, obs: Observation, now: float, updates: dict[str, Any]) -> _Decision:
    cfg = s.cfg
    pref = cfg.preferred_primary
    if pref is None or pref == cfg.node_id or pref != cfg.peer:
        return _Decision(f"primary, epoch {s.epoch}", updates=updates)
    peer_ok, _ = _peer_eligible(s, obs)
    if not peer_ok:
        updates["peer_good_since"] = None
        return _Decision(f"primary, epoch {s.epoch}", updates=updates)
    good_since = s.peer_good_since if s.peer_good_since is not None else now
    updates["peer_good_since"] = good_since
    if now - good_since < cfg.failback_delay:
        left = cfg.failback_delay - (now - good_since)
        return _Decision(f"primary: failback to {pref} in {left:.0f} s", updates=updates)
    if cfg.failback_idle_only and obs.active_calls != 0:
        calls = "unknown" if obs.active_calls is None else str(obs.active_calls)
        return _Decision(
            f"primary: failback to {pref} waits for no calls ({calls})", updates=updates
        )
    d = _handover(s, "failback", f"failback to preferred {pref}", pref, 0.0)
    d.updates.update(updates)
    return d


def _demoting(s: HaState, obs: Observation, now: float) -> _Decision:
    if not s.fencing:
        lost = _lease_lost(s, obs, now)
        if lost:
            return _fence(s, lost)
    result = obs.demote_result
    done = {
        "epoch": None,
        "valid_until": None,
        "promise_until": None,
        "fencing": False,
        "handover_planned": False,
    }
    if result == "succeeded":
        if s.fencing:
            return _Decision("standby: fenced", "demoted", [Action.of("drop_lease")], done)
        to = s.handover_to
        return _Decision(
            f"standby: demoted, lease released to {to}",
            "demoted",
            [Action.of("release", to=to, planned=s.handover_planned)],
            {**done, "handover_to": None},
        )
    if result == "failed":
        cfg = s.cfg
        return _Decision(
            "failed: demotion failed, fenced and leaving the lease to expire",
            "demote_failed",
            [
                Action.of("fence", reason="demotion failed"),
                Action.of("drop_lease"),
                Action.of("set_failed", seconds=cfg.failed_holddown),
                _alert("demote_failed", "demotion failed"),
            ],
            {**done, "failed_until": now + cfg.failed_holddown, "handover_to": None},
        )
    return _Decision(
        "demoting: " + ("fencing" if s.fencing else f"handing over to {s.handover_to}")
    )


def _paused(s: HaState, obs: Observation, now: float) -> _Decision:
    holder = s.paused_from in HOLDER_ROLES
    if holder and obs.renew_result == "held_by_other":
        d = _fence(s, "lease taken by another node while paused")
        d.updates.update(paused_from="standby", epoch=None, fencing=False)
        d.actions.append(Action.of("drop_lease"))
        return d
    if not (obs.lease_read_ok and obs.controls.paused is False) or _pause_wanted(s, obs):
        return _Decision("paused: no automatic action until resume")
    resume = [Action.of("persist_pause", paused=False)]
    lost = _lease_lost(s, obs, now) if holder else None
    if lost and obs.own_lease is not None and obs.lease is not None and obs.lease.free:
        # The lease ran out while paused (Redis gone) and the key is free: the renewal
        # task takes it again (rule 4) within a renewal interval; resume then, with the
        # services as they are, rather than fence them now.
        return _Decision("paused: resume waits for the free key to be taken again")
    if holder and lost is None:
        return _Decision(
            f"resumed as primary, epoch {s.epoch}",
            "resume_as_primary",
            resume,
            {"paused_from": None},
        )
    if holder or obs.local_services.any:
        resume += [
            Action.of("fence", reason="resumed without a valid lease"),
            Action.of("drop_lease"),
        ]
    return _Decision(
        "resumed as standby",
        "resume_as_standby",
        resume,
        {"paused_from": None, "epoch": None, "valid_until": None, "promise_until": None},
    )


def _failed(s: HaState, obs: Observation, now: float) -> _Decision:
    me = s.cfg.node_id
    seen = s.failed_seen_on_bus or (obs.lease_read_ok and me in obs.controls.failed)
    if _pause_wanted(s, obs):
        return _Decision("paused", "pause", _pause_actions(obs), {"paused_from": "failed"})
    until = s.failed_until if s.failed_until is not None else now
    if now >= until:
        return _Decision("standby: failed hold-down over", "holddown_over", [], _failed_done())
    if seen and obs.lease_read_ok and me not in obs.controls.failed:
        return _Decision("standby: failed mark cleared", "cleared", [], _failed_done())
    return _Decision(
        f"failed: eligible again in {until - now:.0f} s", updates={"failed_seen_on_bus": seen}
    )


def _failed_done() -> dict[str, Any]:
    return {"failed_until": None, "failed_seen_on_bus": False}


def _cordoned(s: HaState, obs: Observation, now: float) -> _Decision:
    if _pause_wanted(s, obs):
        return _Decision("paused", "pause", _pause_actions(obs), {"paused_from": "cordoned"})
    if obs.lease_read_ok and s.cfg.node_id not in obs.controls.cordoned:
        return _Decision("standby: uncordoned", "uncordon")
    return _Decision("cordoned: not eligible")


_HANDLERS: dict[str, Callable[[HaState, Observation, float], _Decision]] = {
    "starting": _starting,
    "standby": _standby,
    "promoting": _promoting,
    "primary": _primary,
    "demoting": _demoting,
    "paused": _paused,
    "failed": _failed,
    "cordoned": _cordoned,
}
