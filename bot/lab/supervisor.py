"""A small supervisor that does what systemd does for the bot in production.

    python -m bot.lab.supervisor --watchdog-sec 1.5 --restart on-failure \\
        --restart-sec 0.5 --stop-post "failover-bot fence-local --config X" \\
        --log sup.jsonl -- failover-bot run --config X

What it mirrors (systemd.service(5), sd_notify(3)):

- ``Type=notify``: a datagram ``NOTIFY_SOCKET`` (a path in a private tmp dir)
  is passed to the child with ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (the
  child's own pid: a ``sh -c 'exec'`` trampoline learns it before exec).
  ``READY=1``, ``STATUS=``, ``WATCHDOG=1``, ``WATCHDOG=trigger``,
  ``WATCHDOG_USEC=``, ``STOPPING=1`` are understood. ``NotifyAccess=main``:
  datagrams whose sender (``SCM_CREDENTIALS``) is not the main pid are ignored.
- ``WatchdogSec=``: armed at ``READY=1``; when no ``WATCHDOG=1`` arrives in
  time the child gets SIGABRT followed by SIGCONT (as systemd does, so a
  SIGSTOPped child dies too), then SIGKILL after ``--timeout-abort-sec``.
- ``Restart=always|on-failure|no`` with ``RestartSec=``; on-failure means a
  non-zero exit, a signal other than a clean SIGTERM/SIGINT/SIGHUP/SIGPIPE, or
  a watchdog timeout.
- ``ExecStopPost=``: after every exit of the child, with a timeout, with
  ``SERVICE_RESULT``, ``EXIT_CODE`` and ``EXIT_STATUS`` in its environment.
- Its own SIGTERM/SIGINT: SIGTERM to the child (SIGKILL to its process group
  after ``--timeout-stop-sec``), stop-post, exit 0.

Everything it does goes to a JSONL log (``--log``), each record stamped with
``time.time()`` (``t``) and ``time.monotonic()`` (``mono``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

CLEAN_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE}
TRAMPOLINE = 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"'
UCRED = struct.Struct("iII")


@dataclass
class Options:
    argv: list[str]
    watchdog_sec: float = 0.0
    restart: str = "on-failure"
    restart_sec: float = 0.1
    stop_post: list[str] = field(default_factory=list)
    stop_post_timeout: float = 10.0
    timeout_stop_sec: float = 5.0
    timeout_abort_sec: float = 1.0
    notify_access: str = "main"
    max_starts: int = 0  # 0: unlimited
    log: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


class EventLog:
    """Append-only JSONL, flushed per record so a reader never waits on a buffer."""

    def __init__(self, path: Path | None):
        self._file: IO[str] | None = path.open("a", encoding="utf-8") if path else None

    def write(self, event: str, **fields: Any) -> None:
        record = {"t": time.time(), "mono": time.monotonic(), "event": event, **fields}
        line = json.dumps(record, default=str)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def parse_notify(data: bytes) -> dict[str, str]:
    """``KEY=VALUE`` lines of one datagram; anything else is dropped."""
    out = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            out[key] = value
    return out


class NotifySocket:
    """The receiving end of ``NOTIFY_SOCKET``: a datagram socket that reports sender pids."""

    def __init__(self, directory: Path):
        self.path = directory / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)

    def receive(self) -> list[tuple[int | None, bytes]]:
        """Every datagram waiting now, with the sender's pid when the kernel told it."""
        out: list[tuple[int | None, bytes]] = []
        while True:
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(
                    4096, socket.CMSG_SPACE(UCRED.size)
                )
            except (BlockingIOError, InterruptedError):
                return out
            pid = None
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = UCRED.unpack(payload[: UCRED.size])[0]
            out.append((pid, data))

    def close(self) -> None:
        self.sock.close()


class Supervisor:
    def __init__(self, options: Options, log: EventLog):
        self.o = options
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.starts = 0
        self._stop_requested = asyncio.Event()
        self._notified = asyncio.Event()
        self._ready = False
        self._watchdog_usec = int(options.watchdog_sec * 1_000_000)
        self._last_ping = 0.0
        # Datagrams that arrived before the child's pid was known.
        self._early: list[tuple[int | None, bytes]] = []

    def request_stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.log.write("stop_requested")
            self._stop_requested.set()

    async def run(self) -> int:
        tmp = Path(tempfile.mkdtemp(prefix="sup-"))
        notify = NotifySocket(tmp)
        loop = asyncio.get_running_loop()
        loop.add_reader(notify.sock.fileno(), self._on_notify, notify)
        self.log.write("supervisor_start", pid=os.getpid(), notify_socket=str(notify.path))
        try:
            while True:
                result = await self._run_once(notify)
                await self._stop_post(result)
                if self.stopping or not self._should_restart(result):
                    break
                if self.o.max_starts and self.starts >= self.o.max_starts:
                    self.log.write("start_limit", starts=self.starts)
                    break
                self.log.write("restart_scheduled", delay=self.o.restart_sec)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(), self.o.restart_sec)
                if self.stopping:
                    break
                self.log.write("restart")
            return 0
        finally:
            loop.remove_reader(notify.sock.fileno())
            notify.close()
            shutil.rmtree(tmp, ignore_errors=True)
            self.log.write("supervisor_exit")

    def _should_restart(self, result: dict[str, Any]) -> bool:
        if self.o.restart == "always":
            return True
        if self.o.restart == "no":
            return False
        return bool(result["result"] != "success")

    def _child_env(self, notify: NotifySocket) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.o.env)
        env["NOTIFY_SOCKET"] = str(notify.path)
        env.pop("WATCHDOG_PID", None)
        if self._watchdog_usec:
            env["WATCHDOG_USEC"] = str(self._watchdog_usec)
        else:
            env.pop("WATCHDOG_USEC", None)
        return env

    async def _run_once(self, notify: NotifySocket) -> dict[str, Any]:
        self._ready = False
        self._watchdog_usec = int(self.o.watchdog_sec * 1_000_000)
        self.starts += 1
        self._early = []
        try:
            self.proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                TRAMPOLINE,
                "supervised",
                *self.o.argv,
                env=self._child_env(notify),
                start_new_session=True,
            )
        except OSError as exc:
            self.log.write("start_failed", error=str(exc))
            return {"result": "resources", "code": "exited", "status": "203"}
        proc = self.proc
        self.log.write("started", pid=proc.pid, argv=self.o.argv, start=self.starts)
        early, self._early = self._early, []
        self._handle(early)
        wait_exit = asyncio.ensure_future(proc.wait())
        result = "success"
        try:
            while not wait_exit.done():
                if self.stopping:
                    await self._terminate(proc, wait_exit)
                    break
                timeout = self._watchdog_left()
                self._notified.clear()
                stop = asyncio.ensure_future(self._stop_requested.wait())
                ping = asyncio.ensure_future(self._notified.wait())
                try:
                    await asyncio.wait(
                        {wait_exit, stop, ping}, timeout=timeout, return_when="FIRST_COMPLETED"
                    )
                finally:
                    stop.cancel()
                    ping.cancel()
                if not wait_exit.done() and not self.stopping and self._watchdog_expired():
                    result = "watchdog"
                    await self._watchdog_kill(proc, wait_exit)
                    break
        except asyncio.CancelledError:
            proc.kill()
            await proc.wait()
            raise
        returncode = await wait_exit
        self.proc = None
        if returncode < 0:
            sig = signal.Signals(-returncode)
            code, status = "killed", sig.name.removeprefix("SIG")
            if result == "success" and sig not in CLEAN_SIGNALS:
                result = "signal"
            self.log.write("exited", pid=proc.pid, signal=sig.name, result=result)
        else:
            code, status = "exited", str(returncode)
            if result == "success" and returncode != 0:
                result = "exit-code"
            self.log.write("exited", pid=proc.pid, returncode=returncode, result=result)
        return {"result": result, "code": code, "status": status, "pid": proc.pid}

    def _on_notify(self, notify: NotifySocket) -> None:
        datagrams = notify.receive()
        if self.proc is None:
            self._early.extend(datagrams[-100:])
            return
        self._handle(datagrams)

    def _handle(self, datagrams: list[tuple[int | None, bytes]]) -> None:
        for pid, data in datagrams:
            main = self.proc.pid if self.proc else None
            if self.o.notify_access == "main" and pid != main:
                self.log.write("notify_ignored", sender=pid, main=main)
                continue
            fields = parse_notify(data)
            if "WATCHDOG_USEC" in fields and fields["WATCHDOG_USEC"].isdigit():
                self._watchdog_usec = int(fields["WATCHDOG_USEC"])
                self._last_ping = time.monotonic()
                self.log.write("watchdog_usec", usec=self._watchdog_usec)
            if fields.get("READY") == "1" and not self._ready:
                self._ready = True
                self._last_ping = time.monotonic()
                self.log.write("ready", pid=pid)
            if "STATUS" in fields:
                self.log.write("status", status=fields["STATUS"])
            if fields.get("WATCHDOG") == "1":
                self._last_ping = time.monotonic()
                self.log.write("watchdog_ping", pid=pid)
            elif fields.get("WATCHDOG") == "trigger":
                self._last_ping = -1e18
                self.log.write("watchdog_trigger", pid=pid)
            if fields.get("STOPPING") == "1":
                self.log.write("stopping", pid=pid)
        self._notified.set()

    def _watchdog_left(self) -> float | None:
        if not self._ready or not self._watchdog_usec:
            return None
        return max(0.0, self._last_ping + self._watchdog_usec / 1e6 - time.monotonic())

    def _watchdog_expired(self) -> bool:
        left = self._watchdog_left()
        return left is not None and left <= 0

    async def _watchdog_kill(
        self, proc: asyncio.subprocess.Process, wait_exit: asyncio.Future[int]
    ) -> None:
        since = time.monotonic() - self._last_ping
        self.log.write("watchdog_timeout", pid=proc.pid, since_last_ping=round(since, 4))
        self._signal(proc, signal.SIGABRT)
        # A stopped process keeps SIGABRT pending; SIGCONT lets it be delivered.
        self._signal(proc, signal.SIGCONT)
        await self._wait_or_kill(proc, wait_exit, self.o.timeout_abort_sec)

    async def _terminate(
        self, proc: asyncio.subprocess.Process, wait_exit: asyncio.Future[int]
    ) -> None:
        self._signal(proc, signal.SIGTERM)
        self._signal(proc, signal.SIGCONT)
        await self._wait_or_kill(proc, wait_exit, self.o.timeout_stop_sec)

    async def _wait_or_kill(
        self, proc: asyncio.subprocess.Process, wait_exit: asyncio.Future[int], grace: float
    ) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(wait_exit), grace)
        except TimeoutError:
            self.log.write("kill", pid=proc.pid, signal="SIGKILL", after=grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            self._signal(proc, signal.SIGKILL)
            await wait_exit

    def _signal(self, proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        if proc.returncode is not None:
            return
        # os.kill, not proc.send_signal: Popen.send_signal polls first and can reap the
        # child behind asyncio's watcher, which then reports exit status 255.
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        if sig != signal.SIGCONT:
            self.log.write("signal", pid=proc.pid, signal=sig.name)

    async def _stop_post(self, result: dict[str, Any]) -> None:
        if not self.o.stop_post:
            return
        env = dict(os.environ)
        env.update(self.o.env)
        env.update(
            SERVICE_RESULT=result["result"], EXIT_CODE=result["code"], EXIT_STATUS=result["status"]
        )
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(key, None)
        started = time.monotonic()
        self.log.write("stop_post_start", argv=self.o.stop_post, service_result=result["result"])
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.o.stop_post,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self.log.write("stop_post", ok=False, error=str(exc), duration=0.0)
            return
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), self.o.stop_post_timeout)
            timed_out = False
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            output = b""
            await proc.wait()
            timed_out = True
        self.log.write(
            "stop_post",
            ok=proc.returncode == 0 and not timed_out,
            returncode=proc.returncode,
            timed_out=timed_out,
            duration=round(time.monotonic() - started, 4),
            output=output.decode("utf-8", "replace")[-2000:],
        )


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="python -m bot.lab.supervisor",
        description="Run a command as systemd would (Type=notify, WatchdogSec, Restart, "
        "ExecStopPost).",
    )
    p.add_argument("--watchdog-sec", type=float, default=0.0, help="0: no watchdog")
    p.add_argument("--restart", choices=("always", "on-failure", "no"), default="on-failure")
    p.add_argument("--restart-sec", type=float, default=0.1)
    p.add_argument("--stop-post", default="", help="command line (shell words, no shell)")
    p.add_argument("--stop-post-timeout", type=float, default=10.0)
    p.add_argument("--timeout-stop-sec", type=float, default=5.0)
    p.add_argument("--timeout-abort-sec", type=float, default=1.0)
    p.add_argument("--notify-access", choices=("main", "all"), default="main")
    p.add_argument("--max-starts", type=int, default=0, help="0: unlimited")
    p.add_argument("--log", type=Path, default=None, help="JSONL event log (default stderr)")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    ns = p.parse_args(list(argv))
    command = ns.argv[1:] if ns.argv[:1] == ["--"] else ns.argv
    if not command:
        p.error("no command given after --")
    for name in ("watchdog_sec", "restart_sec", "stop_post_timeout", "timeout_stop_sec"):
        if getattr(ns, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    return Options(
        argv=command,
        watchdog_sec=ns.watchdog_sec,
        restart=ns.restart,
        restart_sec=ns.restart_sec,
        stop_post=shlex.split(ns.stop_post),
        stop_post_timeout=ns.stop_post_timeout,
        timeout_stop_sec=ns.timeout_stop_sec,
        timeout_abort_sec=ns.timeout_abort_sec,
        notify_access=ns.notify_access,
        max_starts=ns.max_starts,
        log=ns.log,
    )


async def amain(options: Options) -> int:
    log = EventLog(options.log)
    supervisor = Supervisor(options, log)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.request_stop)
    try:
        return await supervisor.run()
    finally:
        log.close()


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(sys.argv[1:] if argv is None else argv)))


# --- for the harness and tests -----------------------------------------------------------


def supervisor_argv(
    command: Sequence[str],
    *,
    log: Path,
    watchdog_sec: float = 0.0,
    restart: str = "on-failure",
    restart_sec: float = 0.1,
    stop_post: Sequence[str] = (),
    stop_post_timeout: float = 10.0,
    timeout_stop_sec: float = 5.0,
    timeout_abort_sec: float = 1.0,
    max_starts: int = 0,
) -> list[str]:
    """The argv that runs ``command`` under this supervisor (for ``subprocess.Popen``)."""
    return [
        sys.executable,
        "-m",
        "bot.lab.supervisor",
        "--watchdog-sec",
        str(watchdog_sec),
        "--restart",
        restart,
        "--restart-sec",
        str(restart_sec),
        "--stop-post",
        shlex.join(stop_post),
        "--stop-post-timeout",
        str(stop_post_timeout),
        "--timeout-stop-sec",
        str(timeout_stop_sec),
        "--timeout-abort-sec",
        str(timeout_abort_sec),
        "--max-starts",
        str(max_starts),
        "--log",
        str(log),
        "--",
        *command,
    ]


def read_log(path: Path) -> list[dict[str, Any]]:
    """The supervisor's records so far (a torn last line is skipped)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:
                break  # written while we read
            raise ValueError(f"{path}:{i + 1}: not JSON") from None
    return records


def child_pid(path: Path) -> int | None:
    """The pid of the child running now, from the log, or None between runs."""
    pid = None
    for record in read_log(path):
        if record["event"] == "started":
            pid = record["pid"]
        elif record["event"] == "exited" and record.get("pid") == pid:
            pid = None
    return pid


def notify(message: str, socket_path: str | None = None) -> None:
    """Send one sd_notify datagram (what a supervised program does; used by test children)."""
    target = socket_path or os.environ["NOTIFY_SOCKET"]
    address = "\0" + target[1:] if target.startswith("@") else target
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), address)


if __name__ == "__main__":
    sys.exit(main())
