"""This node's own outdated marks, reconciled with what DRBD says (design §4, "Ready").

The peer's fence-peer handler marks this node's data outdated (on the bus, and in
the state directory over the peer channel); DRBD's ``after-resync-target``
handler clears the marks once the data is resynchronised. That handler runs once:
if Redis is unreachable just then, nothing clears the bus mark again and the node
stays not ready for good (no takeover when the primary's host dies). So the agent
clears its own marks whenever every resource is UpToDate and Connected. The mark is
read before DRBD is, and cleared only if it is still the one read: a link that
broke again meanwhile has written a newer mark, which stays.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from bot.actions.drbd import Drbd, ResourceState
from bot.actions.errors import ActionError
from bot.agent.events import Events
from bot.bus import Bus, BusError
from bot.state import StateError

log = logging.getLogger(__name__)


def in_sync(states: Iterable[ResourceState]) -> bool:
    """Every resource UpToDate and connected to its peer (and at least one resource)."""
    states = list(states)
    return bool(states) and all(
        s.disk == "UpToDate" and s.connection == "Connected" for s in states
    )


class MarkReconciler:
    def __init__(self, me: str, *, bus: Bus, drbd: Drbd, events: Events) -> None:
        self.me = me
        self.bus = bus
        self.drbd = drbd
        self.events = events

    async def check(self) -> list[str]:
        """Clear this node's marks if its data is in sync; returns where it cleared one.
        Any error leaves the marks as they are (not ready: the safe side)."""
        cleared: list[str] = []
        try:
            seen = await self.bus.outdated_mark(self.me)
            synced = seen is not None and in_sync(await self.drbd.states())
            if seen is not None and synced and await self.bus.clear_outdated_mark(self.me, seen):
                cleared.append("cluster bus")
            if await self.drbd.clear_mark_if_in_sync(in_sync):
                cleared.append("state directory")
        except (BusError, ActionError, StateError) as exc:
            log.warning("outdated mark not reconciled: %s", exc)
        if cleared:
            self.events(
                "drbd_unfenced",
                f"{self.me}: DRBD UpToDate and connected: outdated mark cleared "
                f"({' and '.join(cleared)})",
            )
        return cleared
