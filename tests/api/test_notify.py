"""Webhooks against a real local aiohttp receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from bot.config import Secret, WebhookConfig
from bot.notify import Notifier
from tests.api.fakes import ManualClock
from tests.helpers import wait_for

HOOK_TOKEN = "T000/B000/XyZsecretPath123"
CLUSTER_SECRET = "cluster-secret-abc987"


@dataclass
class Receiver:
    url: str
    bodies: list[bytes] = field(default_factory=list)
    # Status codes to answer in order; afterwards 200.
    script: list[int] = field(default_factory=list)
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def json(self) -> list[Any]:
        return [json.loads(b) for b in self.bodies]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver("")

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if rec.hang:
            await rec.release.wait()
        rec.bodies.append(body)
        status = rec.script.pop(0) if rec.script else 200
        return web.Response(status=status, text="ok")

    app = web.Application()
    app.router.add_post("/services/{tail:.*}", hook)
    runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/services/{HOOK_TOKEN}"
    try:
        yield rec
    finally:
        rec.release.set()
        await runner.cleanup()


@dataclass
class Running:
    notifier: Notifier
    results: list[str]
    task: asyncio.Task[None]


@pytest.fixture
async def make() -> AsyncIterator[Any]:
    started: list[Running] = []

    def factory(hooks: list[WebhookConfig], **kw: Any) -> Running:
        results: list[str] = []
        kw.setdefault("backoff_base", 0.01)
        kw.setdefault("backoff_max", 0.05)
        kw.setdefault("timeout", 2.0)
        n = Notifier(
            hooks,
            node_id="a",
            cluster="lab",
            on_result=results.append,
            secrets=[Secret(CLUSTER_SECRET, "test")],
            **kw,
        )
        r = Running(n, results, asyncio.ensure_future(n.run()))
        started.append(r)
        return r

    yield factory
    for r in started:
        r.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await r.task


def hook(url: str, fmt: str = "slack", events: list[str] | None = None) -> WebhookConfig:
    return WebhookConfig(url_file=Secret(url, "test"), format=fmt, events=events or [])  # type: ignore[arg-type]


STEPS = [
    {"name": "rseries_route", "duration": 0.12, "ok": True},
    {"name": "drbd_promote", "duration": 0.8, "ok": True},
    {"name": "test_call", "duration": 1.5, "ok": True},
]


async def test_slack_and_json_formats(receiver: Receiver, make: Any) -> None:
    r = make([hook(receiver.url, "slack"), hook(receiver.url, "json")])
    r.notifier.notify(
        "failover_completed", "b is primary", {"epoch": 8, "duration": 2.42, "steps": STEPS}
    )
    await wait_for(lambda: len(receiver.bodies) == 2, within=5, what="two deliveries")
    slack = next(b for b in receiver.json() if "blocks" in b)
    plain = next(b for b in receiver.json() if "kind" in b)
    assert "b is primary" in slack["text"]
    assert slack["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "b is primary"},
    }
    rendered = json.dumps(slack["blocks"])
    assert "drbd_promote: 0.800s ok" in rendered and "*epoch*" in rendered
    assert plain["kind"] == "failover_completed" and plain["severity"] == "info"
    assert plain["fields"]["steps"] == STEPS
    assert (plain["node"], plain["cluster"], plain["fields"]["epoch"]) == ("a", "lab", 8)
    assert r.results == ["sent", "sent"]


async def test_retries_after_500s_then_delivers(receiver: Receiver, make: Any) -> None:
    receiver.script = [500, 503, 200]
    r = make([hook(receiver.url, "json")])
    r.notifier.notify("redis_lost", "Redis unreachable", {"for_seconds": 2.0})
    await wait_for(lambda: "sent" in r.results, within=5, what="delivery")
    assert len(receiver.bodies) == 3
    assert receiver.bodies[0] == receiver.bodies[2]  # the same message retried
    assert r.results == ["retried", "retried", "sent"]


async def test_gives_up_after_max_attempts_and_no_retry_on_4xx(
    receiver: Receiver, make: Any
) -> None:
    receiver.script = [500] * 3 + [404]
    r = make([hook(receiver.url, "json")], max_attempts=3)
    r.notifier.notify("redis_lost", "Redis unreachable", {})
    r.notifier.notify("redis_back", "Redis back", {})
    await wait_for(lambda: r.results.count("failed") == 2, within=5, what="both given up")
    assert len(receiver.bodies) == 4  # 3 attempts, then one refused 404 not retried
    assert r.results == ["retried", "retried", "failed", "failed"]


async def test_repeats_are_coalesced(receiver: Receiver, make: Any) -> None:
    clock = ManualClock(100.0)
    r = make([hook(receiver.url, "json")], coalesce_window=60.0, clock=clock)
    for _ in range(5):  # queued together: one message says "repeated 4"
        r.notifier.notify("span_alarm", "span 1 red", {"span": 1})
    await wait_for(lambda: len(receiver.bodies) == 1, within=5, what="first delivery")
    assert receiver.json()[0]["repeated"] == 4
    r.notifier.notify("span_alarm", "span 1 red", {"span": 1})
    r.notifier.notify("span_alarm", "span 1 red", {"span": 1})
    r.notifier.notify("span_alarm", "span 2 red", {"span": 2})  # a different alert goes out
    await wait_for(lambda: len(receiver.bodies) == 2, within=5, what="other alert")
    clock.now += 61.0
    r.notifier.notify("span_alarm", "span 1 red", {"span": 1})
    await wait_for(lambda: len(receiver.bodies) == 3, within=5, what="after the window")
    titles = [(b["title"], b["repeated"]) for b in receiver.json()]
    assert titles == [("span 1 red", 4), ("span 2 red", 0), ("span 1 red", 2)]
    assert r.results.count("coalesced") == 6


async def test_event_filter_per_webhook(receiver: Receiver, make: Any) -> None:
    r = make([hook(receiver.url, "json", events=["failover_failed"])])
    r.notifier.notify("health_recovered", "healthy again", {})
    r.notifier.notify("failover_failed", "takeover failed at drbd_promote", {"step": "drbd"})
    await r.notifier.close(flush_timeout=2)  # flushes what is queued
    await asyncio.wait_for(r.task, 1)
    assert [b["kind"] for b in receiver.json()] == ["failover_failed"]


async def test_dead_receiver_never_delays_a_failover(receiver: Receiver, make: Any) -> None:
    receiver.hang = True
    r = make([hook(receiver.url, "slack")], timeout=30.0)

    async def failover() -> float:
        started = time.monotonic()
        r.notifier.notify("failover_started", "a takes over", {"epoch": 9})
        for step in STEPS:
            await asyncio.sleep(0)  # a step's own work
            r.notifier.notify("health_degraded", f"step {step['name']}", {})
        r.notifier.notify("failover_completed", "a is primary", {"steps": STEPS})
        return time.monotonic() - started

    took = await failover()
    await wait_for(lambda: r.notifier.pending() == 5, within=2, what="queued")
    assert took < 0.05
    # Shutdown gives up waiting on the dead receiver after the flush timeout.
    started = time.monotonic()
    await r.notifier.close(flush_timeout=0.3)
    await asyncio.wait_for(r.task, 1)  # run() ends once closed
    assert time.monotonic() - started < 1.0
    assert receiver.bodies == []


async def test_no_secret_in_any_payload_or_log(
    receiver: Receiver, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.script = [500]
    r = make([hook(receiver.url, "slack"), hook(receiver.url, "json")])
    r.notifier.notify(
        "config_drift",
        f"drift; hook {receiver.url}",
        {
            "password": Secret("pw-supersecret", "env:PW"),
            "detail": f"secret={CLUSTER_SECRET} url={receiver.url}",
            "nested": [{"u": receiver.url}],
        },
    )
    await wait_for(lambda: r.results.count("sent") == 2, within=5, what="delivery")
    raw = b"\n".join(receiver.bodies).decode()
    for secret in (HOOK_TOKEN, CLUSTER_SECRET, "pw-supersecret"):
        assert secret not in raw
        assert secret not in caplog.text
    assert "***" in raw


async def test_bad_input_is_dropped_without_raising(receiver: Receiver, make: Any) -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise ValueError("no")

    r = make([hook(receiver.url, "json")])
    r.notifier.notify("self_fence", "fenced", {"x": Unprintable()})
    r.notifier.notify("not_a_kind", "odd", {1: float("nan")})  # type: ignore[dict-item]
    await wait_for(lambda: len(receiver.bodies) == 1, within=5, what="delivery")
    assert receiver.json()[0]["title"] == "odd"


def test_every_result_is_a_label_of_the_webhooks_metric() -> None:
    from bot import notify
    from bot.metrics import WEBHOOK_RESULTS

    emitted = {v for k, v in vars(notify).items() if k.startswith("RESULT_")}
    assert emitted == set(WEBHOOK_RESULTS)
