"""The observer: probes what runs here and reads the bus into one ``Observation`` per cycle.

Local services and readiness run commands, so they are probed in a task of
their own (every second and after every job), not in the cycle: a cycle costs a
few Redis reads and reacts within milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from bot.actions.drbd import Drbd
from bot.actions.takeover import FoundServices, Takeover
from bot.agent.datamark import MarkReconciler, in_sync
from bot.agent.fencer import Fencer
from bot.agent.inbox import Inbox
from bot.agent.lease import LeaseKeeper
from bot.bus import Bus, BusError, Controls, LeaseRead, NodeRecord
from bot.ha import (
    ControlsView,
    HaState,
    LeaseView,
    LocalServices,
    Observation,
    PeerView,
)
from bot.health import Verdict
from bot.healthmon import HealthMonitor
from bot.metrics import Metrics
from bot.state import StateDir

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0  # local services and readiness (commands), also after every action


class Observer:
    def __init__(
        self,
        *,
        me: str,
        peer_id: str | None,
        bus: Bus,
        takeover: Takeover,
        drbd: Drbd | None,
        health: HealthMonitor,
        keeper: LeaseKeeper,
        fencer: Fencer,
        state_dir: StateDir,
        metrics: Metrics,
        ami_configured: bool,
        routed_at: Callable[[], float | None],
        started_at: float,
        failed_holddown: float,
        marks: MarkReconciler | None = None,
    ) -> None:
        self.me = me
        self.peer_id = peer_id
        self.bus = bus
        self.takeover = takeover
        self.drbd = drbd
        self.health = health
        self.keeper = keeper
        self.fencer = fencer
        self.state_dir = state_dir
        self.metrics = metrics
        self.ami_configured = ami_configured
        self.routed_at = routed_at
        self.started_at = started_at
        self.failed_holddown = failed_holddown
        self.marks = marks
        self.probe_now = asyncio.Event()
        # What the last cycle saw; the reporter and the executor read these.
        self.last_lease: LeaseRead | None = None
        self.records: dict[str, NodeRecord] = {}
        self.controls: Controls | None = None
        self.redis_ok = False
        self.outdated_on_bus = False
        # node -> (wall time, role) of its last record read: outlives the record's expiry
        self.seen: dict[str, tuple[float, str | None]] = {}
        self.drbd_states: list[dict[str, str]] = []
        self.verdict = Verdict(True)
        self.ready: tuple[bool, list[str]] = (False, ["not checked yet"])
        self.local = FoundServices(vip_present=None, asterisk_running=None, drbd_primary=None)

    # ------------------------------------------------------------------ probes

    async def run_probes(self) -> None:
        while True:
            self.probe_now.clear()
            await self.probe_once()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_INTERVAL):
                    await self.probe_now.wait()

    async def probe_once(self) -> None:
        began = self.health.clock()
        local_r, ready_r, drbd_r = await asyncio.gather(
            self.takeover.local_services(),
            self._readiness(),
            self.drbd.states() if self.drbd is not None else _nothing(),
            return_exceptions=True,
        )
        if isinstance(drbd_r, list):
            for res in drbd_r:
                self.metrics.set_drbd(res.name, role=res.role, disk_state=res.disk)
            self.drbd_states = [
                {"name": r.name, "role": r.role, "disk": r.disk, "connection": r.connection}
                for r in drbd_r
            ]
            marked = self.outdated_on_bus or (self.drbd is not None and self.drbd.local_mark())
            if self.marks is not None and marked and in_sync(drbd_r):
                await self.marks.check()
        if not isinstance(local_r, BaseException):
            self.local = local_r
            # The status command's answer is also the health monitor's process check.
            self.health.note_process(local_r.asterisk_running, began)
        else:
            log.warning("local service probe failed: %s", local_r)
        if not isinstance(ready_r, BaseException):
            self.ready = ready_r
        else:
            log.warning("readiness probe failed: %s", ready_r)

    async def _readiness(self) -> tuple[bool, list[str]]:
        return await self.takeover.readiness(
            self.outdated_on_bus, ami_configured=self.ami_configured
        )

    # ------------------------------------------------------------------ one observation

    async def observe(self, ha: HaState, inbox: Inbox) -> Observation:
        t0 = time.monotonic()
        lease_r, controls_r, records_r = await asyncio.gather(
            self.bus.read_lease(),
            self.bus.controls(),
            self.bus.node_records(),
            return_exceptions=True,
        )
        lease_read = lease_r if isinstance(lease_r, LeaseRead) else None
        if lease_read is not None:
            self.last_lease = lease_read
            self.metrics.redis_rtt.set(time.monotonic() - t0)
            if lease_read.lease is not None:
                # Every epoch seen, whoever holds it, is remembered across restarts: a
                # Redis that restarts empty with this bot must not hand it out again.
                self.state_dir.record_epoch(lease_read.lease.epoch)
        elif isinstance(lease_r, BusError):
            log.debug("lease read failed: %s", lease_r)
        self.redis_ok = lease_read is not None
        controls = controls_r if isinstance(controls_r, Controls) else None
        if controls is not None:
            self.controls = controls
            self.outdated_on_bus = self.me in controls.outdated
        if isinstance(records_r, dict):
            self.records = records_r
            self.seen.update(
                {k: (r.last_seen, r.role) for k, r in records_r.items() if r.last_seen > 0}
            )
        self.verdict = verdict = self.health.verdict(ha.role, self.routed_at())
        peer_rec = self.peer_record()
        keeper = self.keeper
        peer_view = PeerView(
            node_id=self.peer_id,
            role=peer_rec.role if peer_rec else None,
            healthy=bool(peer_rec and peer_rec.healthy),
            ready=bool(peer_rec and peer_rec.ready),
            reachable=peer_rec is not None or keeper.peer_reachable,
            epoch=peer_rec.epoch if peer_rec else None,
            test_call_failed=last_test_call_failed(peer_rec, self.failed_holddown),
            promise_valid_until=keeper.promise_until,
        )
        services = services_view(
            self.local, vip=self.takeover.vip is not None, drbd=self.drbd is not None
        )
        ready, ready_reasons = self.ready
        if self.fencer.incomplete:
            ready, ready_reasons = False, [*ready_reasons, "fence incomplete"]
        return Observation(
            lease=lease_view(lease_read) if lease_read is not None else None,
            lease_read_ok=lease_read is not None and controls is not None,
            redis_run_id=lease_read.run_id if lease_read is not None else None,
            own_lease=keeper.granted,
            renew_result=inbox.renew_result,
            acquire_result=inbox.acquire_result,
            healthy=verdict.healthy,
            health_reasons=tuple(verdict.reasons),
            ready=ready,
            ready_reasons=tuple(ready_reasons),
            peer=peer_view,
            promise_given_until=self.state_dir.promise_until(),
            controls=controls_view(controls),
            local_services=services,
            takeover_result=inbox.takeover_result,
            demote_result=inbox.demote_result,
            restart_result=inbox.restart_result,
            rseries_notification=inbox.rseries_notification,
            active_calls=self.health.active_calls,
            started_at=self.started_at,
            persisted_epoch=self.state_dir.held_epoch,
            persisted_paused=self.state_dir.paused,
        )

    def peer_record(self) -> NodeRecord | None:
        return self.records.get(self.peer_id) if self.peer_id else None


def last_test_call_failed(record: NodeRecord | None, within: float) -> bool:
    """Did the node's last test call fail, ``within`` seconds before its record was written?

    Both times are the writer's own wall clock, so the two nodes' clocks never meet.
    """
    if record is None:
        return False
    asterisk = record.extra.get("asterisk")
    if not isinstance(asterisk, dict):
        return False
    last, at = asterisk.get("last_test_call"), asterisk.get("last_test_call_at")
    if not isinstance(last, dict) or not isinstance(at, int | float):
        return False
    return last.get("outcome") != "answered" and 0.0 <= record.last_seen - at <= within


def services_view(found: FoundServices, *, vip: bool, drbd: bool) -> LocalServices:
    """The probe's findings as the HA step reads them: a configured service whose probe
    could not tell (None) is named unknown, never taken for "not running"."""
    probed = {
        "vip": found.vip_present if vip else False,
        "asterisk": found.asterisk_running,
        "drbd_primary": found.drbd_primary if drbd else False,
    }
    return LocalServices(
        vip=probed["vip"] if vip else None,
        asterisk=probed["asterisk"],
        drbd_primary=probed["drbd_primary"] if drbd else None,
        unknown=tuple(name for name, value in probed.items() if value is None),
    )


async def _nothing() -> None:
    return None


def lease_view(read: LeaseRead) -> LeaseView:
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
        released_planned=lease.planned,
        pttl=read.pttl_ms / 1000.0 if read.pttl_ms is not None else None,
        expires_not_before=not_before,
    )


def controls_view(ctl: Any) -> ControlsView:
    if ctl is None:
        return ControlsView()
    sw = ctl.switchover
    return ControlsView(
        paused=ctl.paused,
        cordoned=frozenset(ctl.cordoned),
        failed=frozenset(ctl.failed),
        switchover_to=sw.target if sw is not None else None,
        switchover_drain=sw.drain_timeout if sw is not None else 0.0,
        switchover_id=sw.request_id if sw is not None else None,
        outdated=frozenset(ctl.outdated),
    )
