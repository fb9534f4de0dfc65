"""The floating IP is announced at every takeover, even when the address is already there."""

from __future__ import annotations

from pathlib import Path

from bot.actions.vip import Vip
from harness.fakes import FakeWorld
from tests.actions.helpers import make_config


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
