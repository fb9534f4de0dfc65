"""ARI client against the ARI simulator (and a few raw servers) on loopback.

Expectations come from the real Asterisk captures in ``tests/fixtures/captures``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ami.ari import AriClient, reconnect_delay
from ami.ari_simulator import AriSimulator, ari_timestamp, parse_caller_id
from ami.errors import (
    AmiActionError,
    AmiAuthError,
    AmiConnectionError,
    AmiProtocolError,
    AmiTimeout,
)
from bot.config import AriConfig, Secret
from tests.ami.conftest import captures_dir
from tests.helpers import free_port, port_open, wait_for, wait_for_sync

PASSWORD = "ari-p4ss-w0rd-xyz"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")
CAPTURE_APP = "failover-test"


def _capture(name: str) -> Path:
    return captures_dir() / name


def _originate_capture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_capture("ari-originate.json").read_text())
    return data


def _capture_request(method: str, url_end: str, status: int) -> dict[str, Any]:
    for req in _originate_capture()["requests"]:
        if req["method"] == method and req["url"].endswith(url_end) and req["status"] == status:
            return dict(req)
    raise AssertionError(f"no {method} {url_end} {status} in the capture")


def _shape(value: Any) -> Any:
    """Keys (in order) and value types, recursively: what must match a capture."""
    if isinstance(value, dict):
        return [(k, _shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


@pytest.fixture
async def ari() -> AsyncIterator[AriSimulator]:
    sim = AriSimulator(port=0, password=PASSWORD)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., AriClient]]:
    clients: list[AriClient] = []

    def make(sim: AriSimulator, **kw: Any) -> AriClient:
        kw.setdefault("timeout", 1.0)
        password = str(kw.pop("password", PASSWORD))
        c = AriClient(sim.url, "failover", password, **kw)
        clients.append(c)
        return c

    try:
        yield make
    finally:
        for c in clients:
            await c.close()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def _raw_get(url: str, headers: dict[str, str] | None) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as s:
        async with asyncio.timeout(5):
            async with s.get(url, headers=headers) as resp:
                return resp.status, dict(resp.headers), await resp.text()


# -- requests --------------------------------------------------------------


async def test_ping_answers_like_the_capture(
    ari: AriSimulator, make_client: Callable[..., AriClient]
) -> None:
    captured = _capture("ari-asterisk-ping.json").read_text().strip()
    req = _capture_request("GET", "/ari/asterisk/ping", 200)
    assert req["body"] == captured
    status, headers, body = await _raw_get(ari.url + "/asterisk/ping", _basic("failover", PASSWORD))
    assert status == 200
    for name in ("Server", "Cache-Control", "Content-Type"):
        assert headers[name] == req["headers"][name]
    got = json.loads(body)
    assert TS.match(got["timestamp"])
    # Byte for byte the capture, once the live timestamp is put in its place.
    want = json.loads(captured)
    assert body == captured.replace(want["timestamp"], got["timestamp"])

    client = make_client(ari)
    rtt = await client.ping()
    assert 0 < rtt < 1.0


async def test_ping_with_api_key_like_the_capture(ari: AriSimulator) -> None:
    req = _capture_request("GET", "/ari/asterisk/ping?api_key=failover:failover-secret", 200)
    assert req["status"] == 200
    status, _, body = await _raw_get(ari.url + f"/asterisk/ping?api_key=failover:{PASSWORD}", None)
    assert status == 200 and json.loads(body)["ping"] == "pong"
    status, _, _ = await _raw_get(ari.url + "/asterisk/ping?api_key=failover:nope", None)
    assert status == 401


async def test_info_answers_like_the_capture(
    ari: AriSimulator, make_client: Callable[..., AriClient]
) -> None:
    captured = _capture("ari-asterisk-info.json").read_text().strip()
    want = json.loads(captured)
    client = make_client(ari)
    got = await client.info()
    for key in ("startup_time", "last_reload_time"):
        assert TS.match(got["status"][key])
        want["status"][key] = got["status"][key]
    assert got == want
    assert _shape(got) == _shape(json.loads(captured))
    _, _, body = await _raw_get(ari.url + "/asterisk/info", _basic("failover", PASSWORD))
    assert body == json.dumps(want, separators=(",", ":"))


async def test_wrong_password_is_an_auth_error_without_the_secret(
    ari: AriSimulator, make_client: Callable[..., AriClient], caplog: pytest.LogCaptureFixture
) -> None:
    req = _capture_request("GET", "/ari/asterisk/ping", 401)
    status, headers, body = await _raw_get(ari.url + "/asterisk/ping", _basic("failover", "wrong"))
    assert status == 401
    assert body == req["body"]
    assert headers["WWW-Authenticate"] == req["headers"]["WWW-Authenticate"]

    caplog.set_level(logging.DEBUG)
    wrong = "not-the-" + PASSWORD
    client = make_client(ari, password=wrong)
    for call in (client.ping(), client.info(), client.originate("Local/200@test")):
        with pytest.raises(AmiAuthError) as info:
            await call
        text = str(info.value) + repr(info.value) + repr(info.value.__cause__)
        assert "401" in text and "Authentication required" in text
        assert wrong not in text and PASSWORD not in text
    assert wrong not in repr(client) and wrong not in str(client.__dict__)
    assert wrong not in caplog.text


async def test_originate_into_stasis_like_the_capture(
    ari: AriSimulator, make_client: Callable[..., AriClient]
) -> None:
    req = _capture_request("POST", "/ari/channels", 200)
    want = json.loads(req["body"])
    client = make_client(ari, app=CAPTURE_APP)
    events = client.events()
    first = asyncio.ensure_future(anext(events))
    await wait_for(lambda: ari.ws_clients(CAPTURE_APP) == 1, within=3, what="events socket")

    chan = await client.originate(
        "Local/200@test", app_args="probe,1", caller_id='"Failover Bot" <999>'
    )
    assert _shape(chan) == _shape(want)
    assert re.fullmatch(r"Local/200@test-[0-9a-f]{8};1", chan["name"])
    assert re.fullmatch(r"\d+\.\d+", chan["id"]) and TS.match(chan["creationtime"])
    for key in ("id", "name", "creationtime"):
        want[key] = chan[key]
    assert chan == want

    # StasisStart as captured (the channel answered, in Stasis with our args).
    captured_events = [json.loads(x) for x in _capture("ari-events.jsonl").read_text().splitlines()]
    cap_start = next(e for e in captured_events if e["type"] == "StasisStart")
    start = await asyncio.wait_for(first, 3)
    assert start["type"] == "StasisStart"
    assert _shape(start) == _shape(cap_start)
    assert start["args"] == cap_start["args"] == ["probe", "1"]
    assert start["channel"]["id"] == chan["id"] and start["channel"]["state"] == "Up"
    assert start["channel"]["dialplan"] == cap_start["channel"]["dialplan"]
    assert start["application"] == CAPTURE_APP

    await client.hangup(chan["id"])
    tail = [await asyncio.wait_for(anext(events), 3) for _ in range(4)]
    assert [e["type"] for e in tail] == [
        "ChannelHangupRequest",
        "StasisEnd",
        "ChannelDestroyed",
        "ChannelDestroyed",
    ]
    cap_hangup = next(e for e in captured_events if e["type"] == "ChannelHangupRequest")
    assert (
        (tail[0]["cause"], tail[0]["soft"])
        == (cap_hangup["cause"], cap_hangup["soft"])
        == (32, True)
    )
    cap_destroyed = [e for e in captured_events if e["type"] == "ChannelDestroyed"]
    assert (tail[2]["cause"], tail[2]["cause_txt"]) == (16, "Normal Clearing")
    assert _shape(tail[2]) == _shape(cap_destroyed[0])
    with pytest.raises(AmiActionError, match="Channel not found"):
        await client.hangup(chan["id"])

    # A missing extension: 200 right away, then the channels are destroyed with cause 0.
    gone = await client.originate("Local/999@test")
    assert gone["state"] == "Down"
    destroyed = [await asyncio.wait_for(anext(events), 3) for _ in range(2)]
    assert [(e["type"], e["cause"], e["cause_txt"]) for e in destroyed] == [
        (e["type"], e["cause"], e["cause_txt"]) for e in cap_destroyed[-2:]
    ]
    assert destroyed[1]["channel"]["id"] == gone["id"]
    await client.close()


async def test_originate_without_endpoint_is_the_captured_400(
    ari: AriSimulator, make_client: Callable[..., AriClient]
) -> None:
    req = _capture_request("POST", "/ari/channels", 400)
    message = json.loads(req["body"])["message"]
    client = make_client(ari)
    with pytest.raises(AmiActionError) as info:
        await client.originate("")
    assert "400" in str(info.value) and message in str(info.value)


def test_caller_id_parsing() -> None:
    assert parse_caller_id('"Failover Bot" <999>') == ("Failover Bot", "999")
    assert parse_caller_id("Bot <12>") == ("Bot", "12")
    assert parse_caller_id("999") == ("", "999")
    assert parse_caller_id("Bot") == ("Bot", "")
    assert TS.match(ari_timestamp(1795631174.2054))
    assert ari_timestamp(0.9996) == "1970-01-01T00:00:01.000+0000"


# -- bad answers, dead peers -------------------------------------------------


async def _serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    return runner


@pytest.mark.parametrize(
    ("body", "ctype", "call", "match"),
    [
        (b"<html>oops</html>", "text/html", "ping", "not JSON"),
        (b"[1, 2]", "application/json", "ping", "expected a JSON object"),
        (b'{"ping": "nope"}', "application/json", "ping", "not 'pong'"),
        (b'{"pong": 1}', "application/json", "ping", "lacks ping"),
        (b"\xff\xfe", "application/json", "info", "not JSON"),
        (b'{"build": {}}', "application/json", "info", "lacks system"),
        (b'{"id": "1"}', "application/json", "originate", "lacks name, state"),
        (b"x" * (1 << 20) + b"y", "application/json", "info", "larger than"),
    ],
)
async def test_unexpected_bodies_are_clear_errors(
    body: bytes, ctype: str, call: str, match: str
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": ctype})

    runner = await _serve(handler)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = AriClient(f"http://127.0.0.1:{port}/ari", "failover", PASSWORD, timeout=2)
    try:
        with pytest.raises(AmiProtocolError, match=match):
            if call == "originate":
                await client.originate("Local/200@test")
            else:
                await getattr(client, call)()
    finally:
        await client.close()
        await runner.cleanup()


async def test_error_status_without_json_body_names_the_status() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503, text="Service Unavailable")

    runner = await _serve(handler)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = AriClient(f"http://127.0.0.1:{port}/ari", "failover", PASSWORD)
    try:
        with pytest.raises(AmiActionError, match="503 Service Unavailable"):
            await client.info()
    finally:
        await client.close()
        await runner.cleanup()


async def test_refused_connection_and_stall(
    ari: AriSimulator, make_client: Callable[..., AriClient]
) -> None:
    dead = AriClient(f"http://127.0.0.1:{free_port()}/ari", "failover", PASSWORD, timeout=1)
    try:
        with pytest.raises(AmiConnectionError) as info:
            await dead.ping()
        assert PASSWORD not in str(info.value)
    finally:
        await dead.close()

    client = make_client(ari, timeout=0.3)
    ari.stall()
    start = time.monotonic()
    with pytest.raises(AmiTimeout, match=r"0\.3s"):
        await client.ping()
    assert time.monotonic() - start < 1.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="http"):
        AriClient("ftp://x/ari", "u", PASSWORD)
    with pytest.raises(ValueError, match="positive"):
        AriClient("http://127.0.0.1:1/ari", "u", PASSWORD, timeout=0)


async def test_from_config_reveals_the_secret_only_to_the_header(ari: AriSimulator) -> None:
    cfg = AriConfig(
        url=ari.url + "/", username="failover", password_file=Secret(PASSWORD, "env:X"), app="a1"
    )
    client = AriClient.from_config(cfg)
    try:
        assert client.app == "a1" and client.url == ari.url
        assert await client.ping() > 0
        assert PASSWORD not in repr(client)
    finally:
        await client.close()


async def test_a_shared_session_stays_open_and_close_ends_the_loops(ari: AriSimulator) -> None:
    async with aiohttp.ClientSession() as session:
        client = AriClient(ari.url, "failover", PASSWORD, session=session, timeout=0.5)
        health = asyncio.create_task(client.run_health(10.0))
        await wait_for(lambda: client.ok, within=2, what="healthy")
        await client.close()
        await asyncio.wait_for(health, 2)  # close() ends run_health without waiting 10 s
        assert not session.closed
        with pytest.raises(AmiConnectionError, match="closed"):
            await client.ping()
        again = AriClient(ari.url, "failover", PASSWORD, session=session)
        assert await again.ping() > 0
        await again.close()


def test_reconnect_delay_is_bounded_and_jittered() -> None:
    rng = random.Random(7)
    delays = [[reconnect_delay(a, rng) for a in range(12)] for _ in range(50)]
    flat = [d for row in delays for d in row]
    assert min(flat) >= 0.1 and max(flat) <= 5.0
    assert all(d == pytest.approx(0.1) for d in (row[0] for row in delays))
    assert all(2.5 <= row[-1] <= 5.0 for row in delays)
    assert len({round(row[-1], 6) for row in delays}) > 10  # jitter: not in step


# -- events websocket ------------------------------------------------------


async def test_events_deliver_the_captured_frames_in_order_across_a_drop(
    ari: AriSimulator, make_client: Callable[..., AriClient]
) -> None:
    lines = _capture("ari-events.jsonl").read_text().splitlines()
    want = [json.loads(x) for x in lines]
    client = make_client(ari, app=CAPTURE_APP)
    got: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in client.events():
            got.append(event)

    task = asyncio.create_task(consume())
    try:
        await wait_for(lambda: ari.ws_clients(CAPTURE_APP) == 1, within=3, what="socket")
        half = len(lines) // 2
        for line in lines[:half]:
            assert await ari.send_raw(line) == 1
        await wait_for(lambda: len(got) == half, within=3, what="first half")

        # Dropped without a close frame: reconnect, the rest still arrives in order.
        assert ari.drop_websockets() == 1
        await wait_for(lambda: client.ws_connects == 2, within=3, what="reconnect")
        await wait_for(lambda: ari.ws_clients(CAPTURE_APP) == 1, within=3, what="socket again")
        assert client.ws_last_close == 1006
        # A frame that is not an event is dropped; the stream goes on.
        await ari.send_raw("not json {")
        await ari.send_raw('["no", "type"]')
        for line in lines[half:]:
            await ari.send_raw(line)
        await wait_for(lambda: len(got) == len(want), within=3, what="second half")
        assert got == want
    finally:
        await client.close()
        await asyncio.wait_for(task, 3)  # close() ends the stream


async def test_asterisk_stop_drops_the_socket_and_events_resume_after_restart(
    ari: AriSimulator, make_client: Callable[..., AriClient]
) -> None:
    shutdown = json.loads(_capture("ari-shutdown.json").read_text())
    assert shutdown[-1]["closed"] and shutdown[-1]["close_code"] == 1006
    client = make_client(ari, app=CAPTURE_APP)
    got: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in client.events():
            got.append(event)

    task = asyncio.create_task(consume())
    try:
        await wait_for(lambda: ari.ws_clients() == 1, within=3, what="socket")
        await ari.send_event(CAPTURE_APP, "ChannelVarset", variable="A", value="1")
        await wait_for(lambda: len(got) == 1, within=3, what="event before stop")

        await ari.stop()  # Asterisk stops: socket dropped, port closed
        await wait_for(lambda: client.ws_last_close is not None, within=3, what="loss seen")
        assert client.ws_last_close == 1006 and not client.ws_connected
        await ari.start()  # same port
        await wait_for(lambda: ari.ws_clients() == 1, within=8, what="reconnect after restart")
        await ari.send_event(CAPTURE_APP, "ChannelVarset", variable="B", value="2")
        await wait_for(lambda: len(got) == 2, within=3, what="event after restart")
        assert [e["variable"] for e in got] == ["A", "B"]
        assert client.ws_connects == 2 and not task.done()
    finally:
        await client.close()
        await asyncio.wait_for(task, 3)


async def test_a_frozen_events_socket_is_dropped_by_ping_and_reopened(
    ari: AriSimulator, make_client: Callable[..., AriClient]
) -> None:
    timeout = 0.2
    client = make_client(ari, app=CAPTURE_APP, timeout=timeout)
    got: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in client.events():
            got.append(event)

    task = asyncio.create_task(consume())
    try:
        await wait_for(lambda: ari.ws_clients() == 1, within=3, what="socket")
        assert ari.freeze_websockets() == 1
        frozen_at = time.monotonic()
        # Ping after 2*timeout of silence, pong due within timeout, then the backoff.
        await wait_for(lambda: client.ws_connects == 2, within=3 * timeout + 1.0, what="reopen")
        assert time.monotonic() - frozen_at >= 2 * timeout
        await wait_for(lambda: ari.ws_clients() >= 1 and client.ws_connected, within=2, what="up")
        await ari.send_event(CAPTURE_APP, "ChannelVarset", variable="C", value="3")
        await wait_for(lambda: len(got) == 1, within=3, what="event on the new socket")
    finally:
        await client.close()
        await asyncio.wait_for(task, 3)


async def test_events_with_wrong_password_retry_without_leaking(
    ari: AriSimulator, make_client: Callable[..., AriClient], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wr0ng-" + PASSWORD
    client = make_client(ari, password=wrong)
    stream = client.events()

    async def first() -> dict[str, Any]:
        return await anext(stream)

    task = asyncio.create_task(first())
    try:
        await wait_for(
            lambda: sum(1 for m, p in ari.requests if p == "/ari/events") >= 2,
            within=3,
            what="retries",
        )
        assert not task.done() and ari.ws_clients() == 0
        assert "refused (401)" in caplog.text
        assert wrong not in caplog.text and PASSWORD not in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- health ------------------------------------------------------------------


async def test_run_health_follows_a_stall_within_interval_plus_timeout(
    ari: AriSimulator, make_client: Callable[..., AriClient]
) -> None:
    interval, timeout, margin = 0.2, 0.3, 0.3
    client = make_client(ari, timeout=timeout)
    assert client.ok is False
    task = asyncio.create_task(client.run_health(interval))
    try:
        await wait_for(lambda: client.ok, within=2, what="healthy")
        assert client.last_error is None and client.last_rtt is not None
        healthy_since = client.ok_since

        ari.stall()
        stalled_at = time.monotonic()
        await wait_for(lambda: not client.ok, within=interval + timeout + margin, what="unhealthy")
        assert time.monotonic() - stalled_at <= interval + timeout + margin
        assert client.ok_since > healthy_since
        assert client.last_error is not None and "no answer within" in client.last_error

        ari.stall(False)
        await wait_for(lambda: client.ok, within=interval + timeout + margin, what="healthy again")
        assert client.last_error is None
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_run_health_survives_the_server_going_away(
    ari: AriSimulator, make_client: Callable[..., AriClient]
) -> None:
    client = make_client(ari, timeout=0.3)
    task = asyncio.create_task(client.run_health(0.1))
    try:
        await wait_for(lambda: client.ok, within=2, what="healthy")
        await ari.stop()
        await wait_for(lambda: not client.ok, within=1, what="down")
        assert client.last_error is not None and "ARI GET /asterisk/ping" in client.last_error
        await ari.start()
        await wait_for(lambda: client.ok, within=2, what="back")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- the simulator as a process ----------------------------------------------


def test_simulator_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "bot.commands.sim_ari", "--password-file", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert missing.returncode == 2 and "--password-file" in missing.stderr

    secret = tmp_path / "ari.secret"
    secret.write_text(PASSWORD + "\n")
    port = free_port()
    argv = [sys.executable, "-m", "bot.commands.sim_ari", "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "--password-file", str(secret)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_sync(lambda: port_open(port) or proc.poll() is not None, within=10, what="port")
        assert proc.poll() is None

        async def check() -> float:
            client = AriClient(f"http://127.0.0.1:{port}/ari", "failover", PASSWORD)
            try:
                return await client.ping()
            finally:
                await client.close()

        assert asyncio.run(check()) > 0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert f"http://127.0.0.1:{port}/ari" in out
        assert PASSWORD not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


async def test_booting_asterisk_answers_404_before_authentication(
    ari: AriSimulator, make_client
) -> None:
    """As a real Asterisk whose res_ari is still loading: http.c's 404 page for /ari,
    even with a wrong password; ARI answers once booted."""
    ari.boot(True)
    with pytest.raises(AmiActionError, match="404"):
        await make_client(ari).ping()
    with pytest.raises(AmiActionError, match="404"):
        await make_client(ari, password="wrong").ping()
    ari.boot(False)
    assert await make_client(ari).ping() >= 0
