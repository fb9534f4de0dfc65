"""The executor: a table from action kind to handler; results go to the inbox, typed.

Handlers that take time run as owned jobs (one per kind); the quick ones run
inline. Nothing here decides: the HA step did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ami.client import AmiClient
from bot.actions.asterisk import AsteriskService
from bot.actions.pstn import Pstn
from bot.actions.takeover import Takeover
from bot.agent.events import Events
from bot.agent.fencer import Fencer, reason_of
from bot.agent.inbox import Inbox
from bot.agent.jobs import Jobs
from bot.agent.lease import LeaseKeeper
from bot.agent.observer import Observer
from bot.agent.reporter import TakeoverLog
from bot.bus import Bus, BusError
from bot.config import Config
from bot.ha import Action
from bot.ha.types import ActionKind
from bot.healthmon import HealthMonitor
from bot.metrics import Metrics
from bot.state import StateDir

log = logging.getLogger(__name__)

Handler = Callable[[Action], None]


class Executor:
    def __init__(
        self,
        cfg: Config,
        *,
        bus: Bus,
        jobs: Jobs,
        inbox: Inbox,
        keeper: LeaseKeeper,
        fencer: Fencer,
        observer: Observer,
        takeover: Takeover,
        takeovers: TakeoverLog,
        asterisk: AsteriskService,
        health: HealthMonitor,
        ami: AmiClient | None,
        pstn: Pstn | None,
        state_dir: StateDir,
        metrics: Metrics,
        events: Events,
    ) -> None:
        self.cfg = cfg
        self.me = cfg.node.id
        self.bus = bus
        self.jobs = jobs
        self.inbox = inbox
        self.keeper = keeper
        self.fencer = fencer
        self.observer = observer
        self.takeover = takeover
        self.takeovers = takeovers
        self.asterisk = asterisk
        self.health = health
        self.ami = ami
        self.pstn = pstn
        self.state_dir = state_dir
        self.metrics = metrics
        self.events = events
        self.routed_at: float | None = None  # monotonic: when the spans were routed here
        self._acquire_reason = "host_lost"  # why the last acquire was started
        self.table: dict[ActionKind, Handler] = {
            "acquire": self._acquire,
            "adopt": lambda a: self._job(a, self.keeper.adopt(int(a.args["epoch"]))),
            "promote": lambda a: self._job(
                a, self._promote(int(a.args["epoch"]), bool(a.args.get("only_node", True)))
            ),
            "demote": lambda a: self._job(a, self._demote(a.args.get("drain"), a.args.get("to"))),
            "fence": lambda a: self._job(a, self._fence(str(a.args.get("reason", "")))),
            "release": lambda a: self._job(
                a,
                self.keeper.release(_node(a.args.get("to")), planned=bool(a.args.get("planned"))),
            ),
            "drop_lease": self._drop_lease,
            "restart_asterisk": lambda a: self._job(a, self._restart_asterisk()),
            "route_spans": lambda a: self._job(a, self._route_spans()),
            "alert": lambda a: self.events(
                str(a.args.get("topic", "alert")), str(a.args.get("text", "")), alert=True
            ),
            "pause_cluster": lambda a: self._job(a, self._bus_call(self.bus.set_paused(True))),
            "persist_pause": lambda a: self.state_dir.set_paused(bool(a.args.get("paused"))),
            "set_failed": self._set_failed,
            "record_epoch": lambda a: self.state_dir.record_epoch(int(a.args["epoch"])),
            "clear_switchover": self._clear_switchover,
        }

    def execute(self, action: Action) -> None:
        log.debug("action %r", action)
        handler = self.table.get(action.kind)
        if handler is None:  # pragma: no cover - the HA package and this table are kept in step
            log.error("unknown action %r", action)
            return
        handler(action)

    def _job(self, action: Action, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            await coro

        self.jobs.start(action.kind, run())

    async def _bus_call(self, call: Awaitable[Any]) -> None:
        try:
            await call
        except BusError as exc:
            log.warning("bus write failed: %s", exc)

    def _acquire(self, action: Action) -> None:
        # The cause is read now: once the lease is ours, the released key that named
        # this node (a switchover or a health hand-over) is gone.
        self._acquire_reason = self._failover_reason()
        self._job(action, self.keeper.acquire(bool(action.args.get("fence_peer"))))

    def _drop_lease(self, action: Action) -> None:
        """Stop renewing, but never before a fence asked for with it (or still running)
        has completed: the lease is given up last (design §3 rule 10), so the peer cannot
        take it while the address or Asterisk may still be up here."""
        if self.jobs.running("fence") or self.fencer.busy or self.fencer.incomplete:
            self._job(action, self._drop_after_fence())
        else:
            self.keeper.drop()

    async def _drop_after_fence(self) -> None:
        await self.jobs.wait("fence")
        await self.fencer.wait_complete()
        self.keeper.drop()

    def _set_failed(self, action: Action) -> None:
        until = time.time() + float(action.args.get("seconds", self.cfg.cluster.failed_holddown))
        self._job(action, self._bus_call(self.bus.set_failed(self.me, until)))

    def _clear_switchover(self, action: Action) -> None:
        self.events("switchover", f"switchover request {action.args.get('outcome', 'done')}")
        request = action.args.get("request")
        call = self.bus.clear_switchover(request if isinstance(request, str) else None)
        self._job(action, self._bus_call(call))

    # ------------------------------------------------------------------ handlers that take time

    async def _promote(self, epoch: int, only_one: bool) -> None:
        reason = self._acquire_reason
        self.metrics.failovers.labels(reason=reason).inc()
        self.events("failover_started", f"takeover started, epoch {epoch} ({reason})", alert=True)
        report = await self.takeover.promote(only_node_that_can_serve=only_one)
        self.takeovers.record(report, epoch)
        if report.undo_failed:
            # A rollback that failed leaves services behind: fence (until complete) before
            # the step hears of the failure and releases the lease.
            await self.fencer.fence(
                "rollback_failed", f"rollback failed: {', '.join(report.undo_failed)}"
            )
        if report.outcome != "failed" and any(s.name == "route" and s.ok for s in report.steps):
            self.routed_at = time.monotonic()
        self.inbox.takeover_result = "failed" if report.outcome == "aborted" else report.outcome
        if report.outcome == "refused":
            self.routed_at = None

    def _failover_reason(self) -> str:
        read = self.observer.last_lease
        lease = read.lease if read else None
        if lease is not None and lease.next_node == self.me:
            controls = self.observer.controls
            sw = controls.switchover if controls is not None else None
            return "switchover" if sw is not None else "health"
        return "host_lost"

    async def _demote(self, drain: Any, to: Any) -> None:
        drain_timeout = float(drain) if drain else None
        self.events("demotion", f"demoting, handing over to {to}", alert=True)
        report = await self.takeover.demote(drain_timeout=drain_timeout)
        self.inbox.demote_result = "succeeded" if report.outcome == "succeeded" else "failed"

    async def _fence(self, reason: str) -> None:
        # Returns only once every fence step succeeded: "fenced" is never a guess.
        await self.fencer.fence(reason_of(reason), reason)
        self.inbox.demote_result = "succeeded"

    async def _restart_asterisk(self) -> None:
        try:
            with self.health.restarting():
                await self.asterisk.restart(may_start=self.keeper.valid)
            if self.ami is not None:
                self.ami.kick()
                await self.asterisk.wait_fully_booted(
                    self.ami, limit=self.cfg.asterisk.boot_timeout
                )
            self.inbox.restart_result = "succeeded"
        except Exception as exc:
            log.warning("Asterisk restart failed: %s", exc)
            self.inbox.restart_result = "failed"

    async def _route_spans(self) -> None:
        if self.pstn is None or not self.keeper.valid():
            return
        try:
            await self.pstn.route_here(may_write=self.keeper.valid)
            self.routed_at = time.monotonic()
        except Exception as exc:
            log.warning("re-route failed: %s", exc)


def _node(value: object) -> str | None:
    return str(value) if value else None
