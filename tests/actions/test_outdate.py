"""Outdating over the peer channel, the local mark, force-promote: real HTTP, fake DRBD."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from bot.actions.drbd import Drbd
from bot.actions.errors import PromoteRefused
from bot.api import bound_port, create_app, start_api
from bot.commands.drbd import (
    DRBD_HANDLER_FAILED,
    DRBD_PEER_OUTDATED,
    DRBD_PEER_PRIMARY,
    PathOutcome,
    decide,
)
from bot.config import DrbdConfig, Secret
from bot.peer import SIGNATURE_HEADER, PeerServer, request_outdate, sign
from bot.state import DataMarks
from harness.fakes import FakeWorld, drbd_resource
from tests.actions.test_commands import write_config
from tests.api.fakes import FakeView, FilePromiseStore, RecordingControls
from tests.helpers import RedisServer

SECRET = Secret("cluster-secret-outdate", "test")


@dataclass
class Peer:
    url: str
    session: aiohttp.ClientSession
    drbd: Drbd
    marks: DataMarks


@pytest.fixture
async def peer(tmp_path: Path, world: FakeWorld) -> AsyncIterator[Peer]:
    """Node "a"'s API with the outdate route wired as the agent wires it."""
    marks = DataMarks(tmp_path / "state-a")
    drbd = Drbd(DrbdConfig(resources=["r0"]), marks=marks)
    server = PeerServer(
        "a",
        SECRET,
        peers=["b"],
        store=FilePromiseStore(tmp_path / "promise.json"),
        may_promise=lambda node, epoch: None,
        lease_ttl=3.0,
        outdate=drbd.outdate_self,
    )
    app = create_app(
        view=FakeView("a"),
        controls=RecordingControls(),
        peer=server,
        registry=CollectorRegistry(),
        token=Secret("tok-outdate", "test"),
        nodes=["a", "b"],
        secrets=[SECRET],
    )
    runner = await start_api(app, "127.0.0.1:0")
    async with aiohttp.ClientSession() as session:
        try:
            yield Peer(f"http://127.0.0.1:{bound_port(runner)}", session, drbd, marks)
        finally:
            await runner.cleanup()


async def ask(peer: Peer, secret: Secret = SECRET) -> object:
    return await request_outdate("b", peer.url, secret, "r0", session=peer.session, limit=5.0)


async def test_outdate_marks_durably_outdates_drbd_and_blocks_promotion(
    peer: Peer, world: FakeWorld
) -> None:
    answer = await ask(peer)
    assert answer.outdated and not answer.primary, answer  # type: ignore[attr-defined]
    mark = peer.marks.outdated()
    assert mark is not None and mark["by"] == "b" and mark["resource"] == "r0"
    assert world.drbd["resources"]["r0"]["nodes"]["local"]["disk"] == "Outdated"
    assert "drbdadm outdate r0" in world.mutating_calls()
    reasons = await peer.drbd.readiness(outdated=False)
    assert any("outdated by b" in r for r in reasons), reasons
    # Even with DRBD's disk repaired behind the bot's back, the local mark refuses.
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0", connected=False)})
    with pytest.raises(PromoteRefused, match="state directory says its data is outdated by b"):
        await peer.drbd.promote()
    assert "drbdadm primary r0" not in world.mutating_calls()


async def test_a_primary_refuses_to_be_outdated(peer: Peer, world: FakeWorld) -> None:
    world.set_drbd({"r0": drbd_resource(role="Primary", device="/dev/drbd0")})
    answer = await ask(peer)
    assert answer.primary and not answer.outdated  # type: ignore[attr-defined]
    assert peer.marks.outdated() is None
    assert "drbdadm outdate r0" not in world.mutating_calls()


async def test_unsigned_forged_and_replayed_requests_change_nothing(
    peer: Peer, world: FakeWorld
) -> None:
    answer = await ask(peer, Secret("wrong-secret", "test"))
    assert answer.reached and not answer.outdated and "403" in answer.reason  # type: ignore[attr-defined]
    import time

    body = json.dumps(
        {"node": "b", "resource": "r0", "nonce": "n" * 16, "sent_at_wall": time.time()}
    ).encode()
    headers = {SIGNATURE_HEADER: sign(SECRET, body)}
    async with peer.session.post(peer.url + "/peer/outdate", data=body) as resp:
        assert resp.status == 401
    async with peer.session.post(peer.url + "/peer/outdate", data=b"{}", headers=headers) as r:
        assert r.status == 403  # the signature covers other bytes
    peer.marks.clear_outdated()
    async with peer.session.post(peer.url + "/peer/outdate", data=body, headers=headers) as r:
        assert r.status == 200 and (await r.json())["outdated"] is True
    peer.marks.clear_outdated()
    async with peer.session.post(peer.url + "/peer/outdate", data=body, headers=headers) as r:
        assert r.status == 409
    assert peer.marks.outdated() is None


async def test_force_promote_permission_is_spent_once(peer: Peer, world: FakeWorld) -> None:
    await ask(peer)
    world.set_drbd({"r0": drbd_resource(disk="Outdated", device="/dev/drbd0", connected=False)})
    assert await peer.drbd.readiness(outdated=False)
    peer.marks.allow_force(by="ops@host", at_wall=0.0, reason="test")
    assert await peer.drbd.readiness(outdated=False) == []
    changed = await peer.drbd.promote()
    assert "r0 primary (forced)" in changed
    assert "drbdadm primary --force r0" in world.mutating_calls()
    assert peer.marks.outdated() is None and peer.marks.forced() is None


def test_an_unreadable_mark_counts_as_outdated(tmp_path: Path) -> None:
    marks = DataMarks(tmp_path)
    (tmp_path / "outdated.json").write_text("{not json")
    mark = marks.outdated()
    assert mark is not None and "unreadable" in mark


@pytest.mark.parametrize(
    ("outcomes", "code"),
    [
        ([("outdated", "failed")], DRBD_PEER_OUTDATED),
        ([("failed", "outdated")], DRBD_PEER_OUTDATED),
        ([("outdated", "primary")], DRBD_PEER_OUTDATED),
        ([("failed", "primary")], DRBD_PEER_PRIMARY),
        ([("failed", "failed")], DRBD_HANDLER_FAILED),
    ],
)
def test_exit_code_needs_a_confirmation(outcomes: list[tuple[str, str]], code: int) -> None:
    [(peer_path, bus_path)] = outcomes
    got, summary = decide(
        [PathOutcome("peer channel", peer_path, "x"), PathOutcome("cluster bus", bus_path, "y")]
    )
    assert got == code, summary
    assert got != 5  # never "peer unreachable": DRBD would resume writing alone


def test_force_promote_needs_the_flag_and_records_it(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    path = write_config(tmp_path, redis_server.url)  # with a [drbd] section
    marks = DataMarks(tmp_path / "state")
    marks.mark_outdated(by="b", resource="r0", at_wall=0.0, reason="link lost")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bot", "force-promote", "--config", str(path), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    refused = cli()
    assert refused.returncode == 2 and "--i-know-data-may-be-lost" in refused.stderr
    assert marks.outdated() is not None and marks.forced() is None
    done = cli("--i-know-data-may-be-lost", "--reason", "b is gone")
    assert done.returncode == 0, done.stderr
    assert "outdated by b" in done.stdout
    assert marks.outdated() is None
    forced = marks.forced()
    assert forced is not None and forced["reason"] == "b is gone"
    events = subprocess.run(
        [sys.executable, "-m", "bot", "events", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "force_promote" in events.stdout or "force-promote" in events.stdout, events
