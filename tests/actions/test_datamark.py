"""The agent clears its own outdated marks once DRBD says UpToDate and connected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.actions.drbd import Drbd
from bot.agent.datamark import MarkReconciler
from bot.bus import Bus
from bot.config import DrbdConfig, RedisConfig
from bot.state import DataMarks
from harness.fakes import FakeWorld, drbd_resource
from tests.helpers import RedisServer


class Recorded:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, kind: str, message: str, **_: Any) -> None:
        self.seen.append((kind, message))


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[Bus]:
    b = Bus(RedisConfig(url=redis_server.url, timeout=1.0), "t", "b")
    yield b
    await b.close()


def parts(tmp_path: Path, bus: Bus) -> tuple[MarkReconciler, DataMarks, Recorded]:
    marks = DataMarks(str(tmp_path / "state"))
    drbd = Drbd(DrbdConfig(resources=["r0"]), marks=marks)
    events = Recorded()
    return MarkReconciler("b", bus=bus, drbd=drbd, events=events), marks, events  # type: ignore[arg-type]


async def test_marks_cleared_when_up_to_date_and_connected(
    world: FakeWorld, bus: Bus, tmp_path: Path
) -> None:
    world.set_drbd({"r0": drbd_resource(disk="UpToDate", connected=True)})
    reconciler, marks, events = parts(tmp_path, bus)
    await bus.mark_outdated("b", by="a")
    marks.mark_outdated(by="a", resource="r0", at_wall=0.0, reason="a lost the link")
    assert await reconciler.check() == ["cluster bus", "state directory"]
    assert "b" not in (await bus.controls()).outdated and marks.outdated() is None
    assert [k for k, _ in events.seen] == ["drbd_unfenced"]
    assert await reconciler.check() == [] and len(events.seen) == 1  # nothing left to clear


@pytest.mark.parametrize(
    ("disk", "connected"), [("UpToDate", False), ("Outdated", True), ("Inconsistent", True)]
)
async def test_marks_kept_until_in_sync(
    world: FakeWorld, bus: Bus, tmp_path: Path, disk: str, connected: bool
) -> None:
    world.set_drbd({"r0": drbd_resource(disk=disk, connected=connected)})
    reconciler, marks, events = parts(tmp_path, bus)
    await bus.mark_outdated("b", by="a")
    marks.mark_outdated(by="a", resource="r0", at_wall=0.0, reason="a lost the link")
    assert await reconciler.check() == []
    assert "b" in (await bus.controls()).outdated and marks.outdated() is not None
    assert events.seen == []
