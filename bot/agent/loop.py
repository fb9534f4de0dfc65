"""The agent: wires the parts, owns every task, runs observe -> step -> execute.

Decisions are made by ``bot.ha.step`` on one frozen ``Observation`` per cycle
(the observer); the executor carries out the actions. Two duties are kept out
of the cycle so that nothing can delay them (design §3 rule 2): the lease
keeper's renewal task, which fences the node through the fencer when the lease
is about to run out, and its peer heartbeat task, which collects the standby's
promise. The reporter says what happened (record, events, metrics, status).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from ami.ari import AriClient
from ami.client import AmiClient
from bot import __version__
from bot.actions.asterisk import AsteriskService
from bot.actions.drbd import Drbd
from bot.actions.pstn import Pstn
from bot.actions.takeover import FoundServices, Takeover
from bot.actions.vip import Vip
from bot.agent.datamark import MarkReconciler
from bot.agent.events import Events
from bot.agent.executor import Executor
from bot.agent.fencer import Fencer
from bot.agent.inbox import Inbox
from bot.agent.jobs import Jobs
from bot.agent.lease import LeaseKeeper
from bot.agent.observer import Observer
from bot.agent.reporter import NodeView, Reporter, TakeoverLog, reason_changed
from bot.agent.stop import StopHandover, fence_is_news
from bot.api import create_app, start_api
from bot.boottime import boottime
from bot.bus import Bus, BusError
from bot.config import Config
from bot.eventhub import EventHub
from bot.ha import (
    HaConfig,
    HaState,
    RSeriesNotification,
    acts_as_primary,
    is_holder,
    next_deadline,
    step,
)
from bot.healthmon import HealthMonitor
from bot.logsetup import LOG_CONTEXT
from bot.metrics import Metrics
from bot.notify import Notifier
from bot.peer import PeerClient, PeerServer
from bot.sdnotify import SdNotifier
from bot.state import DataMarks, StateDir
from rseries.driver import RSeriesLink

log = logging.getLogger(__name__)

CYCLE_INTERVAL = 0.2  # the loop also wakes on every pushed change
DEADLINE_SLACK = 0.002  # wake just after a deadline, not just before it
SHUTDOWN_FENCE_GRACE = 5.0  # a stopping bot retries its fence this long after escalating
SHUTDOWN_CLOSE_GRACE = 10.0  # closing the connections at exit is alive this long at most
# Long-lived tasks that must never end while the agent runs.
ESSENTIAL = ("cycle", "renewal", "probe")
LEASE_TASKS = ("renewal", "peer_heartbeat")  # kept running while the services stop


@dataclass
class Adapters:
    """The parts that touch the world, when not built from the configuration (the
    property tests' model world). Everything else is the shipping code."""

    bus: Bus
    state_dir: StateDir
    takeover: Takeover
    asterisk: AsteriskService
    health: HealthMonitor


class Agent:
    def __init__(
        self,
        cfg: Config,
        *,
        clock: Callable[[], float] = boottime,
        registry: CollectorRegistry | None = None,
        adapters: Adapters | None = None,
    ) -> None:
        self.cfg = cfg
        self.me = cfg.node.id
        self.peer_id = cfg.peer_ids[0] if cfg.peer_ids else None
        self.clock = clock
        self.started_at = clock()
        self.ha_cfg = HaConfig.from_config(cfg)
        self.ha = HaState.initial(self.ha_cfg, self.started_at)
        self.on_state: Callable[[HaState], None] | None = None  # every new HA state
        self.metrics = Metrics.for_config(cfg, registry=registry or CollectorRegistry())
        self._build_io(cfg, adapters)
        self._wire_parts(cfg, clock, adapters)
        self._last_reason = ""
        self._session: aiohttp.ClientSession | None = None
        self._api_runner: Any = None
        self.peer_server: PeerServer | None = None
        self._stopped_services = False
        self._exit_code = 0
        self._ready_sent = False
        self._handed_over = False  # a stop's hand-over completed (bot.agent.stop)
        self._stopping = False  # the services are being stopped (_stop_services)
        self.tasks: dict[str, asyncio.Task[Any]] = {}  # the long-lived tasks, by name

    def _build_io(self, cfg: Config, adapters: Adapters | None) -> None:
        """The adapters to the world, from the configuration (or given)."""
        self.state_dir = adapters.state_dir if adapters else StateDir(cfg.node.state_dir)
        if self.state_dir.load_error is not None:
            log.error(
                "state directory: %s (kept the highest epoch found)", self.state_dir.load_error
            )
        self.bus = adapters.bus if adapters else Bus.from_config(cfg)
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
        self.drbd = (
            Drbd(
                cfg.drbd,
                outdated=lambda: self.observer.outdated_on_bus,
                marks=DataMarks(cfg.node.state_dir),
            )
            if cfg.drbd
            else None
        )
        self.vip = Vip(cfg.vip) if cfg.vip else None
        self.asterisk = adapters.asterisk if adapters else AsteriskService(cfg.asterisk)
        self.ari = AriClient.from_config(cfg.ari) if cfg.ari is not None else None
        self.health = (
            adapters.health
            if adapters
            else HealthMonitor(
                cfg,
                self.ami,
                self.metrics,
                ari=self.ari,
                clock=time.monotonic,
                process_check=self.asterisk.running,
            )
        )
        self.sd = SdNotifier()
        interval = SdNotifier.watchdog_interval()  # half of WatchdogSec
        self._watchdog_sec = 2 * interval if interval is not None else 0.0

    def _wire_parts(
        self, cfg: Config, clock: Callable[[], float], adapters: Adapters | None
    ) -> None:
        """The parts, in the order they depend on each other."""
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self.jobs = Jobs(on_done=self._job_done)
        self.inbox = Inbox()
        self.events = Events(self.me, self.hub, self.notify, self.bus, self.jobs)
        self.takeovers = TakeoverLog(self.metrics, self.events)
        self.takeover = (
            adapters.takeover
            if adapters
            else Takeover(
                cfg,
                drbd=self.drbd,
                vip=self.vip,
                asterisk=self.asterisk,
                pstn=self.pstn,
                ami=self.ami,
                lease_valid=lambda: self.keeper.valid(),
                on_step=self.takeovers.on_step,
                spans_up=self.health.spans_up,
                test_call=self.health.place_test_call
                if cfg.test_call is not None and self.ami is not None
                else None,
                fence_peer=lambda: self.keeper.fence_peer(),
            )
        )
        self.fencer = Fencer(
            self.takeover, cfg.fence, jobs=self.jobs, metrics=self.metrics, events=self.events
        )
        self.keeper = LeaseKeeper(
            cfg,
            self.ha_cfg,
            bus=self.bus,
            state_dir=self.state_dir,
            fencer=self.fencer,
            events=self.events,
            inbox=self.inbox,
            jobs=self.jobs,
            metrics=self.metrics,
            clock=clock,
            ha_state=lambda: self.ha,
            wake=self._wake.set,
        )
        self.observer = Observer(
            me=self.me,
            peer_id=self.peer_id,
            bus=self.bus,
            takeover=self.takeover,
            drbd=self.drbd,
            health=self.health,
            keeper=self.keeper,
            fencer=self.fencer,
            state_dir=self.state_dir,
            metrics=self.metrics,
            ami_configured=self.ami is not None,
            routed_at=lambda: self.executor.routed_at,
            started_at=self.started_at,
            failed_holddown=cfg.cluster.failed_holddown,
            marks=MarkReconciler(self.me, bus=self.bus, drbd=self.drbd, events=self.events)
            if self.drbd is not None
            else None,
        )
        self.reporter = Reporter(
            cfg,
            bus=self.bus,
            metrics=self.metrics,
            events=self.events,
            hub=self.hub,
            health=self.health,
            observer=self.observer,
            keeper=self.keeper,
            fencer=self.fencer,
            takeovers=self.takeovers,
            link=self.link,
            sd=self.sd,
            clock=clock,
        )
        self.executor = Executor(
            cfg,
            bus=self.bus,
            jobs=self.jobs,
            inbox=self.inbox,
            keeper=self.keeper,
            fencer=self.fencer,
            observer=self.observer,
            takeover=self.takeover,
            takeovers=self.takeovers,
            asterisk=self.asterisk,
            health=self.health,
            ami=self.ami,
            pstn=self.pstn,
            state_dir=self.state_dir,
            metrics=self.metrics,
            events=self.events,
        )
        self.stop_handover = StopHandover(
            peer_id=self.peer_id,
            drain=cfg.cluster.stop_drain_timeout,
            bus=self.bus,
            events=self.events,
            observer=self.observer,
            keeper=self.keeper,
            ha=lambda: self.ha,
            last_reason=lambda: self._last_reason,
            tasks=lambda: self.tasks,
            paused=lambda: self.state_dir.paused,
            failed=lambda: self._exit_code != 0,
        )

    # ------------------------------------------------------------------ running

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        LOG_CONTEXT.node, LOG_CONTEXT.role = self.me, self.ha.role
        try:
            await self._open()
            await self.observer.probe_once()  # rule 7 needs to know what runs here first
            await self._run_tasks()
        finally:
            await self._shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return self._exit_code

    async def _run_tasks(self) -> None:
        """The long-lived tasks, until stopped. If one fails, the group stops the agent:
        the supervisor restarts it and fences the node (a half-working agent is worse
        than none)."""
        wanted: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
            "probe": self.observer.run_probes,
            "cycle": self._cycle_loop,
            "renewal": self.keeper.run_renewal,
            "notifier": self.notify.run,
            "health": lambda: self.health.run(self._wake.set),
            "wakeups": self._wakeup_loop,
        }
        if self.keeper.peer_client is not None:
            wanted["peer_heartbeat"] = self.keeper.run_heartbeat
        if self.vip is not None:
            vip = self.vip
            # Gratuitous ARP again and again while primary (design §5).
            wanted["vip_refresh"] = lambda: vip.run_refresh(
                lambda: acts_as_primary(self.ha, self.clock())
            )
        if self.pstn is not None:
            wanted["rseries_heartbeat"] = self._rseries_heartbeat
            wanted["rseries_notes"] = self._rseries_notes
        if self._stop.is_set():
            return  # stopped while starting
        try:
            async with asyncio.TaskGroup() as group:
                owned = [
                    group.create_task(
                        _essential(name, make) if name in ESSENTIAL else make(), name=name
                    )
                    for name, make in wanted.items()
                ]
                self.tasks = {task.get_name(): task for task in owned}
                await self._stop.wait()
                # SIGTERM on the primary: switch over first (bot.agent.stop), while the
                # cycle and the lease keeper still run.
                self._handed_over = (await self.stop_handover.run()).handed_over
                # The lease keeper goes on renewing while the services stop: a fence
                # that takes long (or fails) must not let the lease expire under it.
                for task in owned:
                    if task.get_name() not in LEASE_TASKS:
                        task.cancel()
                kicker = group.create_task(self._kick_while_stopping(), name="stop-watchdog")
                try:
                    await self._stop_services()
                finally:
                    kicker.cancel()
                    for task in owned:
                        task.cancel()
        except* Exception as failed:
            for exc in failed.exceptions:
                log.critical("a task ended unexpectedly: %r; stopping the agent", exc)
            self._exit_code = 1

    def stop(self) -> None:
        self._stop.set()

    def _job_done(self, kind: str) -> None:
        self._wake.set()
        if not kind.startswith("event-"):
            self.observer.probe_now.set()

    async def _open(self) -> None:
        try:
            await self.bus.connect()
        except BusError as exc:
            log.warning("Redis not reachable at start: %s", exc)
        self._session = aiohttp.ClientSession()
        cfg = self.cfg
        secrets = [cfg.cluster.secret_file, cfg.api.token_file, cfg.redis.password_file]
        secrets += [cfg.ami.secret_file] + [h.url_file for h in cfg.notify.webhooks]
        secrets += [cfg.ari.password_file] if cfg.ari is not None else []
        self.peer_server = self.peer_channel(self._session)
        app = create_app(
            view=NodeView(self.reporter, lambda: self.ha),
            controls=self.bus,
            peer=self.peer_server,
            registry=self.metrics.registry,
            token=cfg.api.token_file,
            nodes=[self.me, *cfg.peer_ids],
            secrets=secrets,
        )
        self._api_runner = await start_api(app, cfg.api.listen)
        if self.ami is not None:
            await self.ami.start()
        if self.link is not None:
            await self.link.start()
            if self.pstn is not None:
                self.jobs.start("rseries_configure", self._rseries_configure())
        self.events("start", f"{self.me} started (version {__version__})")

    def peer_channel(self, session: Any) -> PeerServer | None:
        """The peer channel's two ends: the keeper's client (heartbeats through
        ``session``) and the server that answers the peer's (returned)."""
        cfg = self.cfg
        if cfg.cluster.secret_file is None or not self.peer_id:
            return None
        peer = cfg.peer(self.peer_id)
        assert peer is not None
        self.keeper.peer_client = PeerClient(
            self.me,
            peer.id,
            peer.api,
            cfg.cluster.secret_file,
            session=session,
            lease_ttl=cfg.cluster.lease_ttl,
            timeout=min(0.5, cfg.cluster.renew_interval / 2),
            clock=self.clock,
        )
        return PeerServer(
            self.me,
            cfg.cluster.secret_file,
            peers=cfg.peer_ids,
            store=self.state_dir,
            may_promise=self.keeper.may_promise,
            lease_ttl=cfg.cluster.lease_ttl,
            clock=self.clock,
            outdate=self.drbd.outdate_self if self.drbd is not None else None,
        )

    async def run_core(self) -> None:
        """The decision core alone (no API, AMI, serial link or signals): the probe, the
        cycle, the lease keeper and the peer heartbeat, until stopped or cancelled.
        The property tests run it on model adapters in virtual time."""
        await self.observer.probe_once()
        await self._run_tasks()

    async def _stop_services(self) -> None:
        """Stop: fence (unless paused), then hand the lease over only if the fence is
        complete. Runs once, while the lease keeper still renews when it can."""
        if self._stopped_services:
            return
        self._stopped_services = True
        self._stopping = True  # alive and stopping: the watchdog is kicked meanwhile
        self.sd.stopping()
        paused = self.state_dir.paused or self.ha.role == "paused"
        await self.jobs.finish("event-", self.cfg.redis.timeout * 2)
        await self.jobs.cancel()
        if paused:
            log.info("paused: leaving services and the lease as they are")
            return
        # A bot that exits while not paused leaves nothing primary running (design §3).
        # It is a self-fence (alerted, counted) only if something primary-only still ran.
        try:
            found: FoundServices | None = await self.takeover.local_services()
        except Exception as exc:  # could not tell: count it as running
            log.warning("local services before the stop's fence: %s", exc)
            found = None
        limit = self.cfg.fence.escalate_after + SHUTDOWN_FENCE_GRACE
        fenced = await self.fencer.fence(
            "stopped",
            "the bot is stopping",
            deadline=self.fencer.clock() + limit,
            announce=fence_is_news(found),
        )
        own = self.keeper.own
        if own is not None and fenced:
            with contextlib.suppress(BusError):
                # A stop is planned: the peer arms no failover hold-down for it.
                await self.bus.release(own.epoch, next_node=self.peer_id, planned=True)
            self.keeper.drop()
        elif own is not None:
            # Never hand the lease to the peer while something may still run here:
            # it expires, and ExecStopPost's fence-local tries again.
            log.critical("stopping with the fence incomplete: the lease is left to expire")

    async def _kick_while_stopping(self, closing_for: float | None = None) -> None:
        """A stopping bot that is still fencing (or ending its jobs and checking what
        runs before it fences) is alive: keep the watchdog quiet. ``closing_for``: while
        it closes its connections, for at most that long besides a fence (a close that
        hangs longer is left to the watchdog)."""
        until = time.monotonic() + closing_for if closing_for is not None else None
        while True:
            closing = until is None or time.monotonic() < until
            if self.fencer.busy or (self._stopping and closing):
                self.sd.watchdog()
            await asyncio.sleep(max(0.1, self._watchdog_sec / 3) if self._watchdog_sec else 1.0)

    async def _shutdown(self) -> None:
        # Reached after the tasks stopped; on a task failure the services stop here.
        # Each step below is bounded; the bot stays alive for the watchdog meanwhile
        # (a busy host can take longer than WatchdogSec to close its connections).
        kicker = asyncio.create_task(
            self._kick_while_stopping(closing_for=SHUTDOWN_CLOSE_GRACE), name="shutdown-watchdog"
        )
        try:
            await self._close()
        finally:
            kicker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await kicker
        self.sd.close()

    async def _close(self) -> None:
        await self._stop_services()
        await self.jobs.finish("event-", self.cfg.redis.timeout * 2)
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

    # ------------------------------------------------------------------ the cycle

    async def _cycle_loop(self) -> None:
        while True:
            obs = await self.observer.observe(self.ha, self.inbox.take())
            now = self.clock()
            old_role = self.ha.role
            self.ha, actions, reason = step(self.ha, obs, now)
            if self.on_state is not None:
                self.on_state(self.ha)
            self.reporter.observed(self.ha, obs)
            if reason_changed(self._last_reason, reason):
                log.info("%s", reason)
            self._last_reason = reason
            self.reporter.track_role(self.ha, old_role, reason)
            for action in actions:
                self.executor.execute(action)
            self.reporter.update_metrics(self.ha, now)
            await self.reporter.publish_record(self.ha)
            self._kick_watchdog(now)
            if not self._ready_sent:
                # Ready (and the watchdog armed) after the first decision, not before the
                # start-up work: on a loaded host that outlasts a short profile's WatchdogSec.
                self.sd.ready(f"{self.me}: {self.ha.role}")
                self._ready_sent = True
            self._wake.clear()
            # Wake at least every renew_interval, so that a short lease still gets a
            # watchdog kick in time; and right at the next instant rule 5 can change.
            wait = min(CYCLE_INTERVAL, self.cfg.cluster.renew_interval)
            deadline = (
                None if is_holder(self.ha) else next_deadline(self.ha, obs.promise_given_until, now)
            )
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - self.clock()) + DEADLINE_SLACK)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    def _kick_watchdog(self, now: float) -> None:
        if watchdog_due(self.ha, now, fencing=self.fencer.busy or self.fencer.incomplete):
            self.sd.watchdog()

    # ------------------------------------------------------------------ R-Series and wake-ups

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
            ready=lambda: self.observer.ready[0],
            paused=lambda: self.ha.role == "paused",
        )

    async def _rseries_notes(self) -> None:
        assert self.pstn is not None
        causes = {
            "watchdog": "WATCHDOG",
            "button": "BUTTON",
            "poweron": "POWERON",
            "command": "COMMAND",
        }
        async for note in self.pstn.observations():
            cause = causes.get(note.kind)
            self.events("rseries", f"appliance: {note.line}", active=note.active)
            if cause is not None:
                self.inbox.rseries_notification = RSeriesNotification(
                    cause,  # type: ignore[arg-type]
                    note.active or "",
                )
                self._wake.set()

    async def _wakeup_loop(self) -> None:
        while True:
            try:
                async for _ in self.bus.wakeups():
                    self._wake.set()
            except BusError as exc:
                log.debug("wake-up channel: %s", exc)
            await asyncio.sleep(1.0)


def watchdog_due(ha: HaState, now: float, *, fencing: bool) -> bool:
    """May this cycle kick the watchdog? (design §3, "Stalls and supervision")

    After each cycle that ends with a valid lease or promise, and after each
    non-holder cycle; also while fencing (alive, and busy with the opposite of
    serving). A stricter holder rule, ``now + WatchdogSec <= valid_until -
    fence_budget``, was tried and killed healthy primaries in the lab: with Redis
    unreachable a cycle takes about a second, longer than that window.
    """
    if not is_holder(ha) or ha.role == "paused" or fencing:
        return True
    return acts_as_primary(ha, now)


async def _essential(name: str, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    await make()
    raise RuntimeError(f"task {name} ended")


async def run_agent(cfg: Config) -> int:
    agent = Agent(cfg)
    return await agent.run()
