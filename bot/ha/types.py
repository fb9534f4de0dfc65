"""The values the HA step works on: configuration, one observation, state, actions.

Every time here is a float on the node's own ``CLOCK_BOOTTIME`` as read by the
caller; nothing in this package reads a clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from bot.config import Config

Role = Literal[
    "starting", "standby", "promoting", "primary", "demoting", "paused", "failed", "cordoned"
]
ROLES: tuple[Role, ...] = (
    "starting",
    "standby",
    "promoting",
    "primary",
    "demoting",
    "paused",
    "failed",
    "cordoned",
)
# What a node reports: its HA role, or "fencing" while a self-fence is incomplete (the
# fencer's state, not a role of the step: the node never shows itself standby before).
REPORTED_ROLES: tuple[str, ...] = (*ROLES, "fencing")
# A planned hand-over's demotion beyond its drain (seconds; HaConfig.handover_budget).
HANDOVER_BUDGET = 15.0
# Roles in which a node runs (or is starting or stopping) the primary's services.
HOLDER_ROLES: frozenset[Role] = frozenset({"promoting", "primary", "demoting"})

RenewOutcome = Literal["renewed", "held_by_other", "missing"]
AcquireResult = Literal["acquired", "busy", "error"]
# "refused": DRBD refused the promotion because the peer stayed Primary (not our fault).
TakeoverResult = Literal["succeeded", "failed", "degraded", "refused"]
DemoteResult = Literal["succeeded", "failed"]
RSeriesCause = Literal["POWERON", "BUTTON", "WATCHDOG", "COMMAND"]

ActionKind = Literal[
    "acquire",  # take the free lease (Lua SET NX, epoch rules); args: fence_peer
    "adopt",  # renew the lease this node held before it started (rule 7); args: epoch
    "promote",  # run the takeover sequence; args: epoch
    "demote",  # stop the services in order; args: drain (seconds), to
    "fence",  # fence now, fastest first; stop renewing
    "release",  # give the lease up (after demote); args: to (node or None), planned
    "drop_lease",  # stop renewing without touching the key
    "restart_asterisk",  # args: attempt
    "route_spans",  # R-Series ROUTE to this host
    "alert",  # args: topic, text
    "pause_cluster",  # write the pause flag to the bus
    "persist_pause",  # args: paused (state directory, fsync)
    "set_failed",  # mark this node failed on the bus; args: seconds
    "record_epoch",  # persist the highest epoch seen; args: epoch
    "clear_switchover",  # the switchover request is done or refused; args: outcome
]


@dataclass(frozen=True)
class HaConfig:
    node_id: str
    peers: tuple[str, ...] = ()
    lease_ttl: float = 3.0
    renew_interval: float = 1.0
    drift_margin: float = 0.1
    fence_budget: float = 0.5
    failover_holddown: float = 120.0
    failed_holddown: float = 600.0
    preferred_primary: str | None = None
    failback_delay: float = 300.0
    failback_idle_only: bool = True
    restart_attempts: int = 2
    boot_timeout: float = 60.0
    rseries_host: str | None = None
    # An acquire without an answer for this long is given up (the agent's own timeout is shorter).
    acquire_timeout: float = 2.0
    # A planned hand-over's demotion beyond its drain (Asterisk stop, floating IP down,
    # DRBD demote, release): with drain and lease_ttl it bounds how long a switchover
    # request may wait for its target to take the lease (rule 9).
    handover_budget: float = HANDOVER_BUDGET

    @classmethod
    def from_config(cls, cfg: Config) -> HaConfig:
        c = cfg.cluster
        return cls(
            node_id=cfg.node.id,
            peers=tuple(cfg.peer_ids),
            lease_ttl=c.lease_ttl,
            renew_interval=c.renew_interval,
            drift_margin=c.drift_margin,
            fence_budget=c.fence_budget,
            failover_holddown=c.failover_holddown,
            failed_holddown=c.failed_holddown,
            preferred_primary=c.preferred_primary,
            failback_delay=c.failback_delay,
            failback_idle_only=c.failback_idle_only,
            restart_attempts=cfg.asterisk.restart_attempts,
            boot_timeout=cfg.asterisk.boot_timeout,
            rseries_host=cfg.node.rseries_host,
            # the fence command may run before the acquire (the agent allows it 30 s)
            acquire_timeout=4 * cfg.redis.timeout + (30.0 if c.fence_command else 0.0),
        )

    @property
    def peer(self) -> str | None:
        return self.peers[0] if self.peers else None


@dataclass(frozen=True)
class LeaseView:
    """The leader key as one read saw it.

    ``holder`` is None when the key is free or released; ``released_to`` names the
    node a release hands the lease to. ``expires_at`` is the predicted expiry on the
    reader's clock: reply time + PTTL (None for a free key); ``expires_not_before``
    is send time + PTTL, the earliest the key can expire naturally (None: unknown,
    ``expires_at`` is used, which may mistake reply jitter for an early vanish).
    """

    holder: str | None
    epoch: int | None = None
    expires_at: float | None = None
    released_to: str | None = None
    expires_not_before: float | None = None
    released_planned: bool = False  # the release was a planned hand-over, not health
    pttl: float | None = None  # the key's remaining time to live as Redis said (seconds)

    @property
    def free(self) -> bool:
        return self.holder is None and self.released_to is None


@dataclass(frozen=True)
class OwnLease:
    """The lease this node holds: epoch and send time of the last successful acquire/renew."""

    epoch: int
    sent_at: float


@dataclass(frozen=True)
class PeerView:
    node_id: str | None = None
    role: str | None = None
    healthy: bool = False
    ready: bool = False
    reachable: bool = False
    epoch: int | None = None
    # The peer's own last test call failed, not longer ago than cluster.failed_holddown:
    # a fault both nodes may share (a broken test extension in a common dialplan).
    test_call_failed: bool = False
    # A promise the peer gave us, counted from when we sent the heartbeat (primary side).
    promise_valid_until: float | None = None


@dataclass(frozen=True)
class ControlsView:
    """Operator requests read from the bus.

    ``paused`` is True (paused), False (explicitly resumed) or None (no flag: a fresh
    cluster, or a Redis that lost it; rule 8 keeps a remembered pause then).
    """

    paused: bool | None = None
    cordoned: frozenset[str] = frozenset()
    failed: frozenset[str] = frozenset()  # nodes whose failed mark is on the bus
    switchover_to: str | None = None
    switchover_drain: float = 0.0
    switchover_id: str | None = None  # tells one request from the next
    outdated: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LocalServices:
    """Primary-only services found running here; None: not configured on this node, or
    (named in ``unknown``) configured but its probe could not tell (a status command that
    timed out)."""

    vip: bool | None = None
    asterisk: bool | None = None
    drbd_primary: bool | None = None
    unknown: tuple[str, ...] = ()

    def present(self) -> tuple[bool, ...]:
        return tuple(v for v in (self.vip, self.asterisk, self.drbd_primary) if v is not None)

    @property
    def any(self) -> bool:
        """Anything primary-only running, or possibly running: an unknown counts (fence)."""
        return any(self.present()) or bool(self.unknown)

    @property
    def all(self) -> bool:
        """Everything configured known to run: an unknown never counts (no adoption)."""
        present = self.present()
        return bool(present) and all(present) and not self.unknown


@dataclass(frozen=True)
class RSeriesNotification:
    cause: RSeriesCause
    active: str  # the appliance's active host port, "A" or "B"


@dataclass(frozen=True)
class Observation:
    """One frozen snapshot per cycle; results of earlier actions come back here."""

    lease: LeaseView | None = None
    lease_read_ok: bool = False
    redis_run_id: str | None = None
    own_lease: OwnLease | None = None
    renew_result: RenewOutcome | None = None
    acquire_result: AcquireResult | None = None
    healthy: bool = True
    health_reasons: tuple[str, ...] = ()
    ready: bool = True
    ready_reasons: tuple[str, ...] = ()
    peer: PeerView = PeerView()
    promise_given_until: float | None = None
    controls: ControlsView = ControlsView()
    local_services: LocalServices = LocalServices()
    takeover_result: TakeoverResult | None = None
    demote_result: DemoteResult | None = None
    restart_result: Literal["succeeded", "failed"] | None = None
    rseries_notification: RSeriesNotification | None = None
    active_calls: int | None = None
    started_at: float = 0.0
    persisted_epoch: int | None = None
    persisted_paused: bool = False


def _frozen(d: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    args: Mapping[str, Any] = field(default_factory=_frozen)

    @classmethod
    def of(cls, kind: ActionKind, **args: Any) -> Action:
        return cls(kind, _frozen(args))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        return f"Action({self.kind}{', ' + inner if inner else ''})"


@dataclass(frozen=True)
class HaState:
    """Everything the step remembers between cycles."""

    cfg: HaConfig
    role: Role = "starting"
    since: float = 0.0
    epoch: int | None = None  # the epoch this node holds (holder roles)
    valid_until: float | None = None  # rule 1, from the last send time
    promise_until: float | None = None  # the peer's promise, as the primary counts it
    acquiring_since: float | None = None
    adopting: bool = False
    # A paused node restarted after its key expired takes it again (planned restart).
    reclaiming: bool = False
    # Rule 5 bookkeeping for a non-holder.
    predicted_expiry: float | None = None
    earliest_expiry: float | None = None
    wait_until: float | None = None
    run_id: str | None = None
    # Role before a pause, so a resume knows whether services run here.
    paused_from: Role | None = None
    handover_to: str | None = None
    holddown_until: float | None = None  # no health-triggered hand-over before this
    failed_until: float | None = None
    failed_seen_on_bus: bool = False
    unhealthy_since: float | None = None
    restarts: int = 0
    restarting: bool = False
    last_restart_at: float | None = None
    fencing: bool = False
    acquiring_released: bool = False  # the lease being taken was handed to us
    acquiring_planned: bool = False  # ... by a planned hand-over: no failover hold-down
    handover_planned: bool = False  # this node's hand-over in progress is a planned one
    # The switchover request in view: (its id, when this node first saw it, own clock),
    # and the id of one this node found ended and asked to clear (once per request).
    switchover_seen: tuple[str, float] | None = None
    switchover_ended: str | None = None
    alerted: frozenset[str] = frozenset()
    peer_good_since: float | None = None  # failback: peer healthy and ready since
    degraded: bool = False
    pttl_alerted: bool = False  # a PTTL above lease_ttl was alerted (once per episode)

    @classmethod
    def initial(cls, cfg: HaConfig, started_at: float) -> HaState:
        # Rule 5: a node that has just started waits a whole lease_ttl + drift_margin.
        return cls(
            cfg=cfg,
            since=started_at,
            wait_until=started_at + cfg.lease_ttl + cfg.drift_margin,
        )
