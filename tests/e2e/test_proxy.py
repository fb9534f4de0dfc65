"""The TCP proxy forwards, cuts for real (reset, blackhole, refuse, freeze) and heals."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from harness.proxy import ProxyProcess, TcpProxy
from tests.helpers import wait_for

TIMEOUT = 2.0
SILENCE = 0.3  # how long "no data" must hold to count as cut


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def roundtrip(port: int, payload: bytes = b"ping\n") -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), TIMEOUT)
    finally:
        writer.close()


async def test_data_flows_both_ways(echo_port: int) -> None:
    async with TcpProxy(echo_port) as proxy:
        assert await roundtrip(proxy.port, b"hello\n") == b"hello\n"
        big = bytes(range(256)) * 2000
        assert await roundtrip(proxy.port, big) == big
        assert proxy.forwarded_bytes >= 2 * (len(big) + 6)


async def test_cut_resets_current_and_blackholes_new_then_heal(echo_port: int) -> None:
    async with TcpProxy(echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"one\n")
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"one\n"

        await proxy.cut()
        # The current connection is torn: reset or EOF, within a bounded time.
        with contextlib.suppress(ConnectionError):
            writer.write(b"two\n")
            assert await asyncio.wait_for(reader.read(100), TIMEOUT) == b""
        writer.close()

        # A new connection is accepted (no refusal) but nothing comes back: a timeout.
        r2, w2 = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", proxy.port), TIMEOUT)
        w2.write(b"three\n")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r2.read(100), SILENCE)
        w2.close()

        await proxy.heal()
        assert await roundtrip(proxy.port, b"four\n") == b"four\n"
        assert [h["event"] for h in proxy.history] == ["cut", "heal"]


async def test_refuse_mode_refuses_connections_until_heal(echo_port: int) -> None:
    async with TcpProxy(echo_port) as proxy:
        await proxy.cut(new="refuse")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", proxy.port), TIMEOUT)
        await proxy.heal()
        assert await roundtrip(proxy.port) == b"ping\n"


async def test_freeze_holds_bytes_and_delivers_them_after_heal(echo_port: int) -> None:
    async with TcpProxy(echo_port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            await proxy.cut(existing="freeze")
            writer.write(b"held\n")
            await writer.drain()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readline(), SILENCE)
            await proxy.heal()
            assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"held\n"
        finally:
            writer.close()


async def test_unreachable_target_resets_the_client() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # bound, never listening: connections are refused
        async with TcpProxy(dead_port) as proxy:
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            with contextlib.suppress(ConnectionError):
                assert await asyncio.wait_for(reader.read(100), TIMEOUT) == b""
            writer.close()
            await wait_for(lambda: proxy.connections == 0, TIMEOUT, what="connection dropped")


async def test_bad_cut_mode_is_refused(echo_port: int) -> None:
    async with TcpProxy(echo_port) as proxy:
        with pytest.raises(ValueError, match="blackhole"):
            await proxy.cut(new="sideways")
        assert proxy.mode == "open"


def _sync_roundtrip(port: int, payload: bytes, timeout: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.settimeout(timeout)
        s.sendall(payload)
        return s.recv(100)


async def test_subprocess_proxy_is_cut_and_healed_over_its_control_port(echo_port: int) -> None:
    # The echo server runs on this loop, so the blocking client calls go to a thread.
    with ProxyProcess(echo_port) as proxy:
        assert await asyncio.to_thread(_sync_roundtrip, proxy.port, b"a\n", TIMEOUT) == b"a\n"
        await asyncio.to_thread(proxy.cut)
        status = proxy.status()
        assert status["mode"] == "cut:blackhole:reset"
        assert [h["event"] for h in status["history"]] == ["cut"]
        with pytest.raises(TimeoutError):
            await asyncio.to_thread(_sync_roundtrip, proxy.port, b"b\n", SILENCE)
        await asyncio.to_thread(proxy.heal)
        assert await asyncio.to_thread(_sync_roundtrip, proxy.port, b"c\n", TIMEOUT) == b"c\n"
        with pytest.raises(RuntimeError, match="unknown"):
            proxy.command("explode")


async def test_connection_made_during_a_blackhole_is_forwarded_after_heal(echo_port: int) -> None:
    async with TcpProxy(echo_port) as proxy:
        await proxy.cut()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(b"early\n")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readline(), SILENCE)
            await proxy.heal()
            assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"early\n"
        finally:
            writer.close()
