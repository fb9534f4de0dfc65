"""The event sink every part writes to: the local hub (SSE, status), webhooks, the bus log."""

from __future__ import annotations

import logging
import time
from typing import Any

from bot.agent.jobs import Jobs
from bot.bus import Bus, BusError
from bot.eventhub import EventHub
from bot.notify import Notifier

log = logging.getLogger(__name__)


class Events:
    def __init__(self, me: str, hub: EventHub, notify: Notifier, bus: Bus, jobs: Jobs) -> None:
        self.me = me
        self.hub = hub
        self.notify = notify
        self.bus = bus
        self.jobs = jobs

    def __call__(self, kind: str, message: str, *, alert: bool = False, **fields: Any) -> None:
        entry = {"kind": kind, "message": message, "node": self.me, "time": time.time(), **fields}
        self.hub.publish(entry)
        if alert:
            log.warning("%s: %s", kind, message)
            self.notify.notify(kind, message, {k: v for k, v in fields.items() if k != "steps"})
        if kind == "step" and not alert:
            log.info("%s", message)
        self.jobs.start(f"event-{id(entry)}", self._append(kind, message, fields))

    async def _append(self, kind: str, message: str, fields: dict[str, Any]) -> None:
        try:
            await self.bus.append_event(kind, message, **fields)
        except BusError as exc:
            log.warning("bus write failed: %s", exc)
