"""The peer channel: HMAC, nonces, timestamps, promises persisted before the answer."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.config import Secret
from bot.peer import SIGNATURE_HEADER, PeerClient, PeerServer, sign
from tests.api.conftest import CLUSTER_SECRET, Api
from tests.api.fakes import FilePromiseStore, ManualClock
from tests.helpers import free_port, wait_for

SECRET = Secret(CLUSTER_SECRET, "test")


def client(
    api: Api, session: aiohttp.ClientSession, clock: ManualClock | None = None
) -> PeerClient:
    return PeerClient(
        "b",
        "a",
        api.url,
        SECRET,
        session=session,
        lease_ttl=3.0,
        timeout=2.0,
        clock=clock or ManualClock(42.0),
        wall_clock=api.wall,
    )


async def send(api: Api, body: bytes, signature: str | None) -> tuple[int, Any]:
    headers = {} if signature is None else {SIGNATURE_HEADER: signature}
    async with api.session.post(api.url + "/peer/heartbeat", data=body, headers=headers) as r:
        return r.status, await r.json()


def body(api: Api, **over: Any) -> bytes:
    msg = {"node": "b", "epoch": 5, "nonce": "n" * 32, "sent_at_wall": api.wall.now, **over}
    return json.dumps(msg).encode()


async def test_promise_counts_from_send_on_the_primary_and_answer_on_the_standby(
    api: Api,
) -> None:
    clock = ManualClock(42.0)
    receipt = await client(api, api.session, clock).heartbeat(epoch=5)
    assert receipt is not None
    assert (receipt.peer, receipt.epoch, receipt.sent_at, receipt.valid_until) == (
        "a",
        5,
        42.0,
        45.0,
    )
    # The standby's promise: its own clock at answer time + lease_ttl, on disk.
    assert api.store.given == [("b", 503.0)]
    assert api.store.promise_until() == 503.0
    assert api.peer.last_seen["b"] == 500.0


async def test_refusal_gives_no_promise_and_persists_nothing(api: Api) -> None:
    api.refusal[0] = "this node is primary"
    c = client(api, api.session)
    assert await c.heartbeat(epoch=5) is None
    assert c.last is not None and c.last.reachable and not c.last.promise
    assert c.last.reason == "this node is primary"
    assert api.store.given == []


async def test_promise_is_persisted_before_the_answer(tmp_path: Path, api: Api) -> None:
    release = threading.Event()
    entered = threading.Event()
    store = api.store
    original = store.give_promise

    def slow_give(peer: str, until: float) -> None:
        entered.set()
        assert release.wait(5)
        original(peer, until)

    store.give_promise = slow_give  # type: ignore[method-assign]
    task = asyncio.ensure_future(client(api, api.session).heartbeat(epoch=5))
    await wait_for(entered.is_set, within=3, what="persisting")
    assert not task.done()  # no answer while the promise is not on disk
    assert store.promise_until() is None
    release.set()
    assert await asyncio.wait_for(task, 5) is not None
    assert store.promise_until() == 503.0


async def test_missing_signature_401_bad_signature_403(api: Api) -> None:
    b = body(api)
    assert (await send(api, b, None))[0] == 401
    status, answer = await send(api, b, "0" * 64)
    assert (status, answer["error"]) == (403, "bad signature")
    wrong = sign(Secret("other-secret", "x"), b)
    assert (await send(api, b, wrong))[0] == 403
    # A valid signature over a different body does not carry over.
    assert (await send(api, body(api, epoch=6), sign(SECRET, b)))[0] == 403
    assert api.store.given == []


async def test_replayed_nonce_is_409(api: Api) -> None:
    b = body(api)
    assert (await send(api, b, sign(SECRET, b)))[0] == 200
    status, answer = await send(api, b, sign(SECRET, b))
    assert (status, answer["error"]) == (409, "replayed heartbeat")
    assert len(api.store.given) == 1


@pytest.mark.parametrize("offset", [-31.0, 31.0])
async def test_stale_or_future_timestamp_is_409(api: Api, offset: float) -> None:
    b = body(api, sent_at_wall=api.wall.now + offset)
    status, answer = await send(api, b, sign(SECRET, b))
    assert status == 409 and "stale" in answer["error"]


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"epoch": "5"}, "epoch"),
        ({"epoch": -1}, "epoch"),
        ({"nonce": "short"}, "nonce"),
        ({"sent_at_wall": None}, "sent_at_wall"),
        ({"node": ""}, "node"),
    ],
)
async def test_signed_but_malformed_body_is_400(
    api: Api, over: dict[str, Any], reason: str
) -> None:
    b = body(api, **over)
    status, answer = await send(api, b, sign(SECRET, b))
    assert status == 400 and reason in answer["error"]


async def test_signed_garbage_is_400_and_unknown_node_403(api: Api) -> None:
    for raw in (b"not json", b"[]", b'{"node": "b"}'):
        assert (await send(api, raw, sign(SECRET, raw)))[0] == 400
    b = body(api, node="mallory")
    assert (await send(api, b, sign(SECRET, b)))[0] == 403


async def test_answers_never_carry_the_secret(api: Api) -> None:
    b = body(api)
    for sig in (None, "00", sign(SECRET, b)):
        _, answer = await send(api, b, sig)
        assert CLUSTER_SECRET not in json.dumps(answer)


async def test_client_unreachable_peer_returns_none_quickly() -> None:
    async with aiohttp.ClientSession() as session:
        c = PeerClient(
            "b",
            "a",
            f"http://127.0.0.1:{free_port()}",
            SECRET,
            session=session,
            lease_ttl=3.0,
            timeout=1.0,
        )
        assert await c.heartbeat(epoch=1) is None
    assert c.last is not None and not c.last.reachable


async def test_client_with_wrong_secret_gets_no_promise(api: Api) -> None:
    c = PeerClient(
        "b", "a", api.url, Secret("nope", "x"), session=api.session, lease_ttl=3.0, timeout=2.0
    )
    assert await c.heartbeat(epoch=1) is None
    assert c.last is not None and "403" in c.last.reason


async def test_evicted_nonce_cannot_be_replayed(tmp_path: Path) -> None:
    wall = ManualClock(1000.0)
    server = PeerServer(
        "a",
        SECRET,
        peers=["b"],
        store=FilePromiseStore(tmp_path / "p"),
        may_promise=lambda n, e: None,
        lease_ttl=3.0,
        clock=ManualClock(1.0),
        wall_clock=wall,
        nonce_capacity=2,
    )

    def msg(nonce: str, ts: float) -> bytes:
        return json.dumps({"node": "b", "epoch": 1, "nonce": nonce, "sent_at_wall": ts}).encode()

    first = msg("nonce-0001", 999.0)
    for b in (first, msg("nonce-0002", 999.5), msg("nonce-0003", 999.6)):
        assert (await server.handle(b, sign(SECRET, b)))[0] == 200
    # "nonce-0001" fell out of the cache; the floor still refuses it.
    assert (await server.handle(first, sign(SECRET, first)))[0] == 409


async def test_promise_survives_a_restart_with_the_real_state_dir(tmp_path: Path) -> None:
    from bot.state import StateDir

    state = StateDir(tmp_path / "state", boot_id="boot-1")
    server = PeerServer(
        "a",
        SECRET,
        peers=["b"],
        store=state,
        may_promise=lambda n, e: None,
        lease_ttl=3.0,
        clock=ManualClock(100.0),
    )
    b = json.dumps(
        {"node": "b", "epoch": 2, "nonce": "abcdefgh12", "sent_at_wall": time.time()}
    ).encode()
    status, answer = await server.handle(b, sign(SECRET, b))
    assert (status, answer["promise"]) == (200, True)
    assert StateDir(tmp_path / "state", boot_id="boot-1").promise_until() == 103.0
