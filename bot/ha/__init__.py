"""The HA state machine (design sections 3 and 4), pure: no I/O, no clock reads."""

from bot.ha.lease import (
    holder_valid_until,
    lease_valid_until,
    may_promise,
    next_deadline,
    renewal_decision,
)
from bot.ha.machine import acts_as_primary, is_holder, primary_until, step
from bot.ha.table import TRANSITIONS, render_roles_md
from bot.ha.types import (
    ROLES,
    Action,
    ControlsView,
    HaConfig,
    HaState,
    LeaseView,
    LocalServices,
    Observation,
    OwnLease,
    PeerView,
    Role,
    RSeriesNotification,
)

__all__ = [
    "ROLES",
    "TRANSITIONS",
    "Action",
    "ControlsView",
    "HaConfig",
    "HaState",
    "LeaseView",
    "LocalServices",
    "Observation",
    "OwnLease",
    "PeerView",
    "RSeriesNotification",
    "Role",
    "acts_as_primary",
    "holder_valid_until",
    "is_holder",
    "lease_valid_until",
    "may_promise",
    "next_deadline",
    "primary_until",
    "render_roles_md",
    "renewal_decision",
    "step",
]
