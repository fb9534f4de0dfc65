"""A node's last-seen time (and role) outlives its expiring record on the bus."""

from __future__ import annotations

import time

from bot.bus.model import NodeRecord
from tests.helpers import node_record


async def test_last_seen_survives_the_record(make_bus) -> None:  # type: ignore[no-untyped-def]
    a = make_bus("a")
    written = time.time() - 2.0
    rec: NodeRecord = node_record("a", "primary", last_seen=written, lease_view={"epoch": 3})
    await a.publish_node_record(rec)
    assert (await a.node_records())["a"].lease_view == {"epoch": 3}
    # The record expires (three lease times); the last-seen entry stays.
    await a._r.delete(a.keys.node("a"))
    assert await a.node_records() == {}
    assert await a.last_seen_times() == {"a": (written, "primary")}
    # A value that is not ours is skipped, not fatal.
    await a._r.hset(a.keys.seen, "zz", "garbage")
    assert await a.last_seen_times() == {"a": (written, "primary")}
