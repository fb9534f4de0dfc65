"""The cluster verbs run through the real CLI entry point against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.bus import Bus, NodeRecord
from bot.cli import main
from bot.commands.cluster import status_from_peers
from bot.config import RedisConfig
from tests.helpers import RedisServer, free_port, node_config, node_record


def write_config(tmp: Path, redis_url: str, peer_port: int, api_port: int) -> Path:
    (tmp / "secret").write_text("s3cret-cluster\n")
    return node_config(
        tmp / "node.toml",
        node={"state_dir": f"{tmp}/state"},
        cluster={
            "peers": [{"id": "b", "api": f"http://127.0.0.1:{peer_port}"}],
            "secret_file": f"{tmp}/secret",
        },
        redis={"url": redis_url, "timeout": "300ms"},
        api={"listen": f"127.0.0.1:{api_port}"},
    )


@pytest.fixture
def cfg_path(tmp_path: Path, redis_server: RedisServer) -> Path:
    return write_config(tmp_path, redis_server.url, free_port(), free_port())


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # asyncio.run inside the handlers needs a thread without a running loop.
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
async def bus(redis_server: RedisServer) -> AsyncIterator[Bus]:
    b = Bus(RedisConfig(url=redis_server.url), "t", "b")
    yield b
    await b.close()


def rec(node: str, role: str, epoch: int | None, ago: float = 0.0) -> NodeRecord:
    return node_record(node, role, epoch=epoch, ago=ago, settings_hash="h1")


async def test_status_json_from_redis(
    cfg_path: Path, bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    grant = await bus.acquire(10.0, 6)
    assert grant is not None and grant.epoch == 7
    await bus.publish_node_record(rec("b", "primary", 7, ago=1.5))
    a = Bus(RedisConfig(url=bus.cfg.url), "t", "a")
    try:
        await a.publish_node_record(rec("a", "standby", 7))
        await a.set_cordon("a", True)
    finally:
        await a.close()
    code, out, _ = await run_cli(capsys, "status", "--json", "--config", str(cfg_path))
    assert code == 0
    obj = json.loads(out)
    assert obj["holder"] == "b" and obj["epoch"] == 7 and obj["source"] == "redis"
    assert 8.0 < obj["lease_remaining_seconds"] <= 10.0
    assert obj["paused"] is False
    nodes = {n["id"]: n for n in obj["nodes"]}
    assert set(nodes) == {"a", "b"}
    assert nodes["b"]["role"] == "primary" and nodes["b"]["holder"]
    assert nodes["a"]["cordoned"] and not nodes["b"]["cordoned"]
    assert nodes["a"]["ready"] is True and nodes["b"]["healthy"] is True
    assert 1.4 < nodes["b"]["last_seen_seconds"] < 5
    assert obj["settings_drift"] is False
    code, out, _ = await run_cli(capsys, "status", "--config", str(cfg_path))
    assert code == 0 and "holder b, epoch 7" in out and "primary" in out


async def test_status_shows_a_node_without_record_and_corrupt_values(
    cfg_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    import redis.asyncio as aredis

    raw = aredis.Redis.from_url(redis_server.url)
    try:
        await raw.set("failover:{t}:leader", b"garbage")
    finally:
        await raw.aclose()
    code, out, _ = await run_cli(capsys, "status", "--json", "--config", str(cfg_path))
    assert code == 0
    obj = json.loads(out)
    assert obj["holder"] is None and any("not JSON" in p for p in obj["problems"])
    # Redis answers and holds no record of either: neither is up, as far as anyone knows.
    assert {n["id"]: n["role"] for n in obj["nodes"]} == {"a": "down", "b": "down"}
    assert {n["freshness"] for n in obj["nodes"]} == {"missing"}


async def serve_status(port: int, obj: dict[str, Any]) -> web.AppRunner:
    async def handler(_request: web.Request) -> web.Response:
        return web.json_response(obj)

    app = web.Application()
    app.router.add_get("/status", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_status_falls_back_to_the_peers_api_when_redis_is_down(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    peer_port = free_port()
    cfg = write_config(tmp_path, redis_server.url, peer_port, free_port())
    redis_server.stop()
    peer_status = {
        "holder": "b",
        "epoch": 12,
        "lease_remaining_seconds": 2.5,
        "paused": False,
        "nodes": [{"id": "a", "role": "standby"}, {"id": "b", "role": "primary"}],
    }
    runner = await serve_status(peer_port, peer_status)
    try:
        start = time.monotonic()
        code, out, err = await run_cli(capsys, "status", "--json", "--config", str(cfg))
        elapsed = time.monotonic() - start
    finally:
        await runner.cleanup()
    assert code == 0, err
    obj = json.loads(out)
    assert obj["source"] == "peer b" and obj["holder"] == "b" and obj["epoch"] == 12
    assert "redis_error" in obj and "Redis unreachable" in err
    assert elapsed < 5
    # Nobody answers at all: exit 2, saying why.
    code, out, err = await run_cli(capsys, "status", "--json", "--config", str(cfg))
    assert code == 2 and "no bot API answered" in err and out == ""


async def test_peer_fallback_takes_the_first_good_answer() -> None:
    good, bad = free_port(), free_port()
    runner_good = await serve_status(good, {"holder": "a", "epoch": 1, "nodes": []})

    async def broken(_request: web.Request) -> web.Response:
        return web.Response(text="[]", content_type="application/json")

    app = web.Application()
    app.router.add_get("/status", broken)
    runner_bad = web.AppRunner(app)
    await runner_bad.setup()
    await web.TCPSite(runner_bad, "127.0.0.1", bad).start()
    try:
        obj, problems = await status_from_peers(
            [
                ("x", f"http://127.0.0.1:{free_port()}/status"),
                ("y", f"http://127.0.0.1:{bad}/status"),
                ("z", f"http://127.0.0.1:{good}/status"),
            ]
        )
    finally:
        await runner_good.cleanup()
        await runner_bad.cleanup()
    assert obj is not None and obj["source"] == "peer z" and obj["holder"] == "a"
    assert any(p.startswith("x:") for p in problems)


async def test_control_verbs_write_intent_and_events(
    cfg_path: Path, bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    c = ["--config", str(cfg_path)]
    assert (await run_cli(capsys, "pause", *c))[0] == 0
    assert (await bus.controls()).paused
    code, _, err = await run_cli(capsys, "switchover", "--to", "b", *c)
    assert code == 1 and "paused" in err  # refused: exit 1
    assert (await run_cli(capsys, "resume", *c))[0] == 0
    assert (await run_cli(capsys, "cordon", "b", *c))[0] == 0
    assert (await bus.controls()).cordoned == {"b"}
    code, _, err = await run_cli(capsys, "switchover", "--to", "b", *c)
    assert code == 1 and "cordoned" in err
    assert (await run_cli(capsys, "uncordon", "b", *c))[0] == 0
    await bus.set_failed("a", time.time() + 600)
    assert (await run_cli(capsys, "clear-failed", "a", *c))[0] == 0
    assert (await bus.controls()).failed == {}
    code, out, _ = await run_cli(capsys, "switchover", "--to", "b", "--drain-timeout", "30s", *c)
    assert code == 0 and "requested" in out
    sw = (await bus.controls()).switchover
    assert sw is not None and sw.target == "b" and sw.drain_timeout == 30.0
    code, _, err = await run_cli(capsys, "cordon", "zz", *c)
    assert code == 2 and "unknown node" in err
    code, out, _ = await run_cli(capsys, "events", *c)
    kinds = [line.split()[3] for line in out.splitlines()]
    assert kinds == [
        "paused",
        "resumed",
        "cordon",
        "uncordon",
        "clear_failed",
        "switchover_requested",
    ]
    code, out, _ = await run_cli(capsys, "events", "--json", "--count", "1", *c)
    assert json.loads(out)["fields"]["target"] == "b"


async def test_switchover_wait_follows_the_hand_over(
    cfg_path: Path, bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stand-in HA loop on node b: on a switchover naming b, a releases and b takes over."""
    a = Bus(RedisConfig(url=bus.cfg.url), "t", "a")
    grant = await a.acquire(30.0, 0)
    assert grant is not None
    done = asyncio.Event()

    wake = bus.wakeups()
    assert await anext(wake) == "subscribed"

    async def ha_loop() -> None:
        async for kind in wake:
            if kind != "control":
                continue
            sw = (await bus.controls()).switchover
            if sw is not None and sw.target == "b":
                assert await a.release(grant.epoch, next_node="b")
                assert await bus.acquire(3.0, 0) is not None
                await bus.clear_switchover(sw.request_id)
                done.set()
                return

    loop = asyncio.create_task(ha_loop())
    try:
        code, out, err = await run_cli(
            capsys, "switchover", "--to", "b", "--wait", "--config", str(cfg_path)
        )
        assert code == 0, err
        assert "b holds the lease" in out
        # The stand-in loop clears the request right after b took the lease.
        await asyncio.wait_for(done.wait(), 5)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await wake.aclose()
        await a.close()


async def test_switchover_wait_reports_a_refusal(
    cfg_path: Path, bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    wake = bus.wakeups()
    assert await anext(wake) == "subscribed"

    async def refusing_loop() -> None:
        async for kind in wake:
            sw = (await bus.controls()).switchover if kind == "control" else None
            if sw is not None:
                await bus.append_event("switchover_refused", "b is not ready: disk Outdated")
                await bus.clear_switchover(sw.request_id)
                return

    loop = asyncio.create_task(refusing_loop())
    try:
        code, _, err = await run_cli(
            capsys, "switchover", "--to", "b", "--wait", "--config", str(cfg_path)
        )
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await wake.aclose()
    assert code == 1 and "disk Outdated" in err


async def test_verbs_exit_2_when_redis_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, f"redis://127.0.0.1:{free_port()}/0", free_port(), free_port())
    for verb in (["pause"], ["cordon", "b"], ["events"], ["switchover", "--to", "b"]):
        code, _, err = await run_cli(capsys, *verb, "--config", str(cfg))
        assert code == 2 and "cluster bus" in err, (verb, err)
