"""The HTTP API: every status code, token and body failures, redaction, SSE, /metrics."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from bot.api import bound_port, create_app, parse_listen, start_api
from bot.config import Secret
from tests.api.conftest import CLUSTER_SECRET, TOKEN, Api
from tests.api.fakes import FakeView, RecordingControls
from tests.helpers import wait_for


async def get(api: Api, path: str) -> tuple[int, Any]:
    async with api.session.get(api.url + path) as r:
        return r.status, await r.json()


async def post(
    api: Api, path: str, body: bytes | None = b"", headers: dict[str, str] | None = None
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with api.session.post(api.url + path, data=body, headers=headers or {}) as r:
        return r.status, await r.json(), r


# --------------------------------------------------------------------------- health


async def test_health_200_when_healthy_and_503_with_reasons(api: Api) -> None:
    status, body = await get(api, "/health")
    assert (status, body["healthy"], body["node"]) == (200, True, "a")
    api.view.healthy = False
    api.view.reasons = ["AMI link down for 4.0 s", "span 1 red"]
    status, body = await get(api, "/health")
    assert status == 503
    assert body["reasons"] == ["AMI link down for 4.0 s", "span 1 red"]


@pytest.mark.parametrize(
    ("role", "primary", "standby"),
    [("primary", 200, 503), ("standby", 503, 200), ("promoting", 503, 503), ("failed", 503, 503)],
)
async def test_primary_and_standby_follow_the_role(
    api: Api, role: str, primary: int, standby: int
) -> None:
    api.view.current_role = role
    s1, b1 = await get(api, "/primary")
    s2, b2 = await get(api, "/standby")
    assert (s1, s2) == (primary, standby)
    assert b1["role"] == b2["role"] == role


async def test_status_is_the_view_object_without_secrets(api: Api) -> None:
    api.view.state = {
        "holder": "a",
        "epoch": 7,
        "nodes": [{"id": "a", "role": "primary"}],
        "leak": Secret("hunter2-not-shown", "env:X"),
        "oops": f"url with {CLUSTER_SECRET} and {TOKEN} inside",
    }
    async with api.session.get(api.url + "/status") as r:
        text = await r.text()
        assert r.status == 200
    data = json.loads(text)
    assert (data["holder"], data["epoch"], data["nodes"][0]["role"]) == ("a", 7, "primary")
    for secret in ("hunter2-not-shown", CLUSTER_SECRET, TOKEN):
        assert secret not in text
    assert data["leak"] == "***"


async def test_view_failure_is_500_json_and_the_server_keeps_serving(api: Api) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError(f"boom {CLUSTER_SECRET}")

    api.view.status = broken  # type: ignore[method-assign]
    async with api.session.get(api.url + "/status") as r:
        text = await r.text()
        assert r.status == 500
    assert CLUSTER_SECRET not in text and "RuntimeError" in text
    assert (await get(api, "/health"))[0] == 200


async def test_metrics_serves_the_given_registry(api: Api) -> None:
    async with api.session.get(api.url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    assert "failoverbot_test_things_total 3.0" in text


async def test_status_page_is_served(api: Api) -> None:
    async with api.session.get(api.url + "/") as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        assert "EventSource" in await r.text()


async def test_unknown_path_and_method(api: Api) -> None:
    async with api.session.get(api.url + "/nope") as r:
        assert r.status == 404
    async with api.session.get(api.url + "/pause") as r:
        assert r.status == 405


# --------------------------------------------------------------------------- controls


CONTROL_CASES = [
    ("/switchover", {"to": "b", "drain_timeout": 12.5}, ("switchover", "b", 12.5)),
    ("/switchover", {"to": "b"}, ("switchover", "b", 30.0)),
    ("/pause", None, ("paused", True)),
    ("/resume", {}, ("paused", False)),
    ("/cordon", {"node": "b"}, ("cordon", "b", True)),
    ("/uncordon", {"node": "a"}, ("cordon", "a", False)),
    ("/clear-failed", {"node": "b"}, ("failed", "b", None)),
]


# Per endpoint: the action the answer names, then its fields in the recorded call's order.
ANSWER_FIELDS = {
    "/switchover": ("switchover", "to", "drain_timeout"),
    "/pause": ("pause",),
    "/resume": ("resume",),
    "/cordon": ("cordon", "node"),
    "/uncordon": ("uncordon", "node"),
    "/clear-failed": ("clear-failed", "node"),
}


@pytest.mark.parametrize(("path", "body", "call"), CONTROL_CASES)
async def test_control_records_intent_with_202(
    api: Api, path: str, body: dict[str, Any] | None, call: tuple[Any, ...]
) -> None:
    data = b"" if body is None else json.dumps(body).encode()
    status, answer, _ = await post(api, path, data, api.auth())
    assert status == 202, answer
    assert answer["accepted"] is True
    assert api.controls.calls == [call]
    # Intent only: the answer and the event say "requested", never that it was done.
    action, *names = ANSWER_FIELDS[path]
    fields = dict(zip(names, call[1:], strict=False))
    assert answer == {"accepted": True, "action": action, **fields}
    assert api.controls.events == [
        ("control", f"{action} requested through the API", {"source": "127.0.0.1", **fields})
    ]


@pytest.mark.parametrize("path", [c[0] for c in CONTROL_CASES[1:]])
async def test_control_without_token_is_401(api: Api, path: str) -> None:
    status, _, resp = await post(api, path, b'{"to": "b", "node": "b"}')
    assert status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = await post(api, path, b"{}", {"Authorization": f"Basic {TOKEN}"})
    assert status == 401
    assert api.controls.calls == []


@pytest.mark.parametrize("path", [c[0] for c in CONTROL_CASES[1:]])
async def test_control_with_wrong_token_is_403(api: Api, path: str) -> None:
    status, answer, _ = await post(api, path, b'{"to": "b", "node": "b"}', api.auth("tok-wrong"))
    assert status == 403
    assert answer["error"] == "wrong token"
    assert TOKEN not in json.dumps(answer)
    assert api.controls.calls == []


async def test_controls_disabled_without_token_file() -> None:
    app = create_app(
        view=FakeView(),
        controls=(controls := RecordingControls()),
        peer=None,
        registry=CollectorRegistry(),
        token=None,
    )
    runner = await start_api(app, "127.0.0.1:0")
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{bound_port(runner)}"
            async with s.post(url + "/pause", headers={"Authorization": "Bearer x"}) as r:
                assert r.status == 403
                assert "disabled" in (await r.json())["error"]
            async with s.post(url + "/peer/heartbeat", data=b"{}") as r:
                assert r.status == 404
    finally:
        await runner.cleanup()
    assert controls.calls == []


BAD_BODIES = [
    ("/switchover", b"{not json", "not valid JSON"),
    ("/switchover", b"[1, 2]", "JSON object"),
    ("/switchover", b"", "JSON object body is required"),
    ("/switchover", b"{}", "missing field 'to'"),
    ("/switchover", b'{"to": 5}', "must be a node id"),
    ("/switchover", b'{"to": "zz"}', "unknown node"),
    ("/switchover", b'{"to": "b", "drain_timeout": "soon"}', "number of seconds"),
    ("/switchover", b'{"to": "b", "drain_timeout": -1}', "between 0 and"),
    ("/switchover", b'{"to": "b", "drain_timeout": true}', "number of seconds"),
    ("/switchover", b'{"to": "b", "force": true}', "unknown fields: force"),
    ("/pause", b'{"now": 1}', "unknown fields: now"),
    ("/resume", b"nope", "not valid JSON"),
    ("/cordon", b'{"nodes": "b"}', "unknown fields: nodes"),
    ("/uncordon", b'{"node": ""}', "must be a node id"),
    ("/clear-failed", b"\xff\xfe", "not valid JSON"),
]


@pytest.mark.parametrize(("path", "body", "reason"), BAD_BODIES)
async def test_bad_body_is_400_with_reason(api: Api, path: str, body: bytes, reason: str) -> None:
    status, answer, resp = await post(api, path, body, api.auth())
    assert status == 400
    assert resp.content_type == "application/json"
    assert reason in answer["error"]
    assert api.controls.calls == []


async def test_oversized_body_is_refused(api: Api) -> None:
    body = json.dumps({"to": "b", "pad": "x" * 100_000}).encode()
    async with api.session.post(api.url + "/switchover", data=body, headers=api.auth()) as r:
        assert r.status == 413
    assert api.controls.calls == []


async def test_bus_failure_is_503_and_names_no_secret(api: Api) -> None:
    api.controls.fail_with = ConnectionError(f"redis://:{CLUSTER_SECRET}@h down")
    status, answer, _ = await post(api, "/pause", b"", api.auth())
    assert status == 503
    assert "could not record" in answer["error"]
    assert CLUSTER_SECRET not in json.dumps(answer)


# --------------------------------------------------------------------------- SSE


async def read_frames(resp: aiohttp.ClientResponse, want: int) -> list[tuple[str, Any]]:
    frames: list[tuple[str, Any]] = []
    event = ""
    while len(frames) < want:
        line = (await resp.content.readline()).decode()
        if not line:
            raise AssertionError(f"stream ended after {frames}")
        line = line.rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            frames.append((event, json.loads(line[6:])))
    return frames


async def test_events_stream_status_then_live_events(api: Api) -> None:
    api.view.state = {"holder": "a", "epoch": 3}
    async with api.session.get(api.url + "/events") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        async with asyncio.timeout(5):
            [(kind, data)] = await read_frames(resp, 1)
            assert (kind, data["epoch"]) == ("status", 3)
            await wait_for(lambda: api.view.subscribers == 1, within=2, what="subscription")
            api.view.state = {"holder": "b", "epoch": 4}
            api.view.publish({"kind": "role", "message": "b is primary", "secret": TOKEN})
            frames = await read_frames(resp, 2)
    assert frames[0][0] == "event" and frames[0][1]["message"] == "b is primary"
    assert frames[0][1]["secret"] == "***"
    assert frames[1] == ("status", {"holder": "b", "epoch": 4})


async def test_events_end_with_the_view_and_client_disconnect_unsubscribes(api: Api) -> None:
    async with api.session.get(api.url + "/events") as resp:
        async with asyncio.timeout(5):
            await read_frames(resp, 1)
            await wait_for(lambda: api.view.subscribers == 1, within=2, what="subscription")
            api.view.end_streams()
            assert (await resp.content.read()).strip() == b""
    async with api.session.get(api.url + "/events") as resp:
        async with asyncio.timeout(5):
            await read_frames(resp, 1)
    # The keepalive write notices the closed socket and drops the subscription.
    await wait_for(lambda: api.view.subscribers == 0, within=3, what="unsubscribe")


async def test_shutdown_closes_open_event_streams_promptly() -> None:
    view = FakeView()
    app = create_app(
        view=view,
        controls=RecordingControls(),
        peer=None,
        registry=CollectorRegistry(),
        token=None,
    )
    runner = await start_api(app, "127.0.0.1:0", shutdown_timeout=10)
    url = f"http://127.0.0.1:{bound_port(runner)}/events"
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        await wait_for(lambda: view.subscribers == 1, within=2, what="subscription")
        started = time.monotonic()
        await runner.cleanup()
        elapsed = time.monotonic() - started
        async with asyncio.timeout(2):
            await resp.content.read()
    assert elapsed < 1.0
    assert view.subscribers == 0


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9440") == ("127.0.0.1", 9440)
    assert parse_listen("[::1]:80") == ("::1", 80)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("localhost")
