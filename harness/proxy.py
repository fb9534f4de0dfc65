"""A TCP proxy that a test can cut and heal: a partition that is real at the socket level.

Put one between each bot and Redis, and between the bots (peer channel). Modes:

- ``open``: bytes flow both ways.
- ``cut(new="blackhole")``: new connections are accepted and never forwarded,
  so a client sees timeouts, as across a real partition; ``new="refuse"``:
  the listening socket is closed, so a client sees ``ECONNREFUSED``.
- ``cut(existing="reset")``: current connections are reset (RST on both
  sides); ``existing="freeze"``: they stay up but nothing moves (bytes wait in
  the proxy and flow again on ``heal()``, as TCP retransmits after a partition).

In-process: ``async with TcpProxy(target_port) as proxy`` (``proxy.port``).
As a subprocess, which keeps working while the test's event loop is busy:
``python -m harness.proxy --listen P --target T --control-port C``, driven
by ``ProxyControl(C)`` (a line protocol: ``cut [blackhole|refuse] [reset|freeze]``,
``heal``, ``status``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bot.lab.cluster import end_process, free_port, port_open
from bot.lab.cluster import wait_until as wait_for_sync

CONNECT_TIMEOUT = 2.0
CHUNK = 65536
NEW_MODES = ("blackhole", "refuse")
EXISTING_MODES = ("reset", "freeze")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: the peer sees the connection torn, not ended."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Conn:
    def __init__(self, client: asyncio.StreamWriter):
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None

    def reset(self) -> None:
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)


class TcpProxy:
    def __init__(
        self,
        target_port: int,
        *,
        listen_port: int = 0,
        target_host: str = "127.0.0.1",
        listen_host: str = "127.0.0.1",
        name: str = "proxy",
    ):
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = listen_port
        self.name = name
        self.mode = "open"
        self.history: list[dict[str, Any]] = []  # cut/heal with monotonic stamps
        self.accepted = 0
        self.forwarded_bytes = 0
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Self:
        await self._listen()
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._on_client, self.listen_host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for conn in list(self._conns):
            conn.reset()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def cut(self, new: str = "blackhole", existing: str = "reset") -> None:
        """Partition: see the module text for the modes."""
        if new not in NEW_MODES or existing not in EXISTING_MODES:
            raise ValueError(f"cut: new in {NEW_MODES}, existing in {EXISTING_MODES}")
        self._open.clear()
        self.mode = f"cut:{new}:{existing}"
        self.history.append(
            {"mono": time.monotonic(), "event": "cut", "new": new, "existing": existing}
        )
        if existing == "reset":
            for conn in list(self._conns):
                conn.reset()
        if new == "refuse" and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            # Connections accepted before the close are parked like blackholed ones.

    async def heal(self) -> None:
        if self._server is None:
            await self._listen()
        self.mode = "open"
        self.history.append({"mono": time.monotonic(), "event": "heal"})
        self._open.set()

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "port": self.port,
            "target": list(self.target),
            "connections": self.connections,
            "accepted": self.accepted,
            "forwarded_bytes": self.forwarded_bytes,
            "history": self.history,
        }

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            # A blackholed connection waits here; the client's bytes stay unread.
            await self._open.wait()
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError):
                _reset(writer)
                return
            conn.upstream = up_writer
            pumps = [
                asyncio.ensure_future(self._pump(reader, up_writer)),
                asyncio.ensure_future(self._pump(up_reader, writer)),
            ]
            try:
                await asyncio.gather(*pumps)
            finally:
                for p in pumps:
                    p.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                up_writer.close()
        except asyncio.CancelledError:
            conn.reset()
            raise
        finally:
            self._conns.discard(conn)
            writer.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._open.wait()
                data = await src.read(CHUNK)
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                # Bytes read just before a cut are held until the heal.
                await self._open.wait()
                dst.write(data)
                self.forwarded_bytes += len(data)
                await dst.drain()
        except (ConnectionError, OSError):
            # One side was reset: tear down the other side too.
            _reset(dst)


# --- subprocess mode ------------------------------------------------------------------


async def _control(
    proxy: TcpProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while line := await reader.readline():
            words = line.decode("ascii", "replace").split()
            try:
                if not words:
                    continue
                if words[0] == "cut":
                    await proxy.cut(*words[1:3])
                    reply = "ok " + proxy.mode
                elif words[0] == "heal":
                    await proxy.heal()
                    reply = "ok open"
                elif words[0] == "status":
                    reply = "ok " + json.dumps(proxy.status())
                else:
                    reply = "err unknown command"
            except (ValueError, TypeError) as exc:
                reply = f"err {exc}"
            writer.write(reply.encode() + b"\n")
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(listen: int, target: int, control_port: int, target_host: str) -> None:
    async with TcpProxy(target, listen_port=listen, target_host=target_host) as proxy:
        control = await asyncio.start_server(
            lambda r, w: _control(proxy, r, w), "127.0.0.1", control_port, reuse_address=True
        )
        async with control:
            await control.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.proxy", description=__doc__)
    p.add_argument("--listen", type=int, required=True, help="loopback port to listen on")
    p.add_argument("--target", type=int, required=True, help="port to forward to")
    p.add_argument("--target-host", default="127.0.0.1")
    p.add_argument("--control-port", type=int, required=True)
    ns = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(ns.listen, ns.target, ns.control_port, ns.target_host))
    return 0


class ProxyControl:
    """Drives a subprocess proxy over its control port (blocking, with a timeout)."""

    def __init__(self, control_port: int, timeout: float = 2.0):
        self.control_port = control_port
        self.timeout = timeout

    def command(self, line: str) -> str:
        with socket.create_connection(("127.0.0.1", self.control_port), self.timeout) as s:
            s.sendall(line.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        reply = buf.decode().strip()
        if not reply.startswith("ok"):
            raise RuntimeError(f"proxy on control port {self.control_port}: {reply or 'no reply'}")
        return reply[3:]

    def cut(self, new: str = "blackhole", existing: str = "reset") -> None:
        self.command(f"cut {new} {existing}")

    def heal(self) -> None:
        self.command("heal")

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.command("status"))
        return result


class ProxyProcess(ProxyControl):
    """``python -m harness.proxy`` as a child process; a context manager that cleans up."""

    def __init__(self, target_port: int, listen_port: int | None = None, log: Path | None = None):
        super().__init__(free_port())
        self.target_port = target_port
        self.port = listen_port or free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        root = Path(__file__).resolve().parents[1]
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "harness.proxy",
                    "--listen",
                    str(self.port),
                    "--target",
                    str(self.target_port),
                    "--control-port",
                    str(self.control_port),
                ],
                cwd=root,
                stdout=out,
                stderr=out,
            )
        finally:
            if self.log and not isinstance(out, int):
                out.close()
        wait_for_sync(
            lambda: port_open(self.control_port) and port_open(self.port), 10, "proxy to listen"
        )
        return self

    def stop(self) -> None:
        end_process(self.proc)
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
