"""The floating IP is announced at every takeover, even when the address is already there."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import replace
from pathlib import Path

from bot.actions.vip import Vip
from harness.fakes import FakeWorld
from tests.actions.helpers import make_config
from tests.helpers import wait_for


async def test_up_announces_even_when_the_address_is_already_present(
    tmp_path: Path, world: FakeWorld
) -> None:
    cfg = make_config(tmp_path)
    assert cfg.vip is not None
    vip = Vip(cfg.vip)
    assert await vip.up() is True
    await vip.wait_announced()
    first = len(world.calls("arping"))
    assert first >= 1
    assert await vip.up() is False  # already there (an earlier takeover, a crash)
    await vip.wait_announced()
    assert len(world.calls("arping")) > first, "no gratuitous ARP for a present address"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for this purpose: it announces nothing.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return False
    return True


async def test_down_ends_the_refresh_burst_and_its_running_arping(
    tmp_path: Path, world: FakeWorld
) -> None:
    """After the fence no gratuitous ARP for the old MAC: a re-announcement in flight
    (its arping running) is ended by ``down``, and none starts after it."""
    cfg = make_config(tmp_path)
    assert cfg.vip is not None
    # A burst of 5 packets a second apart: its arping may run for 5 s + ARPING_WAIT.
    vip = Vip(replace(cfg.vip, refresh_interval=0.05, arp_count=5, arp_interval=1.0))
    assert await vip.up() is True
    await vip.wait_announced()
    before = len(world.calls("arping"))
    world.set_fault("arping", sleep=30)  # a burst that is still sending
    refresh = asyncio.create_task(vip.run_refresh(lambda: True))
    try:
        await wait_for(lambda: len(world.calls("arping")) > before, 10, what="a refresh arping")
        [running] = world.calls("arping")[before:]
        assert alive(int(running["pid"]))
        assert await vip.down() is True
        # Ended by the removal, not by its own limit (8 s).
        await wait_for(lambda: not alive(int(running["pid"])), 2, what="the arping to end")
        # The refresh goes on (it is the agent's task) but announces nothing more until
        # the address is up here again.
        seen = len(world.calls("arping"))
        await asyncio.sleep(10 * 0.05)  # ten refresh periods: a span of time, not a sync
        assert len(world.calls("arping")) == seen, "announced after the address was removed"
        assert not refresh.done()
        world.clear_faults()
        assert await vip.up() is True
        await wait_for(lambda: len(world.calls("arping")) > seen + 1, 10, what="announced again")
    finally:
        refresh.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresh
        await vip.aclose()
