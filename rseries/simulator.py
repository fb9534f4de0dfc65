"""The R-Series simulator: one appliance, two host links, a control port, a JSONL log.

Host links are pseudo-terminals (the slave path is symlinked to the path the
lab configures, created only once the pty is ready) or TCP ports on loopback
(a serial server; one client per link, a second one is refused). The
behaviour lives in ``rseries.appliance``; this module only moves bytes, keeps
time and injects faults.

Control interface: JSON lines over TCP on 127.0.0.1; see ``Simulator.control``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bot.jsonline import request
from rseries import protocol as p
from rseries.appliance import ALL, LINKS, Appliance, Output

log = logging.getLogger(__name__)

CONTROL_TIMEOUT = 5.0


class _Link(Protocol):
    name: str

    @property
    def up(self) -> bool: ...

    async def open(self) -> None: ...

    def write(self, data: bytes) -> None: ...

    async def drop(self) -> None: ...

    def describe(self) -> str: ...


class PtyLink:
    """A host link over a pseudo-terminal; ``path`` is a symlink to the slave."""

    def __init__(self, name: str, path: str, on_data: Callable[[str, bytes], None]) -> None:
        self.name = name
        self.path = Path(path)
        self._on_data = on_data
        self._master: int | None = None
        self._slave: int | None = None

    @property
    def up(self) -> bool:
        return self._master is not None

    def describe(self) -> str:
        return str(self.path)

    async def open(self) -> None:
        if self._master is not None:
            return
        master, slave = os.openpty()
        # Raw, so the line discipline neither echoes nor edits before the host opens it;
        # the slave end stays open here so the master never sees EIO between host users.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        asyncio.get_running_loop().add_reader(master, self._readable)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.path)

    def _readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError:
            return
        if data:
            self._on_data(self.name, data)

    def write(self, data: bytes) -> None:
        if self._master is None:
            return
        # Nobody reading the host end: like a serial line, the bytes are simply lost.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._master, data)

    async def drop(self) -> None:
        """The cable is pulled: the device path vanishes and the host end hangs up."""
        if self._master is None:
            return
        asyncio.get_running_loop().remove_reader(self._master)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None


class TcpLink:
    """A host link as a serial server port on loopback: one client at a time."""

    def __init__(self, name: str, port: int, on_data: Callable[[str, bytes], None]) -> None:
        self.name = name
        self.port = port
        self._on_data = on_data
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def up(self) -> bool:
        return self._server is not None

    def describe(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    async def open(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:
            writer.close()  # the port has one user
            return
        self._writer = writer
        try:
            while data := await reader.read(4096):
                self._on_data(self.name, data)
        except (ConnectionError, OSError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()

    def write(self, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def drop(self) -> None:
        """The serial server goes away: close the client and stop listening."""
        if self._server is not None:
            self._server.close()
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


class Simulator:
    def __init__(
        self,
        *,
        links: dict[str, str | int],
        control_port: int | None = None,
        log_path: str | None = None,
        relay_time: float = 0.02,
        mode: str = "MANUAL",
        wdt: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``links`` maps "a"/"b" to a pty symlink path (str) or a TCP port (int)."""
        self._clock = clock
        self.appliance = Appliance(clock(), relay_time=relay_time, mode=mode, wdt=wdt)
        self.links: dict[str, _Link] = {}
        for name in LINKS:
            where = links[name]
            self.links[name] = (
                TcpLink(name, where, self._on_data)
                if isinstance(where, int)
                else PtyLink(name, where, self._on_data)
            )
        self._codecs = {name: p.ApplianceCodec() for name in LINKS}
        self.stalled: set[str] = set()
        self.commands = {name: 0 for name in LINKS}  # command lines seen per link
        self.delay: dict[str, float] = {}
        self.control_port = control_port
        self._control: asyncio.Server | None = None
        self._log_path = log_path
        # Line-buffered and local: each record is one small write, fine on the loop.
        self._log_file: Any = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.history: list[dict[str, Any]] = []

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self._flush_log()
        if self.control_port is not None:
            self._control = await asyncio.start_server(
                self._control_client, "127.0.0.1", self.control_port
            )
            self.control_port = self._control.sockets[0].getsockname()[1]
        # Links last: a harness waits for their paths, so everything else must be ready.
        for link in self.links.values():
            await link.open()
        self._ticker = asyncio.create_task(self._tick_loop(), name="rseries-sim-ticker")

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._control is not None:
            self._control.close()
            await self._control.wait_closed()
        for link in self.links.values():
            await link.drop()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("simulator task %s failed", name, exc_info=t.exception())

        task.add_done_callback(done)

    # --- data path -------------------------------------------------------------

    def _on_data(self, link: str, data: bytes) -> None:
        codec = self._codecs[link]
        codec.receive_data(data)
        while not isinstance(event := codec.next_event(), p.NeedData):
            self.commands[link] += 1
            if link in self.stalled:
                continue  # a stalled link reads and forgets
            self._emit(self.appliance.handle(link, event, self._clock()))
        self._wake.set()

    def _emit(self, outputs: list[Output]) -> None:
        for out in outputs:
            targets = LINKS if out.link == ALL else (out.link,)
            for name in targets:
                if name in self.stalled:
                    continue
                delay = self.delay.get(name, 0.0) if out.response else 0.0
                if delay > 0:
                    asyncio.get_running_loop().call_later(delay, self.links[name].write, out.data)
                else:
                    self.links[name].write(out.data)
        self._flush_log()

    def _flush_log(self) -> None:
        while self.appliance.log:
            rec = self.appliance.log.pop(0)
            # "mono" is the appliance clock at the switch; "t" is wall time for humans.
            entry = {"t": time.time() - (self._clock() - rec["mono"]), **rec}
            self.history.append(entry)
            if self._log_file is not None:
                self._log_file.write(json.dumps(entry) + "\n")

    async def _tick_loop(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock()
            self._emit(self.appliance.tick(now))
            deadline = self.appliance.next_deadline(now)
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    # --- control ---------------------------------------------------------------

    async def _control_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while line := await reader.readline():
                try:
                    cmd = json.loads(line)
                    if not isinstance(cmd, dict):
                        raise ValueError("a control command is a JSON object")
                    reply = await self.control(cmd)
                except (ValueError, KeyError, TypeError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def _link_arg(self, cmd: dict[str, Any], required: bool = True) -> list[str]:
        name = cmd.get("link")
        if name is None and not required:
            return list(LINKS)
        if name not in LINKS:
            raise ValueError(f"link must be one of {list(LINKS)}, got {name!r}")
        return [name]

    async def control(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Apply one control command. Commands: ``stall``/``unstall`` [link];
        ``drop`` link [seconds: restore after]; ``restore`` link; ``garbage`` link
        bytes (a count of random bytes, or a latin-1 string); ``delay`` link
        seconds (answers on that link come late); ``lock``/``unlock``; ``button``;
        ``power_cycle`` [off: seconds]; ``route`` link host (a ``ROUTE`` that host sent
        from elsewhere, e.g. an operator's console: its answer goes nowhere); ``state``."""
        name = cmd.get("cmd")
        now = self._clock()
        if name == "stall":
            self.stalled.update(self._link_arg(cmd, required=False))
        elif name == "unstall":
            self.stalled.difference_update(self._link_arg(cmd, required=False))
        elif name == "drop":
            (link,) = self._link_arg(cmd)
            await self.links[link].drop()
            self._codecs[link] = p.ApplianceCodec()
            self.appliance.log.append(
                {
                    "mono": now,
                    "event": "link",
                    "link": link,
                    "up": False,
                    "active": self.appliance.active,
                    "cause": None,
                }
            )
            if cmd.get("seconds") is not None:
                self._spawn(self._restore_later(link, float(cmd["seconds"])), "restore")
        elif name == "restore":
            (link,) = self._link_arg(cmd)
            await self._restore(link)
        elif name == "garbage":
            (link,) = self._link_arg(cmd)
            raw = cmd.get("bytes", 16)
            data = (
                random.randbytes(min(int(raw), 1 << 20))
                if isinstance(raw, int)
                else str(raw).encode("latin-1")
            )
            self.links[link].write(data)
        elif name == "delay":
            (link,) = self._link_arg(cmd)
            self.delay[link] = float(cmd.get("seconds", 0.0))
        elif name in ("lock", "unlock"):
            self._emit(self.appliance.set_lock(name == "lock", now))
        elif name == "button":
            self._emit(self.appliance.button(now))
        elif name == "route":
            (link,) = self._link_arg(cmd)
            event = p.parse_command_line(f"ROUTE {cmd.get('host', '')}".encode())
            if not isinstance(event, p.Command):
                raise ValueError("route needs a host, A or B")
            answers = self.appliance.handle(link, event, now)
            self._emit([out for out in answers if not out.response])
        elif name == "power_cycle":
            self._emit(self.appliance.power_off(now))
            off = float(cmd.get("off", 0.1))
            self._spawn(self._power_on_later(off), "power-on")
        elif name != "state":
            raise ValueError(f"unknown control command {name!r}")
        self._flush_log()
        self._wake.set()
        return {"ok": True, **self.state()}

    def state(self) -> dict[str, Any]:
        a = self.appliance
        return {
            "active": a.active,
            "mode": a.mode.lower(),
            "watchdog": a.wdt,
            "hb_a": a.hb["A"],
            "hb_b": a.hb["B"],
            "lock": a.lock,
            "powered": a.powered,
            "links": {n: {"up": lk.up, "at": lk.describe()} for n, lk in self.links.items()},
            "stalled": sorted(self.stalled),
        }

    async def _restore(self, link: str) -> None:
        if self.links[link].up:
            return
        await self.links[link].open()
        self.appliance.log.append(
            {
                "mono": self._clock(),
                "event": "link",
                "link": link,
                "up": True,
                "active": self.appliance.active,
                "cause": None,
            }
        )
        self._flush_log()

    async def _restore_later(self, link: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._restore(link)

    async def _power_on_later(self, off: float) -> None:
        await asyncio.sleep(off)
        self._emit(self.appliance.power_on(self._clock()))
        self._wake.set()


async def control(port: int, cmd: dict[str, Any]) -> dict[str, Any]:
    """Send one control command to a running simulator and return its answer."""
    return await request(port, cmd, CONTROL_TIMEOUT)
