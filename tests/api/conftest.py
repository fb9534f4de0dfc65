from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter

from bot.api import bound_port, create_app, start_api
from bot.config import Secret
from bot.peer import PeerServer
from tests.api.fakes import FakeView, FilePromiseStore, ManualClock, RecordingControls

TOKEN = "tok-3f9a1c7e5b2d"
CLUSTER_SECRET = "cluster-secret-8e7d6c5b4a"


@dataclass
class Api:
    url: str
    session: aiohttp.ClientSession
    view: FakeView
    controls: RecordingControls
    store: FilePromiseStore
    peer: PeerServer
    boot: ManualClock
    wall: ManualClock
    refusal: list[str | None] = field(default_factory=lambda: [None])
    extra: dict[str, Any] = field(default_factory=dict)

    def auth(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    view = FakeView("a")
    controls = RecordingControls()
    store = FilePromiseStore(tmp_path / "promise.json")
    boot, wall = ManualClock(500.0), ManualClock(1_700_000_000.0)
    refusal: list[str | None] = [None]
    peer = PeerServer(
        "a",
        Secret(CLUSTER_SECRET, "test"),
        peers=["b"],
        store=store,
        may_promise=lambda node, epoch: refusal[0],
        lease_ttl=3.0,
        clock=boot,
        wall_clock=wall,
        max_skew=30.0,
    )
    registry = CollectorRegistry()
    Counter("failoverbot_test_things", "A test counter.", registry=registry).inc(3)
    app = create_app(
        view=view,
        controls=controls,
        peer=peer,
        registry=registry,
        token=Secret(TOKEN, "test"),
        nodes=["a", "b"],
        secrets=[Secret(CLUSTER_SECRET, "test")],
        sse_keepalive=0.2,
    )
    runner = await start_api(app, "127.0.0.1:0")
    url = f"http://127.0.0.1:{bound_port(runner)}"
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            yield Api(url, session, view, controls, store, peer, boot, wall, refusal)
        finally:
            await runner.cleanup()
