"""Test doubles for the agent's side of the API (the agent owns the real ones)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any


class FakeView:
    """A node view whose role, health and status the test sets, with live events."""

    def __init__(self, node_id: str = "a") -> None:
        self.node_id = node_id
        self.current_role = "standby"
        self.healthy = True
        self.reasons: list[str] = []
        self.state: dict[str, Any] = {"holder": None, "epoch": 0, "nodes": []}
        self._subscribers: list[asyncio.Queue[dict[str, Any] | None]] = []

    def role(self) -> str:
        return self.current_role

    def health(self) -> tuple[bool, list[str]]:
        return self.healthy, list(self.reasons)

    def status(self) -> dict[str, Any]:
        return self.state

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def subscribe_events(self) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            self._subscribers.remove(queue)

    def publish(self, event: dict[str, Any]) -> None:
        for q in self._subscribers:
            q.put_nowait(event)

    def end_streams(self) -> None:
        for q in self._subscribers:
            q.put_nowait(None)


class RecordingControls:
    """Records every intent; ``fail_with`` makes the bus refuse."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.events: list[tuple[str, str, dict[str, object]]] = []
        self.fail_with: BaseException | None = None

    def _check(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    async def request_switchover(self, target: str, drain_timeout: float) -> None:
        self._check()
        self.calls.append(("switchover", target, drain_timeout))

    async def set_paused(self, paused: bool) -> None:
        self._check()
        self.calls.append(("paused", paused))

    async def set_cordon(self, node: str, on: bool) -> None:
        self._check()
        self.calls.append(("cordon", node, on))

    async def set_failed(self, node: str, until_wall: float | None) -> None:
        self._check()
        self.calls.append(("failed", node, until_wall))

    async def append_event(self, kind: str, message: str, **fields: object) -> None:
        self.events.append((kind, message, fields))


class FilePromiseStore:
    """A promise file written with fsync, like the state directory does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.given: list[tuple[str, float]] = []

    def give_promise(self, peer: str, until_boottime: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"peer": peer, "until": until_boottime}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.given.append((peer, until_boottime))

    async def give_promise_off_loop(self, peer: str, until_boottime: float) -> None:
        await asyncio.to_thread(self.give_promise, peer, until_boottime)

    def promise_until(self) -> float | None:
        if not self.path.exists():
            return None
        return float(json.loads(self.path.read_text())["until"])


class ManualClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
