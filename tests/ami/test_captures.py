"""Real Asterisk captures: every frame parses, and the simulator answers in the same shape."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from ami.codec import FrameDecoder, Greeting
from ami.events import FullyBooted, OriginateResponse, Shutdown, parse_event
from ami.simulator import AsteriskSimulator
from tests.ami.conftest import captures_dir


def _independent_blocks(raw: str) -> list[list[tuple[str, str]]]:
    """A second, naive reading of the same bytes to check the codec against."""
    body = raw.split("\r\n", 1)[1] if raw.startswith("Asterisk Call Manager/") else raw
    blocks = []
    for block in body.split("\r\n\r\n"):
        pairs = [
            tuple(line.split(": ", 1)) if ": " in line else (line.rstrip(":"), "")
            for line in block.split("\r\n")
            if line
        ]
        if pairs:
            blocks.append(pairs)
    return blocks


def _decode(data: bytes, chunks: list[bytes] | None = None) -> list[object]:
    dec = FrameDecoder(expect_greeting=data.startswith(b"Asterisk"))
    out: list[object] = []
    for chunk in chunks or [data]:
        dec.receive_data(chunk)
        out.extend(dec.frames())
    return out


def _txt_files() -> list[Path]:
    return sorted(p for p in captures_dir().glob("ami-*.txt") if not p.name.endswith(".sent.txt"))


def test_every_capture_frame_parses() -> None:
    files = _txt_files()
    assert len(files) >= 10
    for path in files:
        data = path.read_bytes()
        frames = _decode(data)
        assert isinstance(frames[0], Greeting) and frames[0].version == "11.0.0", path.name
        expected = _independent_blocks(data.decode())
        got = [f for f in frames[1:] if isinstance(f, dict)]
        assert len(got) == len(expected), path.name
        for fields, pairs in zip(got, expected, strict=True):
            assert list(fields) == list(dict.fromkeys(k for k, _ in pairs)), path.name
            for key, value in pairs:
                assert value in fields[key].split("\n"), (path.name, key)
            if "Event" in fields:
                assert parse_event(fields).name == fields["Event"]


def test_sent_files_parse_as_actions() -> None:
    for path in sorted(captures_dir().glob("ami-*.sent.txt")):
        actions = _decode(path.read_bytes())
        assert actions and all(isinstance(a, dict) and "Action" in a for a in actions), path.name


def test_jsonl_reads_split_anywhere_give_the_same_frames() -> None:
    for path in sorted(captures_dir().glob("ami-*.jsonl")):
        rx = [
            json.loads(line)["data"].encode()
            for line in path.read_text().splitlines()
            if json.loads(line)["dir"] == "rx"
        ]
        whole = b"".join(rx)
        assert _decode(whole, rx) == _decode(whole), path.name
        bytewise = [whole[i : i + 1] for i in range(len(whole))]
        assert _decode(whole, bytewise) == _decode(whole), path.name


def test_typed_events_from_captures() -> None:
    d = captures_dir()
    booted = [
        parse_event(f)
        for name in ("ami-login.txt", "ami-restart-reconnect.txt")
        for f in _decode((d / name).read_bytes())
        if isinstance(f, dict) and f.get("Event") == "FullyBooted"
    ]
    assert len(booted) == 2 and all(isinstance(e, FullyBooted) for e in booted)
    assert all(e.status == "Fully Booted" and e.uptime == 0 for e in booted)  # both field orders
    shut = [
        parse_event(f)
        for name in ("ami-restart.txt", "ami-shutdown-listener.txt", "ami-shutdown-uncleanly.txt")
        for f in _decode((d / name).read_bytes())
        if isinstance(f, dict) and f.get("Event") == "Shutdown"
    ]
    assert [(e.restart, e.cleanly) for e in shut if isinstance(e, Shutdown)] == [
        (True, True),
        (False, True),
        (False, False),
    ]
    reasons = [
        parse_event(f)
        for f in _decode((d / "ami-originate-failures.txt").read_bytes())
        if isinstance(f, dict) and f.get("Event") == "OriginateResponse"
    ]
    assert [(e.response, e.reason) for e in reasons if isinstance(e, OriginateResponse)] == [
        ("Failure", 0),
        ("Failure", 0),
        ("Failure", 5),
        ("Failure", 8),
        ("Failure", 3),
        ("Success", 4),
    ]


def _shape(frames: list[object]) -> dict[str, list[list[str]]]:
    """ActionID -> key lists of the responses and action events, in order."""
    by_id: dict[str, list[list[str]]] = {}
    for f in frames:
        if isinstance(f, dict) and "ActionID" in f:
            keys = [k for k in f if k != "Output"] + (["Output"] if "Output" in f else [])
            by_id.setdefault(f["ActionID"], []).append(keys)
    return by_id


def _answered(data: bytearray, action_id: str, want: int) -> bool:
    mine = [
        f for f in _decode(bytes(data)) if isinstance(f, dict) and f.get("ActionID") == action_id
    ]
    return len(mine) >= want or any(f.get("Response") == "Error" for f in mine)


async def _converse(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sent: bytes
) -> bytes:
    """Send each action and wait for its answer (and an async Originate's OriginateResponse)."""
    data = bytearray()
    for action in _decode(sent):
        assert isinstance(action, dict)
        block = "".join(f"{k}: {v}\r\n" for k, v in action.items()) + "\r\n"
        writer.write(block.encode())
        if action["Action"] == "Logoff":
            data += await asyncio.wait_for(reader.read(-1), 10)
            break
        want = 2 if action.get("Async") == "true" else 1

        while not _answered(data, action["ActionID"], want):
            chunk = await asyncio.wait_for(reader.read(65536), 10)
            assert chunk, "simulator closed early"
            data += chunk
    return bytes(data)


@pytest.mark.parametrize(
    "name,spans", [("ami-login", 2), ("ami-originate-failures", 2), ("ami-dahdi", 0)]
)
async def test_simulator_answers_have_the_captured_shape(name: str, spans: int) -> None:
    d = captures_dir()
    sent = (d / f"{name}.sent.txt").read_bytes()
    real = _decode((d / f"{name}.txt").read_bytes())
    secret = re.search(rb"Secret: (.*)\r\n", sent).group(1).decode()  # type: ignore[union-attr]
    sim = AsteriskSimulator(port=0, secret=secret, spans=spans, call_duration=0.05)
    await sim.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        data = await _converse(reader, writer, sent)
        writer.close()
    finally:
        await sim.stop()
    assert data.startswith(b"Asterisk Call Manager/11.0.0\r\n")
    assert data.endswith(b"\r\n\r\n")
    mine = _decode(data)
    real_shape, my_shape = _shape(real), _shape(mine)
    assert set(real_shape) == set(my_shape)
    for action_id, shapes in real_shape.items():
        if name == "ami-dahdi" and action_id.endswith("-3"):
            continue  # DAHDIShowChannels is not simulated
        assert my_shape[action_id] == shapes, action_id
    real_events = [list(f) for f in real if isinstance(f, dict) and f.get("Event") == "FullyBooted"]
    my_events = [list(f) for f in mine if isinstance(f, dict) and f.get("Event") == "FullyBooted"]
    assert my_events == real_events
