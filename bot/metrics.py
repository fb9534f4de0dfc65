"""Every Prometheus metric of the bot, defined once.

The registry is injected (never the process-global one), so two bots or two
tests in one process do not collide. Label values that alerts and the
dashboard rely on are created up front: a fresh bot exports every family,
and `rate()` over a counter that has never moved still returns 0 rather than
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from bot import __version__
from bot.ha.types import REPORTED_ROLES

if TYPE_CHECKING:
    from bot.config import Config

log = logging.getLogger(__name__)

PREFIX = "failoverbot_"

# The bounded label sets. The names are the public interface of the metrics.
ROLES = REPORTED_ROLES  # every role of the state machine, and "fencing" (bot/ha/types.py)
FAILOVER_REASONS = (
    "host_lost",
    "health",
    "spans",
    "switchover",
    "failback",
    "rseries",
    "manual",
)
TAKEOVER_OUTCOMES = ("succeeded", "failed", "degraded", "aborted", "refused")
TAKEOVER_STEPS = (
    "route",
    "drbd",
    "vip",
    "asterisk_start",
    "fully_booted",
    "test_call",
    "spans",
    "announce",
    "drain",
    "asterisk_stop",
    "vip_down",
    "drbd_down",
    "fence_vip",
    "fence_asterisk",
    "fence_drbd",
)
# The causes the agent names when it fences itself.
SELF_FENCE_REASONS = (
    "lease_expiring",
    "lease_taken",
    "stopped",
    "manual",
    "rollback_failed",
    "demote_failed",
    "other",
)
SPAN_ALARM_KINDS = ("red", "yellow", "blue", "recovering", "loopback", "notopen")
TEST_CALL_RESULTS = ("answered", "busy", "no_answer", "congestion", "failed", "timeout")
RSERIES_HOSTS = ("A", "B")
DRBD_ROLES = ("primary", "secondary", "unknown")
DRBD_DISK_STATES = (
    "Diskless",
    "Attaching",
    "Detaching",
    "Failed",
    "Negotiating",
    "Inconsistent",
    "Outdated",
    "DUnknown",
    "Consistent",
    "UpToDate",
)
WEBHOOK_RESULTS = ("sent", "retried", "failed", "dropped", "coalesced")

# Takeovers take seconds (Asterisk boot dominates); Pings take milliseconds.
_TAKEOVER_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120)
_STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
_PING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2)
_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30)


class Metrics:
    """The bot's metric families, bound to one registry."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        node: str = "",
        cluster: str = "",
        version: str = __version__,
        drbd_resources: Sequence[str] = (),
        spans: Sequence[int] = (),
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.node = node
        self.cluster = cluster
        self.version = version
        r = self.registry
        p = PREFIX

        self.role = Gauge(
            p + "role",
            "1 for this node's current role, 0 for the others.",
            ["node", "role"],
            registry=r,
        )
        self.lease_holder = Gauge(
            p + "lease_holder", "1 while this node holds a valid lease.", ["node"], registry=r
        )
        self.lease_epoch = Gauge(
            p + "lease_epoch", "Epoch (fencing token) of the current lease.", registry=r
        )
        self.lease_remaining = Gauge(
            p + "lease_remaining_seconds",
            "Time left on the lease as this node sees it (0 when not held).",
            registry=r,
        )
        self.failovers = Counter(
            p + "failovers_total", "Changes of primary, by cause.", ["reason"], registry=r
        )
        self.takeovers = Counter(
            p + "takeovers_total", "Promotions of this node, by outcome.", ["outcome"], registry=r
        )
        self.takeover_duration = Histogram(
            p + "takeover_duration_seconds",
            "Time from the start of a promotion to its end.",
            buckets=_TAKEOVER_BUCKETS,
            registry=r,
        )
        self.takeover_step_duration = Histogram(
            p + "takeover_step_duration_seconds",
            "Duration of each promote, demote and fence step.",
            ["step"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.self_fences = Counter(
            p + "self_fences_total",
            "Times this node fenced itself, by cause.",
            ["reason"],
            registry=r,
        )
        self.fence_overruns = Counter(
            p + "fence_overruns_total",
            "Self-fences that completed later than cluster.fence_budget, by cause.",
            ["reason"],
            registry=r,
        )
        self.healthy = Gauge(p + "healthy", "1 while the local health verdict is good.", registry=r)
        self.ready = Gauge(p + "ready", "1 while this node could take over.", registry=r)
        self.ami_up = Gauge(p + "ami_up", "1 while AMI is connected and answers Ping.", registry=r)
        self.ami_ping_rtt = Gauge(
            p + "ami_ping_rtt_seconds", "Round trip of the last AMI Ping.", registry=r
        )
        self.ami_ping = Histogram(
            p + "ami_ping_seconds",
            "Round trips of AMI Pings.",
            buckets=_PING_BUCKETS,
            registry=r,
        )
        self.ami_reconnects = Counter(
            p + "ami_reconnects_total", "AMI connections re-established.", registry=r
        )
        self.fully_booted = Gauge(
            p + "asterisk_fully_booted", "1 once Asterisk reported FullyBooted.", registry=r
        )
        self.active_channels = Gauge(
            p + "active_channels", "Channels up on the local Asterisk.", registry=r
        )
        self.span_alarm = Gauge(
            p + "span_alarm", "1 while that alarm is on on that span.", ["span", "kind"], registry=r
        )
        self.test_calls = Counter(
            p + "test_calls_total", "Test calls, by result.", ["result"], registry=r
        )
        self.test_call_setup = Histogram(
            p + "test_call_setup_seconds",
            "Time from Originate to answer of test calls.",
            buckets=_CALL_BUCKETS,
            registry=r,
        )
        self.redis_up = Gauge(p + "redis_up", "1 while the cluster bus answers.", registry=r)
        self.redis_rtt = Gauge(
            p + "redis_rtt_seconds", "Round trip of the last lease command.", registry=r
        )
        self.peer_up = Gauge(p + "peer_up", "1 while the peer bot answers heartbeats.", registry=r)
        self.rseries_up = Gauge(
            p + "rseries_up", "1 while the R-Series serial link answers.", registry=r
        )
        self.rseries_active = Gauge(
            p + "rseries_active_host",
            "1 for the host the R-Series routes the spans to.",
            ["host"],
            registry=r,
        )
        self.rseries_disagreement = Gauge(
            p + "rseries_lease_disagreement",
            "1 while the spans are not routed to the lease holder.",
            registry=r,
        )
        self.drbd_role = Gauge(
            p + "drbd_role", "Local DRBD role (state set).", ["resource", "role"], registry=r
        )
        self.drbd_disk_state = Gauge(
            p + "drbd_disk_state",
            "Local DRBD disk state (state set).",
            ["resource", "state"],
            registry=r,
        )
        self.vip_present = Gauge(
            p + "vip_present", "1 while the floating IP is on this node.", registry=r
        )
        self.webhooks = Counter(
            p + "webhooks_total", "Webhook deliveries, by result.", ["result"], registry=r
        )
        self.paused = Gauge(p + "paused", "1 while the cluster is in maintenance mode.", registry=r)
        self.config_drift = Gauge(
            p + "config_drift",
            "1 while this node's configuration differs from its peer's where it must agree.",
            registry=r,
        )
        self.build_info = Gauge(
            p + "build_info",
            "Always 1; the labels say which bot this is.",
            ["version", "node", "cluster"],
            registry=r,
        )
        self._precreate(drbd_resources, spans)

    @classmethod
    def for_config(
        cls,
        config: Config,
        registry: CollectorRegistry | None = None,
        *,
        version: str = __version__,
    ) -> Metrics:
        """Metrics labelled and pre-created for one node's configuration."""
        return cls(
            registry,
            node=config.node.id,
            cluster=config.cluster.name,
            version=version,
            drbd_resources=list(config.drbd.resources) if config.drbd else [],
            spans=list(config.spans.critical),
        )

    def _precreate(self, drbd_resources: Sequence[str], spans: Sequence[int]) -> None:
        self.build_info.labels(version=self.version, node=self.node, cluster=self.cluster).set(1)
        self.set_role("starting")
        self.lease_holder.labels(node=self.node).set(0)
        for reason in FAILOVER_REASONS:
            self.failovers.labels(reason=reason)
        for outcome in TAKEOVER_OUTCOMES:
            self.takeovers.labels(outcome=outcome)
        for step in TAKEOVER_STEPS:
            self.takeover_step_duration.labels(step=step)
        for reason in SELF_FENCE_REASONS:
            self.self_fences.labels(reason=reason)
            self.fence_overruns.labels(reason=reason)
        for result in TEST_CALL_RESULTS:
            self.test_calls.labels(result=result)
        for result in WEBHOOK_RESULTS:
            self.webhooks.labels(result=result)
        self.set_rseries_active(None)
        self.set_span_alarms({span: None for span in spans})
        for resource in drbd_resources:
            self.set_drbd(resource, role="unknown", disk_state="DUnknown")

    # -- helpers ------------------------------------------------------------

    def set_role(self, role: str) -> None:
        """Export ``role`` as 1 and every other role as 0."""
        if role not in ROLES:
            log.warning("metrics: unknown role %r not exported", role)
            return
        for name in ROLES:
            self.role.labels(node=self.node, role=name).set(1 if name == role else 0)

    def set_span_alarms(self, alarms: Mapping[int, str | Collection[str] | None]) -> None:
        """Set every kind of every given span: 1 for the alarms that are on.

        A value is the span's alarm kind, several kinds, or None for no alarm.
        Spans not given keep their values.
        """
        for span, value in alarms.items():
            if value is None:
                on: set[str] = set()
            elif isinstance(value, str):
                on = {value.lower()}
            else:
                on = {v.lower() for v in value}
            unknown = on.difference(SPAN_ALARM_KINDS)
            if unknown:
                log.warning("metrics: span %s: unknown alarm kinds %s", span, sorted(unknown))
            for kind in SPAN_ALARM_KINDS:
                self.span_alarm.labels(span=str(span), kind=kind).set(1 if kind in on else 0)

    def set_state_set(
        self, gauge: Gauge, label: str, states: Iterable[str], current: str, **labels: str
    ) -> None:
        """Export a state set: ``label=current`` is 1, every other state 0.

        A ``current`` outside ``states`` is exported too (DRBD may grow new
        states); the known ones then read 0.
        """
        known = list(states)
        if current not in known:
            known.append(current)
        for state in known:
            gauge.labels(**labels, **{label: state}).set(1 if state == current else 0)

    def set_drbd(
        self, resource: str, *, role: str | None = None, disk_state: str | None = None
    ) -> None:
        """Export the local role and/or disk state of one DRBD resource."""
        if role is not None:
            role = role.lower()
            if role not in DRBD_ROLES:
                role = "unknown"
            self.set_state_set(self.drbd_role, "role", DRBD_ROLES, role, resource=resource)
        if disk_state is not None:
            canon = {s.lower(): s for s in DRBD_DISK_STATES}.get(disk_state.lower())
            if canon is None:
                log.warning("metrics: DRBD %s: unknown disk state %r", resource, disk_state)
                canon = "DUnknown"
            self.set_state_set(
                self.drbd_disk_state, "state", DRBD_DISK_STATES, canon, resource=resource
            )

    def set_rseries_active(self, host: str | None) -> None:
        """Export the host the appliance routes to (None: unknown, all 0)."""
        for name in RSERIES_HOSTS:
            self.rseries_active.labels(host=name).set(1 if name == host else 0)

    def set_lease(self, *, held: bool, epoch: int, remaining: float) -> None:
        """Export this node's view of the lease."""
        self.lease_holder.labels(node=self.node).set(1 if held else 0)
        self.lease_epoch.set(epoch)
        self.lease_remaining.set(max(0.0, remaining) if held else 0.0)

    def observe_ami_ping(self, rtt: float) -> None:
        """Record one answered AMI Ping (both the last value and the distribution)."""
        self.ami_ping_rtt.set(rtt)
        self.ami_ping.observe(rtt)

    def observe_step(self, step: str, seconds: float) -> None:
        """Record one takeover, demote or fence step."""
        if step not in TAKEOVER_STEPS:
            log.warning("metrics: unknown takeover step %r not exported", step)
            return
        self.takeover_step_duration.labels(step=step).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
