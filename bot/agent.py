"""The agent: wires the parts together, owns every task, runs the HA loop.

Decisions are made by ``bot.ha.step`` on one frozen ``Observation`` per cycle;
this module only gathers observations and carries out actions. Two duties are
kept out of the cycle so that nothing can delay them (design §3 rule 2): the
lease renewal task, which also fences the node when the lease is about to run
out, and the peer heartbeat task, which collects the standby's promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from ami.ari import AriClient
from ami.client import AmiClient
from bot import __version__
from bot.actions.asterisk import AsteriskService
from bot.actions.drbd import Drbd
from bot.actions.pstn import Pstn, heartbeat_wanted
from bot.actions.vip import Vip
from bot.api import create_app, start_api
from bot.boottime import boottime
from bot.bus import Bus, BusError, LeaseRead, NodeRecord
from bot.bus.status import build_status
from bot.config import Config
from bot.eventhub import EventHub
from bot.graceful import hand_over_before_stop
from bot.ha import (
    Action,
    HaConfig,
    HaState,
    LeaseView,
    LocalServices,
    Observation,
    OwnLease,
    PeerView,
    RSeriesNotification,
    acts_as_primary,
    holder_valid_until,
    may_promise,
    step,
)
from bot.ha import Controls as HaControls
from bot.healthmon import HealthMonitor
from bot.leasewake import next_wakeup
from bot.logsetup import LOG_CONTEXT
from bot.metrics import Metrics
from bot.notify import Notifier
from bot.peer import PeerClient, PeerServer
from bot.runner import run_command
from bot.sdnotify import SdNotifier
from bot.state import DataMarks, StateDir
from bot.takeover import LocalServices as FoundServices
from bot.takeover import StepTiming, Takeover, TakeoverReport
from rseries.driver import RSeriesLink

log = logging.getLogger(__name__)

CYCLE_INTERVAL = 0.2  # the loop also wakes on every pushed change
RECORD_INTERVAL = 1.0
PROBE_INTERVAL = 1.0  # local services and readiness (commands), also after every action


class Agent:
    def __init__(
        self,
        cfg: Config,
        *,
        clock: Callable[[], float] = boottime,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.cfg = cfg
        self.me = cfg.node.id
        self.peer_id = cfg.peer_ids[0] if cfg.peer_ids else None
        self.clock = clock
        self.started_at = clock()
        self.ha_cfg = HaConfig.from_config(cfg)
        self.ha = HaState.initial(self.ha_cfg, self.started_at)
        self.metrics = Metrics.for_config(cfg, registry=registry or CollectorRegistry())
        self.state_dir = StateDir(cfg.node.state_dir)
        if self.state_dir.load_error is not None:
            log.error(
                "state directory: %s (kept the highest epoch found)", self.state_dir.load_error
            )
        self.bus = Bus.from_config(cfg)
        self.hub = EventHub()
        self.notify = Notifier(
            list(cfg.notify.webhooks),
            node_id=self.me,
            cluster=cfg.cluster.name,
            timeout=cfg.notify.timeout,
            max_attempts=cfg.notify.max_attempts,
            coalesce_window=cfg.notify.coalesce_window,
            on_result=lambda r: self.metrics.webhooks.labels(result=r).inc(),
        )
        secret = cfg.ami.secret_file.reveal() if cfg.ami.secret_file else ""
        self.ami = AmiClient.from_config(cfg.ami) if secret else None
        self.link = (
            RSeriesLink(
                cfg.rseries.port,
                baudrate=cfg.rseries.baudrate,
                command_timeout=cfg.rseries.command_timeout,
            )
            if cfg.rseries
            else None
        )
        host = cfg.node.rseries_host
        self.pstn = (
            Pstn(cfg.rseries, host, self.link) if cfg.rseries and self.link and host else None
        )
        self.outdated_on_bus = False
        self.drbd = (
            Drbd(
                cfg.drbd,
                outdated=lambda: self.outdated_on_bus,
                marks=DataMarks(cfg.node.state_dir),
            )
            if cfg.drbd
            else None
        )
        self.vip = Vip(cfg.vip) if cfg.vip else None
        self.asterisk = AsteriskService(cfg.asterisk)
        self.ari = AriClient.from_config(cfg.ari) if cfg.ari is not None else None
        self.health = HealthMonitor(cfg, self.ami, self.metrics, ari=self.ari, clock=time.monotonic)
        self.takeover = Takeover(
            cfg,
            drbd=self.drbd,
            vip=self.vip,
            asterisk=self.asterisk,
            pstn=self.pstn,
            ami=self.ami,
            lease_valid=self.lease_valid,
            on_step=self._on_step,
            spans_up=self.health.spans_up,
        )
        self.sd = SdNotifier()
        # Lease as the renewal task knows it; the cycle reads it, the tasks write it.
        self.own: OwnLease | None = None
        self.promise_until: float | None = None  # the peer's promise, our clock
        self.peer_reachable = False
        self._lease_changed = asyncio.Event()
        self._renew_tick = asyncio.Event()  # set at each renewal: the heartbeat's cue
        self._ready_sent = False
        self._wake = asyncio.Event()
        self._probe_now = asyncio.Event()
        self._stop = asyncio.Event()
        self._results: dict[str, Any] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._jobs: set[asyncio.Task[Any]] = set()
        self._job_by_kind: dict[str, asyncio.Task[Any]] = {}
        self._services_may_run = True  # unknown at start: rule 7 fences what runs
        self._fence_lock = asyncio.Lock()
        self._last_reason = ""
        self._last_record = 0.0
        self._snapshot: dict[str, Any] = {}
        self._last_lease: LeaseRead | None = None
        self._records: dict[str, NodeRecord] = {}
        # node -> (wall time, role) of its last record read: outlives the record's expiry
        self._seen: dict[str, tuple[float, str | None]] = {}
        self._drbd_states: list[dict[str, str]] = []
        self._controls: Any = None
        self._redis_ok = False
        self._ready: tuple[bool, list[str]] = (False, ["not checked yet"])
        self._local = FoundServices(vip_present=None, asterisk_running=None, drbd_primary=None)
        self.last_takeover: dict[str, Any] | None = None
        self._routed_at: float | None = None  # monotonic: when the spans were routed here
        self._alerts_seen: set[str] = set()
        self._was_healthy = True
        self._stuck_reported = False
        self._session: aiohttp.ClientSession | None = None
        self._peer_client: PeerClient | None = None
        self._api_runner: Any = None
        self._exit_code = 0

    # ------------------------------------------------------------------ lease helpers

    def lease_valid(self) -> bool:
        """Rule 1, checked right before each primary action."""
        until = holder_valid_until(self.own, self.promise_until, self.ha_cfg)
        return until is not None and self.clock() < until - self.ha_cfg.fence_budget

    def _min_epoch(self) -> int:
        return max(self.state_dir.highest_epoch, self.state_dir.held_epoch or 0)

    # ------------------------------------------------------------------ running

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        LOG_CONTEXT.node, LOG_CONTEXT.role = self.me, self.ha.role
        try:
            await self._open()
            await self._probe_once()  # rule 7 needs to know what runs here before deciding
            # Ready (and so watched) only now: the first probe runs service commands that
            # may take longer than WatchdogSec on a loaded host; nothing is held before it.
            self.sd.ready(f"{self.me}: starting")
            self._spawn("probe", self._probe_loop())
            self._spawn("cycle", self._cycle_loop())
            self._spawn("renewal", self._renewal_loop())
            self._spawn("notifier", self.notify.run())
            self._spawn("health", self.health.run(self._wake.set))
            if self.peer_id:
                self._spawn("peer_heartbeat", self._peer_loop())
            if self.pstn is not None:
                self._spawn("rseries_heartbeat", self._rseries_heartbeat())
                self._spawn("rseries_notes", self._rseries_notes())
            self._spawn("wakeups", self._wakeup_loop())
            await self._stop.wait()
            await hand_over_before_stop(self)  # SIGTERM on the primary: switch over first
        finally:
            await self._shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return self._exit_code

    def stop(self) -> None:
        self._stop.set()

    def _spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> None:
        """A long-lived owned task. If it fails, the agent stops: the supervisor restarts
        it and fences the node (a half-working agent is worse than none)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task

        def done(t: asyncio.Task[Any]) -> None:
            if t.cancelled() or self._stop.is_set():
                return
            exc = t.exception()
            if exc is None and name not in ("cycle", "renewal", "probe"):
                return  # finished its work (e.g. a notifier without webhooks)
            log.critical("task %s ended unexpectedly: %r; stopping the agent", name, exc)
            self._exit_code = 1
            self._stop.set()

        task.add_done_callback(done)

    def _job(self, kind: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A short owned job (takeover, demotion, acquire...); failures are logged."""
        task = asyncio.create_task(coro, name=kind)
        self._jobs.add(task)
        self._job_by_kind[kind] = task

        def done(t: asyncio.Task[Any]) -> None:
            self._jobs.discard(t)
            if self._job_by_kind.get(kind) is t:
                del self._job_by_kind[kind]
            if not t.cancelled() and t.exception() is not None:
                log.error("%s failed: %r", kind, t.exception())
            self._wake.set()
            if not kind.startswith("event-"):
                self._probe_now.set()

        task.add_done_callback(done)
        return task

    async def _open(self) -> None:
        try:
            await self.bus.connect()
        except BusError as exc:
            log.warning("Redis not reachable at start: %s", exc)
        self._session = aiohttp.ClientSession()
        secrets = [
            self.cfg.cluster.secret_file,
            self.cfg.api.token_file,
            self.cfg.redis.password_file,
        ]
        secrets += [self.cfg.ami.secret_file] + [h.url_file for h in self.cfg.notify.webhooks]
        secrets += [self.cfg.ari.password_file] if self.cfg.ari is not None else []
        peer_server = None
        if self.cfg.cluster.secret_file is not None and self.peer_id:
            peer_server = PeerServer(
                self.me,
                self.cfg.cluster.secret_file,
                peers=self.cfg.peer_ids,
                store=self.state_dir,
                may_promise=self._may_promise,
                lease_ttl=self.cfg.cluster.lease_ttl,
                clock=self.clock,
                outdate=self.drbd.outdate_self if self.drbd is not None else None,
            )
            peer = self.cfg.peer(self.peer_id)
            assert peer is not None
            self._peer_client = PeerClient(
                self.me,
                peer.id,
                peer.api,
                self.cfg.cluster.secret_file,
                session=self._session,
                lease_ttl=self.cfg.cluster.lease_ttl,
                timeout=min(0.5, self.cfg.cluster.renew_interval / 2),
                clock=self.clock,
            )
        app = create_app(
            view=_View(self),
            controls=self.bus,
            peer=peer_server,
            registry=self.metrics.registry,
            token=self.cfg.api.token_file,
            nodes=[self.me, *self.cfg.peer_ids],
            secrets=secrets,
        )
        self._api_runner = await start_api(app, self.cfg.api.listen)
        if self.ami is not None:
            await self.ami.start()
        if self.link is not None:
            await self.link.start()
            if self.pstn is not None:
                self._job("rseries_configure", self._rseries_configure())
        self.event("start", f"{self.me} started (version {__version__})")

    async def _shutdown(self) -> None:
        self.sd.stopping()
        paused = self.state_dir.paused or self.ha.role == "paused"
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        holder = self.own is not None
        if not paused:
            # A bot that exits while not paused leaves nothing primary running (design §3).
            await self._cancel_jobs()
            await self._fence_now("the bot is stopping", force=holder)
            if holder and self.own is not None:
                with contextlib.suppress(BusError):
                    await self.bus.release(self.own.epoch, next_node=self.peer_id)
                self.own = None
                self.state_dir.set_held(None)
        else:
            log.info("paused: leaving services and the lease as they are")
            await self._cancel_jobs()
        with contextlib.suppress(Exception):
            await self.notify.close(1.0)
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        if self.ami is not None:
            await self.ami.close()
        if self.ari is not None:
            await self.ari.close()
        if self.link is not None:
            await self.link.close()
        if self._session is not None:
            await self._session.close()
        await self.bus.close()
        self.sd.close()

    async def _cancel_jobs(self) -> None:
        for task in list(self._jobs):
            task.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)

    # ------------------------------------------------------------------ the cycle

    async def _cycle_loop(self) -> None:
        while True:
            obs = await self._observe()
            now = self.clock()
            old_role = self.ha.role
            self.ha, actions, reason = step(self.ha, obs, now)
            if reason != self._last_reason:
                log.info("%s", reason)
                self._last_reason = reason
            if self.ha.role != old_role:
                self._role_changed(old_role, reason)
            for action in actions:
                self._execute(action)
            self._report_stuck_standby(obs)
            self._update_metrics(now)
            await self._publish_record()
            self._kick_watchdog(now)
            if not self._ready_sent:
                # Ready (and the watchdog armed) after the first decision, not before the
                # start-up work: on a loaded host that outlasts a short profile's WatchdogSec.
                self.sd.ready(f"{self.me}: {self.ha.role}")
                self._ready_sent = True
            self._wake.clear()
            # Wake at the first rule-5 deadline ahead (bot.leasewake), and at least every
            # renew_interval, so that a short lease still gets a watchdog kick in time.
            idle = min(CYCLE_INTERVAL, self.cfg.cluster.renew_interval)
            pending = (self.ha.predicted_expiry, self.ha.wait_until, self.state_dir.promise_until())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next_wakeup(pending, self.clock(), idle)):
                    await self._wake.wait()

    def _take(self, key: str) -> Any:
        return self._results.pop(key, None)

    async def _observe(self) -> Observation:
        t0 = time.monotonic()
        lease_r, controls_r, records_r = await asyncio.gather(
            self.bus.read_lease(),
            self.bus.controls(),
            self.bus.node_records(),
            return_exceptions=True,
        )
        lease_read = lease_r if isinstance(lease_r, LeaseRead) else None
        lease_ok = lease_read is not None
        if lease_read is not None:
            self._last_lease = lease_read
            self.metrics.redis_rtt.set(time.monotonic() - t0)
        elif isinstance(lease_r, BusError):
            log.debug("lease read failed: %s", lease_r)
        self._set_redis_ok(lease_ok)
        if not isinstance(controls_r, BaseException):
            self._controls = controls_r
            self.outdated_on_bus = self.me in controls_r.outdated
        if isinstance(records_r, dict):
            self._records = records_r
            self._seen.update(
                {k: (r.last_seen, r.role) for k, r in records_r.items() if r.last_seen > 0}
            )
        verdict = self.health.verdict(self.ha.role, self.pstn_routed_at())
        self._report_health(verdict)
        ctl = self._controls if not isinstance(controls_r, BaseException) else None
        peer_rec = self._records.get(self.peer_id) if self.peer_id else None
        peer_view = PeerView(
            node_id=self.peer_id,
            role=peer_rec.role if peer_rec else None,
            healthy=bool(peer_rec and peer_rec.healthy),
            ready=bool(peer_rec and peer_rec.ready),
            reachable=peer_rec is not None or self.peer_reachable,
            epoch=peer_rec.epoch if peer_rec else None,
            promise_valid_until=self.promise_until,
        )
        note = self._take("rseries_notification")
        services = LocalServices(
            vip=self._local.vip_present if self.vip else None,
            asterisk=self._local.asterisk_running,
            drbd_primary=self._local.drbd_primary if self.drbd else None,
        )
        ready, ready_reasons = self._ready
        return Observation(
            lease=_lease_view(lease_read) if lease_read is not None else None,
            lease_read_ok=lease_ok and ctl is not None,
            redis_run_id=lease_read.run_id if lease_read is not None else None,
            own_lease=self.own,
            renew_result=self._take("renew_result"),
            acquire_result=self._take("acquire_result"),
            healthy=verdict.healthy,
            health_reasons=tuple(verdict.reasons),
            ready=ready,
            ready_reasons=tuple(ready_reasons),
            peer=peer_view,
            promise_given_until=self.state_dir.promise_until(),
            controls=_ha_controls(ctl),
            local_services=services,
            takeover_result=self._take("takeover_result"),
            demote_result=self._take("demote_result"),
            restart_result=self._take("restart_result"),
            rseries_notification=note,
            active_calls=self.health.active_calls,
            started_at=self.started_at,
            persisted_epoch=self.state_dir.held_epoch,
            persisted_paused=self.state_dir.paused,
        )

    def _report_health(self, verdict: Any) -> None:
        """Alerts and health changes become events (and webhooks), once per change."""
        alerts = {re.sub(r"[0-9.]+ s\b", "", a): a for a in verdict.alerts}
        for key, text in alerts.items():
            if key not in self._alerts_seen:
                kind = "span_alarm" if "span" in text else "health_alert"
                self.event(kind, text, alert=True)
        self._alerts_seen = set(alerts)
        if verdict.healthy != self._was_healthy:
            if verdict.healthy:
                self.event("health_recovered", "healthy again", alert=True)
            else:
                self.event("health_degraded", "; ".join(verdict.reasons), alert=True)
            self._was_healthy = verdict.healthy

    def _report_stuck_standby(self, obs: Observation) -> None:
        """A standby that sees no primary but cannot take over says so, once per episode."""
        lease = obs.lease
        stuck = (
            self.ha.role == "standby"
            and obs.lease_read_ok
            and lease is not None
            and lease.free
            and not obs.ready
        )
        if stuck and not self._stuck_reported:
            why = ", ".join(obs.ready_reasons) or "no reason given"
            self.event(
                "standby_not_ready", f"no primary and this node is not ready: {why}", alert=True
            )
        self._stuck_reported = stuck

    async def _probe_loop(self) -> None:
        """Local services and readiness run commands: probed here, not in the cycle,
        so that a cycle costs a few Redis reads and reacts within milliseconds."""
        while True:
            self._probe_now.clear()
            await self._probe_once()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_INTERVAL):
                    await self._probe_now.wait()

    async def _probe_once(self) -> None:
        local_r, ready_r, drbd_r = await asyncio.gather(
            self.takeover.local_services(),
            self._readiness(),
            self.drbd.states() if self.drbd is not None else _nothing(),
            return_exceptions=True,
        )
        if isinstance(drbd_r, list):
            for res in drbd_r:
                self.metrics.set_drbd(res.name, role=res.role, disk_state=res.disk)
            self._drbd_states = [
                {"name": r.name, "role": r.role, "disk": r.disk, "connection": r.connection}
                for r in drbd_r
            ]
        if not isinstance(local_r, BaseException):
            self._local = local_r
        else:
            log.warning("local service probe failed: %s", local_r)
        if not isinstance(ready_r, BaseException):
            self._ready = ready_r
        else:
            log.warning("readiness probe failed: %s", ready_r)

    async def _readiness(self) -> tuple[bool, list[str]]:
        _, reasons = await self.takeover.readiness(self.outdated_on_bus)
        if self.ami is None:
            reasons = [*reasons, "no AMI secret configured"]
        return not reasons, reasons

    def pstn_routed_at(self) -> float | None:
        return self._routed_at

    def _set_redis_ok(self, ok: bool) -> None:
        if ok != self._redis_ok:
            if ok:
                self.event("redis_back", "Redis answers again", alert=True)
            else:
                self.event("redis_lost", "Redis does not answer", alert=True)
        self._redis_ok = ok
        self.metrics.redis_up.set(1 if ok else 0)

    def _role_changed(self, old: str, reason: str) -> None:
        LOG_CONTEXT.role = self.ha.role
        self.metrics.set_role(self.ha.role)
        self.sd.status(f"{self.me}: {self.ha.role}")
        self.event("role", f"{old} -> {self.ha.role}: {reason}", role=self.ha.role, previous=old)

    def _kick_watchdog(self, now: float) -> None:
        # Design §3: after each cycle that ends with a valid lease or promise, and
        # after each non-holder cycle; a stalled or cut-off primary is killed.
        holder = self.ha.role in ("promoting", "primary", "demoting") or (
            self.ha.role == "paused" and self.ha.paused_from in ("promoting", "primary", "demoting")
        )
        if not holder or acts_as_primary(self.ha, now) or self.ha.role == "paused":
            self.sd.watchdog()

    # ------------------------------------------------------------------ actions

    def _execute(self, action: Action) -> None:
        kind, args = action.kind, action.args
        log.debug("action %r", action)
        if kind == "acquire":
            self._job("acquire", self._acquire(bool(args.get("fence_peer"))))
        elif kind == "adopt":
            self._job("adopt", self._adopt(int(args["epoch"])))
        elif kind == "promote":
            self._job("promote", self._promote(int(args["epoch"])))
        elif kind == "demote":
            self._job("demote", self._demote(args.get("drain"), args.get("to")))
        elif kind == "fence":
            self._job("fence", self._fence_action(str(args.get("reason", ""))))
        elif kind == "release":
            self._job("release", self._release(args.get("to")))
        elif kind == "drop_lease":
            self._drop_lease()
        elif kind == "restart_asterisk":
            self._job("restart_asterisk", self._restart_asterisk())
        elif kind == "route_spans":
            self._job("route_spans", self._route_spans())
        elif kind == "alert":
            self.event(str(args.get("topic", "alert")), str(args.get("text", "")), alert=True)
        elif kind == "pause_cluster":
            self._job("pause_cluster", self._bus_call(self.bus.set_paused(True)))
        elif kind == "persist_pause":
            self.state_dir.set_paused(bool(args.get("paused")))
        elif kind == "set_failed":
            until = time.time() + float(args.get("seconds", self.cfg.cluster.failed_holddown))
            self._job("set_failed", self._bus_call(self.bus.set_failed(self.me, until)))
        elif kind == "record_epoch":
            self.state_dir.record_epoch(int(args["epoch"]))
        elif kind == "clear_switchover":
            self.event("switchover", f"switchover request {args.get('outcome', 'done')}")
            self._job("clear_switchover", self._bus_call(self.bus.clear_switchover()))
        else:  # pragma: no cover - the HA package and this table are kept in step
            log.error("unknown action %r", action)

    async def _bus_call(self, call: Awaitable[Any]) -> None:
        try:
            await call
        except BusError as exc:
            log.warning("bus write failed: %s", exc)

    async def _acquire(self, fence_peer: bool) -> None:
        try:
            if fence_peer and self.cfg.cluster.fence_command and self.peer_id:
                argv = [a.replace("{peer}", self.peer_id) for a in self.cfg.cluster.fence_command]
                await run_command(argv, timeout=30.0)
            grant = await self.bus.acquire(self.cfg.cluster.lease_ttl, self._min_epoch())
        except Exception as exc:
            log.warning("acquire failed: %s", exc)
            self._results["acquire_result"] = "error"
            return
        if grant is None:
            self._results["acquire_result"] = "busy"
            return
        self.state_dir.record_epoch(grant.epoch)
        self.state_dir.set_held(grant.epoch)
        self.own = OwnLease(grant.epoch, grant.sent_at)
        self._services_may_run = True
        self._lease_changed.set()
        self._results["acquire_result"] = "acquired"
        self.event("lease", f"took the lease, epoch {grant.epoch}", epoch=grant.epoch)

    async def _adopt(self, epoch: int) -> None:
        try:
            result = await self.bus.renew(epoch, self.cfg.cluster.lease_ttl)
        except BusError as exc:
            log.warning("adopt: renewal failed: %s", exc)
            return
        if result.outcome == "renewed":
            self.own = OwnLease(epoch, result.sent_at)
            self._lease_changed.set()
            self.event("lease", f"adopted own lease, epoch {epoch}", epoch=epoch)
        else:
            self._results["renew_result"] = result.outcome

    async def _promote(self, epoch: int) -> None:
        self._services_may_run = True
        peer_rec = self._records.get(self.peer_id) if self.peer_id else None
        only_one = not (peer_rec and peer_rec.healthy and peer_rec.ready)
        reason = self._failover_reason()
        self.metrics.failovers.labels(reason=reason).inc()
        self.event("failover_started", f"takeover started, epoch {epoch} ({reason})", alert=True)
        report = await self.takeover.promote(only_node_that_can_serve=only_one)
        self._record_takeover(report, epoch)
        outcome = report.outcome if report.outcome != "aborted" else "failed"
        if report.outcome != "failed" and any(s.name == "route" and s.ok for s in report.steps):
            self._routed_at = time.monotonic()
        self._results["takeover_result"] = outcome

    def _failover_reason(self) -> str:
        lease = self._last_lease.lease if self._last_lease else None
        if lease is not None and lease.next_node == self.me:
            sw = self._controls.switchover if self._controls is not None else None
            return "switchover" if sw is not None else "health"
        return "host_lost"

    def _record_takeover(self, report: TakeoverReport, epoch: int) -> None:
        self.metrics.takeovers.labels(outcome=report.outcome).inc()
        self.metrics.takeover_duration.observe(report.duration)
        steps = [
            {"name": s.name, "duration": round(s.duration, 4), "ok": s.ok, "detail": s.detail}
            for s in report.steps
        ]
        self.last_takeover = {
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
        self.event(
            kind,
            f"takeover {report.outcome} in {report.duration:.2f} s"
            + (f": {report.reason}" if report.reason else ""),
            alert=True,
            steps=steps,
            epoch=epoch,
        )

    def _on_step(self, timing: StepTiming) -> None:
        self.metrics.observe_step(timing.name, timing.duration)
        self.event(
            "step",
            f"{timing.name} {'ok' if timing.ok else 'FAILED'} in {timing.duration * 1000:.0f} ms"
            + (f": {timing.detail}" if timing.detail else ""),
            step=timing.name,
            ok=timing.ok,
            duration=timing.duration,
        )

    async def _demote(self, drain: Any, to: Any) -> None:
        drain_timeout = float(drain) if drain else None
        self.event("demotion", f"demoting, handing over to {to}", alert=True)
        report = await self.takeover.demote(drain_timeout=drain_timeout)
        self._services_may_run = report.outcome != "succeeded"
        self._results["demote_result"] = "succeeded" if report.outcome == "succeeded" else "failed"

    async def _fence_action(self, reason: str) -> None:
        promote = self._job_by_kind.get("promote")
        if promote is not None and promote is not asyncio.current_task():
            promote.cancel()
            await asyncio.gather(promote, return_exceptions=True)
        await self._fence_now(reason)
        self._results["demote_result"] = "succeeded"

    async def _fence_now(self, reason: str, *, force: bool = False) -> None:
        """Fence (IP down, kill Asterisk, DRBD secondary), unless nothing can be running."""
        async with self._fence_lock:
            if not (self._services_may_run or force):
                return
            report = await self.takeover.fence()
            self._services_may_run = not all(s.ok for s in report.steps)
            self.metrics.self_fences.labels(reason=_fence_reason(reason)).inc()
            self.event("self_fence", f"fenced: {reason}", alert=True)

    async def _release(self, to: Any) -> None:
        own = self.own
        self._drop_lease()
        if own is None:
            return
        try:
            await self.bus.release(own.epoch, next_node=str(to) if to else None)
            self.event(
                "lease", f"released the lease, epoch {own.epoch}" + (f", to {to}" if to else "")
            )
        except BusError as exc:
            log.warning("release failed (the lease will expire): %s", exc)

    def _drop_lease(self) -> None:
        self.own = None
        self.promise_until = None
        self.state_dir.set_held(None)
        self._lease_changed.set()

    async def _restart_asterisk(self) -> None:
        try:
            self.health.note_asterisk_start()
            await self.asterisk.restart()
            if self.ami is not None:
                self.ami.kick()
                await self.asterisk.wait_fully_booted(
                    self.ami, limit=self.cfg.asterisk.boot_timeout
                )
            self._results["restart_result"] = "succeeded"
        except Exception as exc:
            log.warning("Asterisk restart failed: %s", exc)
            self._results["restart_result"] = "failed"

    async def _route_spans(self) -> None:
        if self.pstn is None or not self.lease_valid():
            return
        try:
            await self.pstn.route_here()
            self._routed_at = time.monotonic()
        except Exception as exc:
            log.warning("re-route failed: %s", exc)

    # ------------------------------------------------------------------ renewal (rule 2)

    async def _renewal_loop(self) -> None:
        cfg = self.cfg.cluster
        last_attempt = -1e9
        while True:
            own = self.own
            if own is None:
                self._lease_changed.clear()
                await self._lease_changed.wait()
                last_attempt = self.clock()
                self._renew_tick.set()
                continue
            now = self.clock()
            until = holder_valid_until(own, self.promise_until, self.ha_cfg)
            fence_at = (until if until is not None else now) - cfg.fence_budget
            if now >= fence_at:
                log.warning("lease about to run out: fencing")
                await self._fence_now(f"lease renewal failed for {now - own.sent_at:.1f} s")
                if self.own is own:
                    self._drop_lease()
                self._wake.set()
                continue
            next_renew = last_attempt + cfg.renew_interval
            if now < next_renew:
                self._lease_changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(next_renew, fence_at) - now):
                        await self._lease_changed.wait()
                continue
            last_attempt = now
            self._renew_tick.set()  # the heartbeat goes out now too (bot.leasewake)
            await self._renew_once(own)

    async def _renew_once(self, own: OwnLease) -> None:
        ttl = self.cfg.cluster.lease_ttl
        try:
            async with asyncio.timeout(self.cfg.redis.timeout * 2):
                result = await self.bus.renew(own.epoch, ttl)
        except (BusError, TimeoutError) as exc:
            log.debug("renewal failed: %s", exc)
            return
        if self.own is not own:
            return  # released or replaced meanwhile
        if result.outcome == "renewed":
            self.own = OwnLease(own.epoch, result.sent_at)
        elif result.outcome == "held_by_other":
            self._results["renew_result"] = "held_by_other"
            log.error("renewal found the lease held by %s: fencing now", result.holder)
            await self._fence_now(f"lease taken by {result.holder}")
            self._drop_lease()
            self._wake.set()
        else:  # missing: take it again (rule 4), keeping the role if that works
            try:
                grant = await self.bus.acquire(ttl, self._min_epoch())
            except BusError:
                grant = None
            if grant is not None and self.own is own:
                self.state_dir.record_epoch(grant.epoch)
                self.state_dir.set_held(grant.epoch)
                self.own = OwnLease(grant.epoch, grant.sent_at)
                self.event("lease", f"lease key was missing: took it again, epoch {grant.epoch}")
            self._wake.set()

    # ------------------------------------------------------------------ peer channel

    async def _peer_loop(self) -> None:
        assert self._peer_client is not None
        while True:
            # In phase with the renewals, so the promise ends with the key; at least
            # every 1.25 renew_interval when a renewal hangs on Redis.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.25 * self.cfg.cluster.renew_interval):
                    await self._renew_tick.wait()
            self._renew_tick.clear()
            own = self.own
            if own is not None and self.ha.role in ("promoting", "primary", "demoting", "paused"):
                try:
                    receipt = await self._peer_client.heartbeat(own.epoch)
                except Exception as exc:  # never let the peer channel stop
                    log.debug("peer heartbeat failed: %s", exc)
                    receipt = None
                self.peer_reachable = receipt is not None or self._peer_client.last is not None
                if receipt is not None and self.own is own:
                    self.promise_until = receipt.valid_until - self.cfg.cluster.drift_margin
                    self._lease_changed.set()
                self.metrics.peer_up.set(1 if receipt is not None else 0)
            else:
                self.promise_until = None

    def _may_promise(self, peer: str, epoch: int) -> str | None:
        if not may_promise(self.ha):
            return f"{self.me} is {self.ha.role}"
        if "acquire" in self._job_by_kind or self.own is not None:
            return f"{self.me} is taking the lease"
        return None

    # ------------------------------------------------------------------ R-Series

    async def _rseries_configure(self) -> None:
        assert self.pstn is not None
        try:
            await self.pstn.configure()
        except Exception as exc:
            log.warning("R-Series configuration failed: %s", exc)

    async def _rseries_heartbeat(self) -> None:
        assert self.pstn is not None
        await self.pstn.run_heartbeat(
            primary=lambda: acts_as_primary(self.ha, self.clock()),
            ready=lambda: self._ready[0],
            paused=lambda: self.ha.role == "paused",
        )

    async def _rseries_notes(self) -> None:
        assert self.pstn is not None
        causes: dict[str, Any] = {"watchdog": "WATCHDOG", "button": "BUTTON", "poweron": "POWERON"}
        async for obs in self.pstn.observations():
            cause = causes.get(obs.kind)
            self.event("rseries", f"appliance: {obs.line}", active=obs.active)
            if cause is not None:
                self._results["rseries_notification"] = RSeriesNotification(cause, obs.active or "")
                self._wake.set()

    # ------------------------------------------------------------------ wake-ups

    async def _wakeup_loop(self) -> None:
        while True:
            try:
                async for _ in self.bus.wakeups():
                    self._wake.set()
            except BusError as exc:
                log.debug("wake-up channel: %s", exc)
            await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ records, events, metrics

    def event(self, kind: str, message: str, *, alert: bool = False, **fields: Any) -> None:
        entry = {"kind": kind, "message": message, "node": self.me, "time": time.time(), **fields}
        self.hub.publish(entry)
        if alert:
            log.warning("%s: %s", kind, message)
            self.notify.notify(kind, message, {k: v for k, v in fields.items() if k != "steps"})
        if kind in ("step",) and not alert:
            log.info("%s", message)
        self._job(
            f"event-{id(entry)}", self._bus_call(self.bus.append_event(kind, message, **fields))
        )

    async def _publish_record(self) -> None:
        now = time.monotonic()
        if now - self._last_record < RECORD_INTERVAL and self._last_record:
            return
        self._last_record = now
        record = self._record()
        try:
            await self.bus.publish_node_record(record)
        except BusError as exc:
            log.debug("record not published: %s", exc)

    def _record(self) -> NodeRecord:
        """This node's record: its live view, stamped with when it was written (wall
        clock, for display) and how it saw the lease then."""
        verdict = self.health.last
        ready, ready_reasons = self._ready
        lease = self._last_lease.lease if self._last_lease is not None else None
        until = (
            holder_valid_until(self.own, self.promise_until, self.ha_cfg)
            if self.own is not None
            else None
        )
        return NodeRecord(
            id=self.me,
            role=self.ha.role,
            healthy=verdict.healthy,
            health_reasons=list(verdict.reasons),
            ready=ready,
            ready_reasons=list(ready_reasons),
            epoch=self.ha.epoch,
            version=__version__,
            settings_hash=self.cfg.settings_hash(),
            last_seen=time.time(),
            extra=self._extra(),
            lease_view={
                "holder": self.me if self.own is not None else (lease.holder if lease else None),
                "epoch": self.own.epoch
                if self.own is not None
                else (lease.epoch if lease else None),
                "remaining": None if until is None else round(max(0.0, until - self.clock()), 3),
            },
        )

    def _extra(self) -> dict[str, Any]:
        state = self.link.state if self.link is not None else None
        return {
            "spans": self.health.spans_status(),
            "rseries": None
            if self.link is None
            else {
                "connected": self.link.connected,
                "active": getattr(state, "active", None),
                "mode": getattr(state, "mode", None),
                "host": self.cfg.node.rseries_host,
                "heartbeat": self.cfg.rseries is not None
                and heartbeat_wanted(
                    primary=acts_as_primary(self.ha, self.clock()),
                    ready=self._ready[0],
                    standby_heartbeat=self.cfg.rseries.standby_heartbeat,
                    paused=self.ha.role == "paused",
                ),
            },
            "drbd": self._drbd_states,
            "last_takeover": self.last_takeover,
            "services": {
                "vip": self._local.vip_present,
                "asterisk": self._local.asterisk_running,
                "drbd_primary": self._local.drbd_primary,
            },
            "degraded": self.ha.degraded,
            "asterisk": self.health.asterisk_status(),
        }

    def _update_metrics(self, now: float) -> None:
        m = self.metrics
        holds = self.own is not None and acts_as_primary(self.ha, now)
        remaining = 0.0
        if self.own is not None:
            until = holder_valid_until(self.own, self.promise_until, self.ha_cfg)
            remaining = max(0.0, (until or now) - now)
        m.set_lease(held=holds, epoch=self.ha.epoch or 0, remaining=remaining)
        verdict = self.health.last
        m.healthy.set(1 if verdict.healthy else 0)
        m.ready.set(1 if self._ready[0] else 0)
        m.vip_present.set(1 if self._local.vip_present else 0)
        m.paused.set(1 if self.ha.role == "paused" else 0)
        hashes = {r.settings_hash for r in self._records.values() if r.settings_hash}
        m.config_drift.set(1 if len(hashes) > 1 else 0)
        if self.link is not None:
            m.rseries_up.set(1 if self.link.connected else 0)
            state = self.link.state
            active = getattr(state, "active", None)
            m.set_rseries_active(active)
            holder = self._last_lease.lease if self._last_lease else None
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

    def status(self) -> dict[str, Any]:
        ids = [self.me, *self.cfg.peer_ids]
        obj: dict[str, Any] = dict(
            build_status(
                cluster=self.cfg.cluster.name,
                node_ids=ids,
                # With Redis down, the last read is all there is: shown, and said to be old.
                lease=self._last_lease,
                records=dict(self._records),
                controls=self._controls if self._redis_ok else None,
                now_wall=time.time(),
                now_clock=self.clock(),
                stale_after=self.cfg.cluster.lease_ttl + self.cfg.cluster.renew_interval,
                source="redis" if self._redis_ok else f"node {self.me} (Redis unreachable)",
                redis_ok=self._redis_ok,
                seen=self._seen,
                local=self._record(),
                problems=[] if self._redis_ok else ["Redis unreachable"],
            )
        )
        if not self._redis_ok and self.own is not None:
            obj["holder"], obj["epoch"] = self.me, self.own.epoch
            until = holder_valid_until(self.own, self.promise_until, self.ha_cfg)
            obj["lease_remaining_seconds"] = round(max(0.0, (until or 0) - self.clock()), 3)
        obj["reported_by"] = self.me
        obj["last_takeover"] = self.last_takeover
        obj["events"] = list(self.hub.recent)[-50:]
        state = self.link.state if self.link is not None else None
        obj["rseries_active"] = getattr(state, "active", None)
        obj["features"] = {
            name: getattr(self.cfg, name) is not None
            for name in ("rseries", "drbd", "vip", "ari", "test_call")
        }
        return obj


class _View:
    """What the API sees of the agent (bot.api.NodeView)."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self.node_id = agent.me

    def role(self) -> str:
        return self._agent.ha.role

    def health(self) -> tuple[bool, list[str]]:
        verdict = self._agent.health.last
        return verdict.healthy, list(verdict.reasons)

    def status(self) -> dict[str, Any]:
        return self._agent.status()

    def subscribe_events(self) -> Any:
        return self._agent.hub.subscribe()


async def _nothing() -> None:
    return None


def _lease_view(read: LeaseRead) -> LeaseView:
    lease = read.lease
    if lease is None:
        return LeaseView(holder=None)
    # The key cannot expire before send time + PTTL: reply jitter is no "early vanish".
    not_before = read.sent_at + read.pttl_ms / 1000.0 if read.pttl_ms is not None else None
    return LeaseView(
        holder=None if lease.released else lease.holder,
        epoch=lease.epoch,
        expires_at=read.predicted_expiry(),
        released_to=lease.next_node,
        expires_not_before=not_before,
    )


def _ha_controls(ctl: Any) -> HaControls:
    if ctl is None:
        return HaControls()
    sw = ctl.switchover
    return HaControls(
        paused=ctl.paused,
        cordoned=frozenset(ctl.cordoned),
        failed=frozenset(ctl.failed),
        switchover_to=sw.target if sw is not None else None,
        switchover_drain=sw.drain_timeout if sw is not None else 0.0,
        outdated=frozenset(ctl.outdated),
    )


def _fence_reason(text: str) -> str:
    if "taken by" in text:
        return "lease_taken"
    if "renewal failed" in text or "lease" in text:
        return "lease_expired"
    if "stopping" in text:
        return "shutdown"
    return "other"


async def run_agent(cfg: Config) -> int:
    agent = Agent(cfg)
    return await agent.run()
