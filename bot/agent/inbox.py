"""Results that jobs and tasks hand to the next cycle, typed; each is read once."""

from __future__ import annotations

from dataclasses import dataclass, fields

from bot.ha.types import (
    AcquireResult,
    DemoteResult,
    RenewOutcome,
    RSeriesNotification,
    TakeoverResult,
)


@dataclass
class Inbox:
    renew_result: RenewOutcome | None = None
    acquire_result: AcquireResult | None = None
    takeover_result: TakeoverResult | None = None
    demote_result: DemoteResult | None = None
    restart_result: DemoteResult | None = None
    rseries_notification: RSeriesNotification | None = None

    def take(self) -> Inbox:
        """Everything posted since the last take, and an empty inbox."""
        taken = Inbox(**{f.name: getattr(self, f.name) for f in fields(self)})
        for f in fields(self):
            setattr(self, f.name, None)
        return taken
