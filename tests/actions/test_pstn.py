"""The PSTN policy: route verification, configuration, heartbeat rule, observations."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bot.actions.errors import PstnError
from bot.actions.pstn import Pstn, heartbeat_wanted, observation_from
from bot.config import RSeriesConfig
from tests.actions.helpers import Journal, LinkStandIn


def pstn(link: LinkStandIn, **kw: object) -> Pstn:
    return Pstn(RSeriesConfig(port="/dev/null", **kw), "B", link)  # type: ignore[arg-type]


async def test_route_is_verified() -> None:
    journal = Journal()
    await pstn(LinkStandIn(journal)).route_here()
    assert [w for _, w in journal.entries] == ["route B"]
    with pytest.raises(PstnError, match="ACTIVE=A"):
        await pstn(LinkStandIn(journal, answer="A")).route_here()
    with pytest.raises(PstnError, match="LOCKED"):
        await pstn(LinkStandIn(journal, fail=True)).route_here()


async def test_configure_sets_mode_and_watchdog() -> None:
    journal = Journal()
    await pstn(LinkStandIn(journal), mode="auto", watchdog=7.0).configure()
    await pstn(LinkStandIn(journal), watchdog=None).configure()
    assert [w for _, w in journal.entries] == ["mode auto", "wdt 7", "mode manual", "wdt None"]


def test_heartbeat_rule() -> None:
    assert heartbeat_wanted(primary=True, ready=False, standby_heartbeat=False)
    assert not heartbeat_wanted(primary=False, ready=True, standby_heartbeat=False)
    assert heartbeat_wanted(primary=False, ready=True, standby_heartbeat=True)
    assert not heartbeat_wanted(primary=False, ready=False, standby_heartbeat=True)


def test_notifications_become_observations() -> None:
    note = SimpleNamespace(active="B", cause="WATCHDOG", raw="! ACTIVE=B CAUSE=WATCHDOG")
    obs = observation_from(note, "B")
    assert (
        obs is not None and obs.kind == "watchdog" and obs.routed_here and obs.cause == "WATCHDOG"
    )
    button = observation_from(SimpleNamespace(active="A", cause="BUTTON"), "B")
    assert button is not None and button.operator_takeover and not button.routed_here
    poweron = observation_from(SimpleNamespace(active="A", cause="POWERON"), "A")
    assert poweron is not None and poweron.needs_reroute
    assert observation_from(SimpleNamespace(active=None, cause=None), "A") is None
