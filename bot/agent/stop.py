"""The stop: a SIGTERM of the primary's bot (`systemctl stop`, a reboot) hands over first.

Like a cluster manager that moves resources away before it stops a node: if the
primary's bot is asked to stop while not paused, it asks for a planned switchover
to the peer (calls drained up to ``cluster.stop_drain_timeout``) and waits until
its own demotion is done and the lease released to the peer. Then it exits with
nothing primary-only left running, and ``fence-local`` finds nothing to do.

If the peer is not ready (the HA step refuses the switchover), Redis cannot take
the request, the demotion fails or the hand-over does not finish in time, the stop
goes on as before: the failure is logged and alerted, and the node fences itself.

The loop owns this part and gives it what it reads (the HA state, the observer, the
lease keeper, its tasks); it knows nothing of the agent itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bot.actions.takeover import FoundServices
from bot.agent.events import Events
from bot.agent.lease import LeaseKeeper
from bot.agent.observer import Observer
from bot.bus import Bus, BusError
from bot.ha import HaState
from bot.ha.types import HANDOVER_BUDGET

log = logging.getLogger(__name__)

POLL = 0.1  # the HA cycle runs every 0.2 s, and on every change
# Beyond the drain: Asterisk stop, floating IP down, DRBD demote, lease release.
DEMOTE_MARGIN = HANDOVER_BUDGET

VITAL_TASKS = ("cycle", "renewal", "probe")  # without them the hand-over cannot finish safely

Progress = Literal["waiting", "handed_over", "refused", "failed"]


def skip_reason(role: str, paused: bool, peer: str | None) -> str | None:
    """Why a stop does not try a hand-over (None: it does)."""
    if paused:
        return "paused: services and lease stay as they are"
    if role != "primary":
        return f"not primary ({role}): nothing to hand over"
    if peer is None:
        return "no peer configured"
    return None


def progress(role: str, holds_lease: bool, request_seen: bool, request_pending: bool) -> Progress:
    """Where a stop's hand-over stands, from what the HA loop shows.

    ``request_seen``: the loop has read the bus since our switchover request;
    ``request_pending``: the request is still there. A request the loop read and
    cleared while this node stayed primary was refused (peer not ready). A node that
    ends ``failed`` did not hand over: its demotion failed, it fenced itself and left
    the lease to expire (the peer takes over as after a lost host)."""
    if role == "failed":
        return "failed"
    if role in ("standby", "cordoned") and not holds_lease:
        return "handed_over"
    if role == "primary" and request_seen and not request_pending:
        return "refused"
    return "waiting"


def fence_is_news(found: FoundServices | None) -> bool:
    """Is the stop's fence a self-fence to announce and count (``self_fence``,
    ``failoverbot_self_fences_total{stopped}``)? Only when something primary-only ran
    here right before it, or the probe could not tell. A standby's stop, or one after a
    complete hand-over, only checks that nothing runs, and says so."""
    return found is None or found.any_primary


@dataclass
class Outcome:
    handed_over: bool
    detail: str


class StopHandover:
    """The stop's hand-over to the peer, run by the loop after SIGTERM while its cycle
    and lease keeper still run."""

    def __init__(
        self,
        *,
        peer_id: str | None,
        drain: float,
        bus: Bus,
        events: Events,
        observer: Observer,
        keeper: LeaseKeeper,
        ha: Callable[[], HaState],
        last_reason: Callable[[], str],
        tasks: Callable[[], Mapping[str, asyncio.Task[Any]]],
        paused: Callable[[], bool],
        failed: Callable[[], bool],
    ) -> None:
        self.peer_id = peer_id
        self.drain = drain
        self.bus = bus
        self.events = events
        self.observer = observer
        self.keeper = keeper
        self.ha = ha
        self.last_reason = last_reason
        self.tasks = tasks
        self.paused = paused
        self.failed = failed

    async def run(self) -> Outcome:
        """Never raises (but for cancellation): the stop must go on, fencing as before."""
        try:
            return await self._hand_over()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("hand-over before stop failed")
            return self._give_up(f"hand-over failed: {exc!r}")

    async def _hand_over(self) -> Outcome:
        if self.failed():
            return Outcome(False, "the agent failed")  # its loops may be dead: fence at once
        role = self.ha().role
        why_not = skip_reason(role, self.paused() or role == "paused", self.peer_id)
        if why_not is not None:
            log.info("stopping: %s", why_not)
            return Outcome(False, why_not)
        peer = self.peer_id
        assert peer is not None
        request_id = "stop-" + uuid.uuid4().hex[:8]
        try:
            await self.bus.request_switchover(peer, self.drain, request_id=request_id)
        except BusError as exc:
            return self._give_up(f"cannot ask for a switchover (Redis: {exc})")
        self.events(
            "stop_handover",
            f"stopping: handing over to {peer} first (calls drained up to {self.drain:g} s)",
            alert=True,
        )
        deadline = time.monotonic() + self.drain + DEMOTE_MARGIN
        # The loop's reads of the bus: after two new ones, one began after our request.
        last_read, reads = self.observer.last_lease, 0
        seen = False
        why = "peer not ready"
        while True:
            tasks = self.tasks()
            dead = [n for n in VITAL_TASKS if (task := tasks.get(n)) is None or task.done()]
            if dead:  # the loop that renews or acts is gone: fence now, as without a hand-over
                await self._clear(request_id)
                return self._give_up(f"task {dead[0]} ended during the hand-over")
            if self.observer.last_lease is not last_read:
                last_read, reads = self.observer.last_lease, reads + 1
            controls = self.observer.controls
            switchover = controls.switchover if controls is not None else None
            mine = switchover is not None and switchover.request_id == request_id
            role = self.ha().role
            seen = seen or mine or reads >= 2 or role == "demoting"
            if "refused" in self.last_reason():
                why = self.last_reason()
            state = progress(role, self.keeper.own is not None, seen, mine)
            if state == "handed_over":
                left = "nothing to fence"
                local = self.observer.local
                if local.vip_present or local.asterisk_running or local.drbd_primary:
                    left = "fencing what the demotion left"
                self.events("stop_handover", f"stopping: handed over to {peer}; {left}")
                return Outcome(True, f"handed over to {peer}")
            if state == "refused":
                return self._give_up(f"switchover refused ({why})")
            if state == "failed":
                await self._clear(request_id)
                return self._give_up(f"the demotion failed ({self.last_reason()})")
            if time.monotonic() >= deadline:
                await self._clear(request_id)
                limit = self.drain + DEMOTE_MARGIN
                return self._give_up(f"hand-over to {peer} not done after {limit:g} s")
            await asyncio.sleep(POLL)

    async def _clear(self, request_id: str) -> None:
        try:
            await self.bus.clear_switchover(request_id)
        except BusError as exc:
            log.warning("could not clear the stop's switchover request: %s", exc)

    def _give_up(self, why: str) -> Outcome:
        message = f"stopping without a hand-over: {why}; fencing this node"
        log.error("%s", message)
        self.events("stop_handover", message, alert=True)
        return Outcome(False, why)
