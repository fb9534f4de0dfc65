"""The reporter: node record on the bus, health and role events, metrics, status, API view.

It only reads the other parts; what it writes goes out (bus, metrics, events).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from bot import __version__
from bot.actions.pstn import heartbeat_wanted
from bot.actions.takeover import StepTiming, TakeoverReport
from bot.agent.events import Events
from bot.agent.fencer import Fencer
from bot.agent.lease import LeaseKeeper
from bot.agent.observer import Observer
from bot.bus import Bus, BusError, NodeRecord
from bot.bus.status import build_status
from bot.config import Config
from bot.eventhub import EventHub
from bot.ha import HaState, Observation, acts_as_primary
from bot.health import Verdict
from bot.healthmon import HealthMonitor
from bot.logsetup import LOG_CONTEXT
from bot.metrics import Metrics
from bot.sdnotify import SdNotifier
from rseries.driver import RSeriesLink

log = logging.getLogger(__name__)

RECORD_INTERVAL = 1.0
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def reason_changed(previous: str, reason: str) -> bool:
    """A decision is logged when it changes, not when only its countdown does: "waiting
    2.8 s more" each cycle would bury the log lines an operator needs."""
    return _NUMBER.sub("#", previous) != _NUMBER.sub("#", reason)


class TakeoverLog:
    """Step timings and the last takeover, as metrics, events and the status's record."""

    def __init__(self, metrics: Metrics, events: Events) -> None:
        self.metrics = metrics
        self.events = events
        self.last: dict[str, Any] | None = None

    def on_step(self, timing: StepTiming) -> None:
        self.metrics.observe_step(timing.name, timing.duration)
        self.events(
            "step",
            f"{timing.name} {'ok' if timing.ok else 'FAILED'} in {timing.duration * 1000:.0f} ms"
            + (f": {timing.detail}" if timing.detail else ""),
            step=timing.name,
            ok=timing.ok,
            duration=timing.duration,
        )

    def record(self, report: TakeoverReport, epoch: int) -> None:
        self.metrics.takeovers.labels(outcome=report.outcome).inc()
        self.metrics.takeover_duration.observe(report.duration)
        steps = [
            {"name": s.name, "duration": round(s.duration, 4), "ok": s.ok, "detail": s.detail}
            for s in report.steps
        ]
        self.last = {
            "outcome": report.outcome,
            "epoch": epoch,
            "duration": round(report.duration, 4),
            "reason": report.reason,
            "steps": steps,
            "at": time.time(),
        }
        kind = {
            "succeeded": "failover_completed",
            "degraded": "failover_degraded",
        }.get(report.outcome, "failover_failed")
        self.events(
            kind,
            f"takeover {report.outcome} in {report.duration:.2f} s"
            + (f": {report.reason}" if report.reason else ""),
            alert=True,
            steps=steps,
            epoch=epoch,
        )


class Reporter:
    def __init__(
        self,
        cfg: Config,
        *,
        bus: Bus,
        metrics: Metrics,
        events: Events,
        hub: EventHub,
        health: HealthMonitor,
        observer: Observer,
        keeper: LeaseKeeper,
        fencer: Fencer,
        takeovers: TakeoverLog,
        link: RSeriesLink | None,
        sd: SdNotifier,
        clock: Callable[[], float],
    ) -> None:
        self.cfg = cfg
        self.me = cfg.node.id
        self.bus = bus
        self.metrics = metrics
        self.events = events
        self.hub = hub
        self.monitor = health
        self.observer = observer
        self.keeper = keeper
        self.fencer = fencer
        self.takeovers = takeovers
        self.link = link
        self.sd = sd
        self.clock = clock
        self._redis_ok: bool | None = None
        self._alerts_seen: set[str] = set()
        self._was_healthy = True
        self._stuck_reported = False
        self._last_record = 0.0
        self._published_role: str | None = None  # the role in the last record sent
        self._published_local: object = None  # the probe of the services it showed
        self._shown_role = "starting"

    # ------------------------------------------------------------------ changes -> events

    def observed(self, ha: HaState, obs: Observation) -> None:
        """Once per cycle, after the observation: say what changed."""
        self._redis(self.observer.redis_ok)
        self._health(self.observer.verdict)
        self._stuck_standby(ha, obs)

    def _redis(self, ok: bool) -> None:
        # None until the first answer: Redis answering at start is no news ("again"
        # only after a loss); not answering at start is.
        if ok != self._redis_ok:
            if ok and self._redis_ok is False:
                self.events("redis_back", "Redis answers again", alert=True)
            elif not ok:
                self.events("redis_lost", "Redis does not answer", alert=True)
        self._redis_ok = ok
        self.metrics.redis_up.set(1 if ok else 0)

    def _health(self, verdict: Verdict) -> None:
        """Alerts and health changes become events (and webhooks), once per change."""
        alerts = {re.sub(r"[0-9.]+ s\b", "", a): a for a in verdict.alerts}
        for key, text in alerts.items():
            if key not in self._alerts_seen:
                kind = "span_alarm" if "span" in text else "health_alert"
                self.events(kind, text, alert=True)
        self._alerts_seen = set(alerts)
        if verdict.healthy != self._was_healthy:
            if verdict.healthy:
                self.events("health_recovered", "healthy again", alert=True)
            else:
                self.events("health_degraded", "; ".join(verdict.reasons), alert=True)
            self._was_healthy = verdict.healthy

    def _stuck_standby(self, ha: HaState, obs: Observation) -> None:
        """A standby that sees no primary but cannot take over says so, once per episode."""
        lease = obs.lease
        stuck = (
            ha.role == "standby"
            and obs.lease_read_ok
            and lease is not None
            and lease.free
            and not obs.ready
        )
        if stuck and not self._stuck_reported:
            why = ", ".join(obs.ready_reasons) or "no reason given"
            self.events(
                "standby_not_ready", f"no primary and this node is not ready: {why}", alert=True
            )
        self._stuck_reported = stuck

    def role(self, ha: HaState) -> str:
        """The role this node reports: ``fencing`` while a self-fence runs or is
        incomplete (never standby before every fence step succeeded), else the HA role."""
        return "fencing" if self.fencer.busy or self.fencer.incomplete else ha.role

    def track_role(self, ha: HaState, old: str, reason: str) -> None:
        """After each step: a change of the reported role becomes a log context, a
        metric, the systemd status and an event."""
        role = self.role(ha)
        previous = self._shown_role
        if role == previous:
            return
        self._shown_role = role
        if role == "fencing":
            reason = f"fence incomplete: {self.fencer.failing}" if self.fencer.failing else reason
        LOG_CONTEXT.role = role
        self.metrics.set_role(role)
        self.sd.status(f"{self.me}: {role}")
        self.events("role", f"{previous} -> {role}: {reason}", role=role, previous=previous)

    def health(self) -> tuple[bool, list[str]]:
        """The local health verdict; a node that is fencing is not healthy."""
        verdict = self.monitor.last
        reasons = list(verdict.reasons)
        since = self.fencer.incomplete_since
        if since is not None:
            age = self.fencer.clock() - since
            reasons.append(f"fence incomplete for {age:.1f} s: {self.fencer.failing}")
        elif self.fencer.busy:
            reasons.append("fencing")
        fencing = since is not None or self.fencer.busy
        return verdict.healthy and not fencing, reasons

    # ------------------------------------------------------------------ record and metrics

    async def publish_record(self, ha: HaState) -> None:
        now = time.monotonic()
        role, local = self.role(ha), self.observer.local
        # Every RECORD_INTERVAL, and at once when the role changed or a new probe of the
        # local services came in: the bus must not go on showing "promoting" for a second
        # after the node serves, nor a new primary's services as they were before.
        fresh = role == self._published_role and local is self._published_local
        if fresh and now - self._last_record < RECORD_INTERVAL:
            return
        self._last_record = now
        self._published_role, self._published_local = role, local
        try:
            await self.bus.publish_node_record(self.record(ha))
        except BusError as exc:
            log.debug("record not published: %s", exc)

    def record(self, ha: HaState) -> NodeRecord:
        """This node's record: its live view, stamped with when it was written (wall
        clock, for display) and how it saw the lease then."""
        ready, ready_reasons = self.observer.ready
        healthy, health_reasons = self.health()
        own = self.keeper.own
        read = self.observer.last_lease
        lease = read.lease if read is not None else None
        until = self.keeper.valid_until() if own is not None else None
        return NodeRecord(
            id=self.me,
            role=self.role(ha),
            healthy=healthy,
            health_reasons=health_reasons,
            ready=ready,
            ready_reasons=list(ready_reasons),
            epoch=ha.epoch,
            version=__version__,
            settings_hash=self.cfg.settings_hash(),
            last_seen=time.time(),
            extra=self.extra(ha),
            lease_view={
                "holder": self.me if own is not None else (lease.holder if lease else None),
                "epoch": own.epoch if own is not None else (lease.epoch if lease else None),
                "remaining": None if until is None else round(max(0.0, until - self.clock()), 3),
            },
        )

    def extra(self, ha: HaState) -> dict[str, Any]:
        state = self.link.state if self.link is not None else None
        local = self.observer.local
        return {
            "spans": self.monitor.spans_status(),
            "rseries": None
            if self.link is None
            else {
                "connected": self.link.connected,
                "active": getattr(state, "active", None),
                "mode": getattr(state, "mode", None),
                "host": self.cfg.node.rseries_host,
                "heartbeat": self.cfg.rseries is not None
                and heartbeat_wanted(
                    primary=acts_as_primary(ha, self.clock()),
                    ready=self.observer.ready[0],
                    standby_heartbeat=self.cfg.rseries.standby_heartbeat,
                    paused=ha.role == "paused",
                ),
            },
            "drbd": self.observer.drbd_states,
            "last_takeover": self.takeovers.last,
            "services": {
                "vip": local.vip_present,
                "asterisk": local.asterisk_running,
                "drbd_primary": local.drbd_primary,
            },
            "degraded": ha.degraded,
            "asterisk": self.monitor.asterisk_status(),
        }

    def update_metrics(self, ha: HaState, now: float) -> None:
        m = self.metrics
        own = self.keeper.own
        holds = own is not None and acts_as_primary(ha, now)
        remaining = 0.0
        if own is not None:
            until = self.keeper.valid_until()
            remaining = max(0.0, (until or now) - now)
        # The lease this node holds, also while it fences and keeps the key to the end.
        epoch = own.epoch if own is not None else (ha.epoch or 0)
        m.set_lease(held=holds, epoch=epoch, remaining=remaining)
        m.healthy.set(1 if self.health()[0] else 0)
        m.ready.set(1 if self.observer.ready[0] else 0)
        m.vip_present.set(1 if self.observer.local.vip_present else 0)
        m.paused.set(1 if ha.role == "paused" else 0)
        hashes = {r.settings_hash for r in self.observer.records.values() if r.settings_hash}
        m.config_drift.set(1 if len(hashes) > 1 else 0)
        if self.link is not None:
            m.rseries_up.set(1 if self.link.connected else 0)
            active = getattr(self.link.state, "active", None)
            m.set_rseries_active(active)
            read = self.observer.last_lease
            holder = read.lease if read else None
            holder_host = None
            if holder is not None and not holder.released:
                holder_host = (
                    self.cfg.node.rseries_host
                    if holder.holder == self.me
                    else (
                        None
                        if active is None
                        else ("B" if self.cfg.node.rseries_host == "A" else "A")
                    )
                )
            m.rseries_disagreement.set(1 if holder_host and active and holder_host != active else 0)

    # ------------------------------------------------------------------ status

    def status(self, ha: HaState) -> dict[str, Any]:
        observer = self.observer
        redis_ok = observer.redis_ok
        ids = [self.me, *self.cfg.peer_ids]
        obj: dict[str, Any] = dict(
            build_status(
                cluster=self.cfg.cluster.name,
                node_ids=ids,
                # With Redis down, the last read is all there is: shown, and said to be old.
                lease=observer.last_lease,
                records=dict(observer.records),
                controls=observer.controls if redis_ok else None,
                now_wall=time.time(),
                now_clock=self.clock(),
                stale_after=self.cfg.cluster.lease_ttl + self.cfg.cluster.renew_interval,
                source="redis" if redis_ok else f"node {self.me} (Redis unreachable)",
                redis_ok=redis_ok,
                seen=observer.seen,
                local=self.record(ha),
                problems=[] if redis_ok else ["Redis unreachable"],
            )
        )
        own = self.keeper.own
        if not redis_ok and own is not None:
            obj["holder"], obj["epoch"] = self.me, own.epoch
            until = self.keeper.valid_until()
            obj["lease_remaining_seconds"] = round(max(0.0, (until or 0) - self.clock()), 3)
        since = self.fencer.incomplete_since
        obj["fence"] = (
            None
            if since is None
            else {
                "incomplete_for_seconds": round(self.fencer.clock() - since, 1),
                "failing": self.fencer.failing,
            }
        )
        obj["reported_by"] = self.me
        obj["last_takeover"] = self.takeovers.last
        obj["events"] = list(self.hub.recent)[-50:]
        state = self.link.state if self.link is not None else None
        obj["rseries_active"] = getattr(state, "active", None)
        obj["features"] = {
            name: getattr(self.cfg, name) is not None
            for name in ("rseries", "drbd", "vip", "ari", "test_call")
        }
        return obj


class NodeView:
    """What the API sees of the agent (``bot.api.NodeView``)."""

    def __init__(self, reporter: Reporter, ha_state: Callable[[], HaState]) -> None:
        self._reporter = reporter
        self._ha_state = ha_state
        self.node_id = reporter.me

    def role(self) -> str:
        return self._reporter.role(self._ha_state())

    def health(self) -> tuple[bool, list[str]]:
        return self._reporter.health()

    def status(self) -> dict[str, Any]:
        return self._reporter.status(self._ha_state())

    def subscribe_events(self) -> AsyncIterator[dict[str, Any]]:
        return self._reporter.hub.subscribe()
