"""A stop of the primary's bot (SIGTERM: `systemctl stop`, a reboot) hands over first.

Like a cluster manager that moves resources away before it stops a node: if the
primary's bot is asked to stop while not paused, it asks for a planned switchover
to the peer (calls drained up to ``cluster.stop_drain_timeout``) and waits until
its own demotion is done and the lease released to the peer. Then it exits with
nothing primary-only left running, and ``fence-local`` finds nothing to do.

If the peer is not ready (the HA loop refuses the switchover), Redis cannot take
the request, or the hand-over does not finish in time, the stop goes on as before:
the failure is logged and alerted, and the node fences itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bot.bus import BusError

if TYPE_CHECKING:
    from bot.agent import Agent

log = logging.getLogger(__name__)

POLL = 0.1  # the HA cycle runs every 0.2 s, and on every change
# Beyond the drain: Asterisk stop, floating IP down, DRBD demote, lease release.
DEMOTE_MARGIN = 15.0

VITAL_TASKS = ("cycle", "renewal", "probe")  # without them the hand-over cannot finish safely

Progress = Literal["waiting", "handed_over", "refused"]


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
    cleared while this node stayed primary was refused (peer not ready)."""
    if role in ("standby", "cordoned", "failed") and not holds_lease:
        return "handed_over"
    if role == "primary" and request_seen and not request_pending:
        return "refused"
    return "waiting"


@dataclass
class Outcome:
    handed_over: bool
    detail: str


async def hand_over_before_stop(agent: Agent) -> Outcome:
    """Run by the agent after SIGTERM, before it shuts down; never raises."""
    try:
        return await _hand_over(agent)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the stop must go on: fence as before
        log.exception("hand-over before stop failed")
        return _give_up(agent, f"hand-over failed: {exc!r}")


async def _hand_over(agent: Agent) -> Outcome:
    if agent._exit_code != 0:
        return Outcome(False, "the agent failed")  # its loops may be dead: fence at once
    paused = agent.state_dir.paused or agent.ha.role == "paused"
    why_not = skip_reason(agent.ha.role, paused, agent.peer_id)
    if why_not is not None:
        log.info("stopping: %s", why_not)
        return Outcome(False, why_not)
    peer = agent.peer_id
    assert peer is not None
    drain = agent.cfg.cluster.stop_drain_timeout
    request_id = "stop-" + uuid.uuid4().hex[:8]
    try:
        await agent.bus.request_switchover(peer, drain, request_id=request_id)
    except BusError as exc:
        return _give_up(agent, f"cannot ask for a switchover (Redis: {exc})")
    agent.events(
        "stop_handover",
        f"stopping: handing over to {peer} first (calls drained up to {drain:g} s)",
        alert=True,
    )
    deadline = time.monotonic() + drain + DEMOTE_MARGIN
    # The loop's reads of the bus: after two new ones, one began after our request.
    last_read, reads = agent.observer.last_lease, 0
    seen = False
    why = "peer not ready"
    while True:
        dead = [n for n in VITAL_TASKS if (task := agent.tasks.get(n)) is None or task.done()]
        if dead:  # the loop that renews or acts is gone: fence now, as without a hand-over
            await _clear(agent, request_id)
            return _give_up(agent, f"task {dead[0]} ended during the hand-over")
        if agent.observer.last_lease is not last_read:
            last_read, reads = agent.observer.last_lease, reads + 1
        controls = agent.observer.controls
        switchover = controls.switchover if controls is not None else None
        mine = switchover is not None and switchover.request_id == request_id
        seen = seen or mine or reads >= 2 or agent.ha.role == "demoting"
        if "refused" in agent._last_reason:
            why = agent._last_reason
        state = progress(agent.ha.role, agent.keeper.own is not None, seen, mine)
        if state == "handed_over":
            left = "nothing to fence"
            local = agent.observer.local
            if local.vip_present or local.asterisk_running or local.drbd_primary:
                left = "fencing what the demotion left"
            agent.events("stop_handover", f"stopping: handed over to {peer}; {left}")
            return Outcome(True, f"handed over to {peer}")
        if state == "refused":
            return _give_up(agent, f"switchover refused ({why})")
        if time.monotonic() >= deadline:
            await _clear(agent, request_id)
            limit = drain + DEMOTE_MARGIN
            return _give_up(agent, f"hand-over to {peer} not done after {limit:g} s")
        await asyncio.sleep(POLL)


async def _clear(agent: Agent, request_id: str) -> None:
    try:
        await agent.bus.clear_switchover(request_id)
    except BusError as exc:
        log.warning("could not clear the stop's switchover request: %s", exc)


def _give_up(agent: Agent, why: str) -> Outcome:
    message = f"stopping without a hand-over: {why}; fencing this node"
    log.error("%s", message)
    agent.events("stop_handover", message, alert=True)
    return Outcome(False, why)
