"""The ARI client against a real Asterisk: ping, an originate into Stasis, its hang-up."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest

from ami.ari import AriClient
from ami.ari_simulator import NOT_FOUND_PAGE
from ami.errors import AmiActionError, AmiAuthError
from bot.lab.asterisk import Runtime
from tests.asterisk.conftest import MakeAsterisk
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)


async def test_ping_originate_into_stasis_and_hang_up(make_asterisk: MakeAsterisk) -> None:
    # The shipped "failover" user is read-only; originating needs a user that may write.
    asterisk = make_asterisk(ari_user="lab-writer")
    ari = AriClient(asterisk.ari_url, asterisk.ari_user, asterisk.ari_password, timeout=5.0)
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in ari.events():
            events.append(event)

    task = asyncio.create_task(consume())
    try:
        await wait_for(lambda: _pings(ari), 15, what="ARI ping")  # 404 until res_ari loads
        rtt = await ari.ping()
        assert 0 <= rtt < 5
        await wait_for(lambda: ari.ws_connected, 10, what="the events websocket")
        channel = await ari.originate("Local/hold@lab", timeout=10)
        cid = channel["id"]
        await wait_for(
            lambda: any(_is(e, "StasisStart", cid) for e in events), 15, what="StasisStart"
        )
        await ari.hangup(cid)
        await wait_for(lambda: any(_is(e, "StasisEnd", cid) for e in events), 15, what="StasisEnd")
        assert any(_is(e, "ChannelDestroyed", cid) for e in events) or await _gone(ari, cid)
    finally:
        await ari.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_http_404_page_is_the_simulators(asterisk: Runtime) -> None:
    """The page a booting Asterisk answers for /ari (no handler yet) is the one the ARI
    simulator sends while booting: checked on a path no module ever registers."""
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{asterisk.http_port}/no-such-handler"
        await wait_for(lambda: _http_up(session, url), 15, what="the HTTP server")
        async with session.get(url) as resp:
            assert resp.status == 404
            assert resp.headers["Content-Type"] == "text/html"
            assert await resp.text() == NOT_FOUND_PAGE


async def _http_up(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as resp:
            return resp.status > 0
    except aiohttp.ClientError:
        return False


async def test_wrong_ari_password_is_refused(asterisk: Runtime) -> None:
    ari = AriClient(asterisk.ari_url, asterisk.ari_user, "wrong-password", timeout=5.0)
    try:
        await wait_for(lambda: _not_404(ari), 15, what="ARI up")
        with pytest.raises(AmiAuthError, match="refused"):
            await ari.ping()
    finally:
        await ari.close()


async def _not_404(ari: AriClient) -> bool:
    try:
        await ari.ping()
    except AmiAuthError:
        return True
    except AmiActionError:
        return False
    return True


async def _pings(ari: AriClient) -> bool:
    try:
        await ari.ping()
    except AmiActionError:
        return False
    return True


def _is(event: dict[str, Any], kind: str, channel_id: str) -> bool:
    return event.get("type") == kind and event.get("channel", {}).get("id") == channel_id


async def _gone(ari: AriClient, channel_id: str) -> bool:
    try:
        await ari.hangup(channel_id)
    except AmiActionError as exc:
        return "404" in str(exc)
    return False
