"""The PSTN path: route the R-Series spans here, configure the appliance, heartbeat.

The driver (``rseries.driver.RSeriesLink``) does the talking; this module holds
the policy: which host is ours, when to heartbeat, and what a notification
means for the HA loop (an observation, never an action: nobody promotes
without the lease).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from bot.actions.errors import PstnError
from bot.config import RSeriesConfig

log = logging.getLogger(__name__)


class ApplianceStateLike(Protocol):
    @property
    def active(self) -> str | None: ...


class NotificationLike(Protocol):
    @property
    def active(self) -> str | None: ...

    @property
    def cause(self) -> str | None: ...


class RSeriesLinkLike(Protocol):
    """The parts of ``rseries.driver.RSeriesLink`` used here."""

    @property
    def connected(self) -> bool: ...

    async def route(self, host: str, *, may_write: Callable[[], bool] | None = None) -> Any: ...

    async def status(self) -> Any: ...

    async def set_mode(self, mode: str) -> Any: ...

    async def set_watchdog(self, seconds: int | None) -> Any: ...

    def notifications(self) -> AsyncIterator[Any]: ...

    async def run_heartbeat(self, interval: float, enabled: Callable[[], bool]) -> None: ...


ObservationKind = Literal["watchdog", "button", "poweron", "command", "other"]


@dataclass(frozen=True)
class PstnObservation:
    """An appliance notification as the HA loop sees it."""

    kind: ObservationKind
    active: str | None  # the host the spans are on now
    routed_here: bool  # the spans are on this node's host port
    line: str  # for the event log
    cause: str = ""  # as the appliance sent it: WATCHDOG, BUTTON, POWERON, COMMAND, ...

    @property
    def needs_reroute(self) -> bool:
        """After a power cycle the primary routes the spans to itself again."""
        return self.kind == "poweron"

    @property
    def operator_takeover(self) -> bool:
        """A front-panel button press: pause the cluster and alert, never fight it."""
        return self.kind == "button"


def observation_from(notification: Any, host: str) -> PstnObservation | None:
    """Translate a driver notification; None for ones without a route change."""
    cause = (getattr(notification, "cause", None) or "").upper()
    active = getattr(notification, "active", None)
    if active is None and not cause:
        return None
    kinds: dict[str, ObservationKind] = {
        "WATCHDOG": "watchdog",
        "BUTTON": "button",
        "POWERON": "poweron",
        "COMMAND": "command",
    }
    kind = kinds.get(cause, "other")
    raw = getattr(notification, "raw", "") or f"! ACTIVE={active} CAUSE={cause}"
    return PstnObservation(
        kind=kind, active=active, routed_here=active == host, line=raw, cause=cause
    )


def heartbeat_wanted(
    *, primary: bool, ready: bool, standby_heartbeat: bool, paused: bool = False
) -> bool:
    """Heartbeat while primary; as standby only when configured and ready."""
    if paused:
        return primary
    return primary or (standby_heartbeat and ready)


class Pstn:
    def __init__(self, cfg: RSeriesConfig, host: str, link: RSeriesLinkLike) -> None:
        if host not in ("A", "B"):
            raise PstnError(f"node.rseries_host must be A or B, not {host!r}")
        self.cfg = cfg
        self.host = host
        self.link = link

    @property
    def connected(self) -> bool:
        return bool(getattr(self.link, "connected", False))

    @property
    def route_timeout(self) -> float:
        # ROUTE, a possible BUSY retry, and the verifying STATUS.
        return 4 * self.cfg.command_timeout

    async def configure(self) -> None:
        """Set the appliance's mode and watchdog from the configuration (at start)."""
        try:
            async with asyncio.timeout(3 * self.cfg.command_timeout):
                await self.link.set_mode(self.cfg.mode)
                wdt = None if self.cfg.watchdog is None else int(self.cfg.watchdog)
                await self.link.set_watchdog(wdt)
        except TimeoutError:
            raise PstnError("R-Series did not confirm mode and watchdog in time") from None
        except PstnError:
            raise
        except Exception as exc:  # RSeriesError: the driver's family
            raise PstnError(f"R-Series configuration failed: {exc}") from None

    async def route_here(self, *, may_write: Callable[[], bool] | None = None) -> None:
        """Route every span to this host; verified by the appliance's STATUS.

        ``may_write`` (the lease) is checked right before the ROUTE line is written."""
        try:
            async with asyncio.timeout(self.route_timeout):
                state = await self.link.route(self.host, may_write=may_write)
        except TimeoutError:
            raise PstnError(f"R-Series ROUTE {self.host}: no answer in time") from None
        except Exception as exc:
            raise PstnError(f"R-Series ROUTE {self.host} failed: {exc}") from None
        active = getattr(state, "active", None)
        if active != self.host:
            raise PstnError(f"R-Series reports ACTIVE={active} after ROUTE {self.host}")

    async def routed_here(self) -> bool:
        try:
            async with asyncio.timeout(2 * self.cfg.command_timeout):
                state = await self.link.status()
        except TimeoutError:
            raise PstnError("R-Series STATUS: no answer in time") from None
        except Exception as exc:
            raise PstnError(f"R-Series STATUS failed: {exc}") from None
        return bool(getattr(state, "active", None) == self.host)

    async def run_heartbeat(
        self,
        *,
        primary: Callable[[], bool],
        ready: Callable[[], bool],
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        """Heartbeat as long as the node wants to be the appliance's choice (runs until
        cancelled)."""

        def enabled() -> bool:
            return heartbeat_wanted(
                primary=primary(),
                ready=ready(),
                standby_heartbeat=self.cfg.standby_heartbeat,
                paused=paused(),
            )

        await self.link.run_heartbeat(self.cfg.heartbeat_interval, enabled)

    async def observations(self) -> AsyncIterator[PstnObservation]:
        async for notification in self.link.notifications():
            observation = observation_from(notification, self.host)
            if observation is not None:
                yield observation
