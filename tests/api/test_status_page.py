"""The status page in a real headless Chromium, driven over the DevTools protocol."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bot.api import bound_port, create_app, start_api
from tests.api.cdp import CHROMIUM, Browser
from tests.api.fakes import FakeView, RecordingControls
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
)


def cluster(primary: str, standby: str, epoch: int) -> dict[str, Any]:
    def node(nid: str, role: str, host: str) -> dict[str, Any]:
        return {
            "id": nid,
            "role": role,
            "healthy": True,
            "ready": role == "standby",
            "cordoned": False,
            "last_seen_seconds": 0.4,
            "health_reasons": [],
            "ready_reasons": [] if role == "standby" else ["holds the lease"],
            "spans": {"1": "ok", "2": "ok"},
            "rseries": {"host": host, "link": "up"},
        }

    return {
        "cluster": "lab",
        "holder": primary,
        "epoch": epoch,
        "lease_remaining_seconds": 2.4,
        "paused": False,
        "nodes": [
            node("a", *(("primary", "A") if primary == "a" else ("standby", "A"))),
            node("b", *(("primary", "B") if primary == "b" else ("standby", "B"))),
        ],
        "rseries_active": "A",
        "last_takeover": {
            "outcome": "completed",
            "node": "a",
            "steps": [
                {"name": "rseries_route", "duration": 0.11, "ok": True},
                {"name": "drbd_promote", "duration": 0.62, "ok": True},
                {"name": "vip_up", "duration": 0.2, "ok": True},
                {"name": "asterisk_start", "duration": 0.9, "ok": True},
                {"name": "test_call", "duration": 1.3, "ok": True},
            ],
        },
        "events": [{"time": 1_700_000_000, "kind": "takeover", "message": "a is primary"}],
    }


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, FakeView]]:
    view = FakeView("a")
    view.state = cluster("a", "b", 7)
    app = create_app(
        view=view,
        controls=RecordingControls(),
        peer=None,
        registry=CollectorRegistry(),
        token=None,
    )
    runner = await start_api(app, "127.0.0.1:0")
    try:
        yield f"http://127.0.0.1:{bound_port(runner)}/", view
    finally:
        await runner.cleanup()


ROLES = (
    "Object.fromEntries([...document.querySelectorAll('[data-node]')]"
    ".map(n => [n.dataset.node, n.dataset.role]))"
)


async def test_page_shows_both_nodes_and_a_role_change_within_2s(
    served: tuple[str, FakeView], tmp_path: Path
) -> None:
    url, view = served
    async with Browser(tmp_path / "profile") as browser:
        await browser.navigate(url)

        async def roles() -> Any:
            return await browser.evaluate(ROLES)

        async def shows_both() -> bool:
            return await roles() == {"a": "primary", "b": "standby"}

        await wait_for(shows_both, within=10, what="both nodes on the page")
        text = await browser.evaluate("document.body.innerText")
        for expected in ("lease holder", "drbd_promote", "a is primary", "2.40 s", "completed"):
            assert expected in text
        # Live updates: the page holds an SSE subscription.
        await wait_for(lambda: view.subscribers == 1, within=5, what="the page's event stream")

        view.state = cluster("b", "a", 8)
        started = time.monotonic()
        view.publish({"kind": "role", "message": "b is primary", "time": 1_700_000_060})

        async def switched() -> bool:
            return await roles() == {"a": "standby", "b": "primary"}

        await wait_for(switched, within=2, interval=0.02, what="the role change on the page")
        took = time.monotonic() - started
        # R-Series still on A while b holds the lease: the page says so.
        assert "b is primary" in await browser.evaluate(
            "document.getElementById('events').innerText"
        )
        disagree = await browser.evaluate("document.getElementById('disagree')?.innerText")
        assert disagree and "lease holder is b" in disagree
        png = await browser.screenshot(tmp_path / "status.png")
    assert took < 2.0
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    print(f"role change shown after {took * 1000:.0f} ms; screenshot {tmp_path / 'status.png'}")


async def test_page_survives_a_sparse_status(served: tuple[str, FakeView], tmp_path: Path) -> None:
    url, view = served
    view.state = {
        "nodes": [{"id": "a"}, {"role": "standby"}, "junk"],
        "last_takeover": {"steps": 3},
    }
    async with Browser(tmp_path / "profile") as browser:
        await browser.navigate(url)

        async def count() -> Any:
            return await browser.evaluate("document.querySelectorAll('[data-node]').length")

        await wait_for(count, within=10, what="nodes rendered")
        assert await count() == 2
        assert await browser.evaluate("document.getElementById('lease').innerText.includes('none')")
