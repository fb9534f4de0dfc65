"""The cluster bus on Redis: lease with fencing epoch, node records, controls, events."""

from bot.bus.client import Bus
from bot.bus.errors import BusCorrupt, BusError, BusUnavailable, MarkedOutdated
from bot.bus.model import (
    Controls,
    Keys,
    Lease,
    LeaseGrant,
    LeaseRead,
    NodeRecord,
    RenewResult,
    Switchover,
)

__all__ = [
    "Bus",
    "BusCorrupt",
    "BusError",
    "BusUnavailable",
    "Controls",
    "Keys",
    "Lease",
    "LeaseGrant",
    "LeaseRead",
    "MarkedOutdated",
    "NodeRecord",
    "RenewResult",
    "Switchover",
]
