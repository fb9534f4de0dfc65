"""An AMI server that speaks Asterisk 22's wire format, for tests, labs and the demo.

It answers as the captures in ``tests/fixtures/captures`` show (same keys, same order,
same framing): the greeting line, Login (a wrong secret is refused after
``auth_fail_delay`` with ``Authentication failed`` and the socket closed),
Logoff, Ping, CoreStatus, CoreSettings, CoreShowChannels, Originate (with
Newchannel, Hangup and OriginateResponse), DAHDIShowStatus, Command and
Hangup. ``FullyBooted`` is broadcast after the boot delay; ``Shutdown`` goes
to every listener except the session that asked for the stop.

Faults are injected over a control port (JSON lines, see ``control``): span
alarms and clears, Shutdown, stall (sockets stay open, nothing is answered),
drop every connection, slow responses, fake active channels, test call
outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ami.codec import DEFAULT_MAX_FRAME, FrameDecoder, encode, encode_greeting
from ami.errors import AmiProtocolError
from bot.jsonline import request

log = logging.getLogger(__name__)

AMI_VERSION = "11.0.0"
# The write classes that let a user run each action (main/manager.c and
# channels/chan_dahdi.c of 22.10.1: any one of them suffices; none: everyone).
ACTION_CLASSES: dict[str, frozenset[str]] = {
    "corestatus": frozenset({"system", "reporting"}),
    "coresettings": frozenset({"system", "reporting"}),
    "coreshowchannels": frozenset({"system", "reporting"}),
    "command": frozenset({"command"}),
    "originate": frozenset({"originate"}),
    "hangup": frozenset({"system", "call"}),
}
ASTERISK_VERSION = "22.10.1"
CHANNELS_PER_SPAN = 24
ALARM_TEXT = {
    "red": "Red Alarm",
    "yellow": "Yellow Alarm",
    "blue": "Blue Alarm",
    "recovering": "Recovering",
    "loopback": "Loopback",
    "notopen": "Not Open",
}
ALARM_CODE = {
    "red": "RED",
    "yellow": "YEL",
    "blue": "BLU",
    "recovering": "REC",
    "loopback": "LB",
    "notopen": "NOP",
}
TESTCALL_MODES = ("dialplan", "answer", "busy", "noanswer", "congestion", "fail", "silent")
# Extensions of the simulated dialplan, context -> exten -> outcome.
DIALPLAN: dict[str, dict[str, str]] = {
    "test": {
        "answer": "answer",
        "100": "answer",
        "200": "answer",
        "busy": "busy",
        "congestion": "congestion",
        "noanswer": "noanswer",
        "fail": "fail",
        "300": "fail",
    },
}
# outcome -> (OriginateResponse Reason, Hangup cause, cause text)
OUTCOME_CODES = {
    "answer": (4, 16, "Normal Clearing"),
    "busy": (5, 17, "User busy"),
    "congestion": (8, 34, "Circuit/channel congestion"),
    "noanswer": (3, 19, "User alerting, no answer"),
    "fail": (0, 17, "User busy"),
}
MAX_CONTROL_LINE = 65536


Fields = list[tuple[str, str]]


@dataclass
class _Channel:
    name: str
    uniqueid: str
    context: str = "test"
    exten: str = "100"
    application: str = "Wait"
    data: str = ""
    created: float = field(default_factory=time.monotonic)


class _Session:
    def __init__(self, sim: AsteriskSimulator, writer: asyncio.StreamWriter) -> None:
        self.sim = sim
        self.writer = writer
        self.authenticated = False
        self.events = False
        self.closing = False
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.session_id = f"0x{id(self):x}"

    def send(self, fields: Fields) -> None:
        if self.closing or self.writer.is_closing():
            return
        self.writer.write(encode(fields))

    def send_event(self, fields: Fields) -> None:
        if self.authenticated and self.events and self.sim.may_read(fields):
            self.send(fields)

    def close(self, abort: bool = False) -> None:
        self.closing = True
        if abort:
            self.writer.transport.abort()
        else:
            self.writer.close()


async def _answer_sip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


class AsteriskSimulator:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "failover",
        secret: str = "",
        boot_delay: float = 0.0,
        spans: int = 2,
        control_port: int | None = None,
        record: Path | None = None,
        report_alarms: str = "all",
        auth_fail_delay: float = 1.0,
        call_duration: float = 0.3,
        max_frame: int = DEFAULT_MAX_FRAME,
        clock: Callable[[], float] = time.monotonic,
        write: Collection[str] | None = None,
        sip_listen: Callable[[], socket.socket] | None = None,
        read: Collection[str] | None = None,
        dialplan_file: Path | None = None,
    ) -> None:
        """``dialplan_file``: JSON ``{context: {exten: outcome}}`` read at each call, over the
        built-in dialplan; both lab nodes can name one file, as two PBXs share a dialplan
        (a broken test extension fails the test call on either node, across restarts).
        ``sip_listen`` makes a bound TCP socket (e.g. port 5060 in the node's network
        namespace): it listens from FullyBooted until the stop, and every connection is
        accepted and closed, so a client can see when this "Asterisk" serves."""
        self.host = host
        # manager.conf `read =`: events of other classes never reach the user, as in
        # Asterisk (no FullyBooted without `system`, no OriginateResponse without `call`).
        self.read = None if read is None else frozenset(c.strip().lower() for c in read)
        # manager.conf `write =` of the user; None grants every class (`write = all`).
        self.write = None if write is None else frozenset(c.strip().lower() for c in write)
        self.port = port
        self.username = username
        self._secret = secret
        self.boot_delay = boot_delay
        self.nspans = spans
        self.control_port = control_port
        self.record_path = record
        self.report_alarms = report_alarms
        self.auth_fail_delay = auth_fail_delay
        self.call_duration = call_duration
        self.max_frame = max_frame
        self.clock = clock
        self.sip_listen = sip_listen
        self.dialplan_file = dialplan_file
        self._sip: asyncio.Server | None = None
        self.span_alarms: dict[int, str] = {}
        self.channels: dict[str, _Channel] = {}
        self.sessions: set[_Session] = set()
        self.booted = False
        self.stalled = False
        self.slow = 0.0
        self.testcall_mode = "dialplan"
        self.shutting_down = False
        self.started_wall = time.time()
        self.started = clock()
        self.processed_calls = 0
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._server: asyncio.Server | None = None
        self._control: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._call_seq = 0
        self._uid_seq = 0
        self.stopped = asyncio.Event()
        # Control commands of parts served alongside (the ARI server of the same "Asterisk").
        self.commands: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.control_port is not None:
            self._control = await asyncio.start_server(
                self._serve_control, "127.0.0.1", self.control_port, limit=MAX_CONTROL_LINE
            )
            self.control_port = self._control.sockets[0].getsockname()[1]
        self._record("start")
        self._boot()

    def _boot(self) -> None:
        self.booted = False
        self.started_wall = time.time()
        self.started = self.clock()
        self._spawn(self._boot_after(self.boot_delay))

    async def _boot_after(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        self.booted = True
        if self.sip_listen is not None and self._sip is None:
            try:
                self._sip = await asyncio.start_server(_answer_sip, sock=self.sip_listen())
            except OSError as exc:
                log.error("cannot open the SIP listener: %s", exc)
        self._record("fully_booted")
        self.broadcast(
            self._event("FullyBooted", "system", [("Status", "Fully Booted"), *self._uptimes()])
        )

    async def stop(self) -> None:
        """Close everything without sending anything (like a crash, or after Shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in (self._server, self._control, self._sip):
            if server is not None:
                server.close()
        for session in list(self.sessions):
            session.close(abort=True)
        for server in (self._server, self._control, self._sip):
            if server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2.0)
        self._server = self._control = self._sip = None
        self.stopped.set()

    async def shutdown(self, restart: bool = False, issuer: _Session | None = None) -> None:
        """A clean stop: hang up calls, send Shutdown to listeners, close, (re)boot."""
        if self.shutting_down:
            return
        self.shutting_down = True
        cleanly = True
        for chan in list(self.channels.values()):
            self._hangup(chan, 16, "Normal Clearing")
        self._record("shutdown")
        if self._sip is not None:
            self._sip.close()  # a stopping Asterisk takes no new calls
            self._sip = None
        event = self._event(
            "Shutdown",
            "system",
            [("Shutdown", "Cleanly" if cleanly else "Uncleanly"), ("Restart", str(restart))],
        )
        for session in list(self.sessions):
            if session is not issuer:
                session.send_event(event)
        for session in list(self.sessions):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.writer.drain(), 1.0)
            session.close()
        if restart:
            self.shutting_down = False
            self._boot()
        else:
            self._record("exit")
            await self.stop()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("simulator task failed", exc_info=task.exception())

    def _record(self, event: str) -> None:
        if self.record_path is None:
            return
        line = {"t": time.time(), "mono": time.monotonic(), "event": event, "pid": os.getpid()}
        with open(self.record_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    # ------------------------------------------------------------------ helpers

    def _uptimes(self) -> Fields:
        up = str(int(self.clock() - self.started))
        return [("Uptime", up), ("LastReload", up)]

    @staticmethod
    def _event(name: str, privilege: str | None, body: Fields) -> Fields:
        head = [("Event", name)]
        if privilege:
            head.append(("Privilege", f"{privilege},all"))
        return head + body

    def may_read(self, event: Fields) -> bool:
        if self.read is None:
            return True
        privilege = next((v for k, v in event if k == "Privilege"), None)
        if privilege is None:  # items of a list action answer the action itself
            return True
        return bool(self.read & set(privilege.split(",")) - {"all"})

    def broadcast(self, event: Fields) -> None:
        for session in list(self.sessions):
            session.send_event(event)

    def _uniqueid(self) -> str:
        self._uid_seq += 1
        return f"{int(self.started_wall)}.{self._uid_seq - 1}"

    def _snapshot(self, chan: _Channel, state: int, desc: str) -> Fields:
        return [
            ("Channel", chan.name),
            ("ChannelState", str(state)),
            ("ChannelStateDesc", desc),
            ("CallerIDNum", "<unknown>"),
            ("CallerIDName", "<unknown>"),
            ("ConnectedLineNum", "<unknown>"),
            ("ConnectedLineName", "<unknown>"),
            ("Language", "en"),
            ("AccountCode", ""),
            ("Context", chan.context),
            ("Exten", chan.exten),
            ("Priority", "1"),
            ("Uniqueid", chan.uniqueid),
            ("Linkedid", chan.uniqueid),
        ]

    def _add_channel(self, chan: _Channel, state: int = 6, desc: str = "Up") -> None:
        self.channels[chan.name] = chan
        self.broadcast(self._event("Newchannel", "call", self._snapshot(chan, state, desc)))

    def _hangup(self, chan: _Channel, cause: int, text: str) -> None:
        if self.channels.pop(chan.name, None) is None:
            return
        self.broadcast(
            self._event(
                "Hangup",
                "call",
                [*self._snapshot(chan, 6, "Up"), ("Cause", str(cause)), ("Cause-txt", text)],
            )
        )

    def set_channels(self, count: int) -> None:
        fakes = [c for c in self.channels.values() if c.name.startswith("DAHDI/")]
        while len(fakes) > count:
            self._hangup(fakes.pop(), 16, "Normal Clearing")
        while len(fakes) < count:
            n = len(fakes) + 1
            chan = _Channel(f"DAHDI/{n}-{self._uid_seq + 1}", self._uniqueid(), "from-pstn", "s")
            chan.application = "Dial"
            self._add_channel(chan)
            fakes.append(chan)

    def set_span_alarm(self, span: int, kind: str | None) -> None:
        """Raise (kind) or clear (None) a span's alarm and report it as chan_dahdi does."""
        if kind is None:
            if self.span_alarms.pop(span, None) is None:
                return
        else:
            self.span_alarms[span] = kind
        first = (span - 1) * CHANNELS_PER_SPAN + 1
        if self.report_alarms in ("all", "channels"):
            for ch in range(first, first + CHANNELS_PER_SPAN):
                if kind is None:
                    self.broadcast(self._event("AlarmClear", "system", [("DAHDIChannel", str(ch))]))
                else:
                    self.broadcast(
                        self._event(
                            "Alarm",
                            "system",
                            [("DAHDIChannel", str(ch)), ("Alarm", ALARM_TEXT[kind])],
                        )
                    )
        if self.report_alarms in ("all", "spans"):
            if kind is None:
                self.broadcast(self._event("SpanAlarmClear", "system", [("Span", str(span))]))
            else:
                self.broadcast(
                    self._event(
                        "SpanAlarm", "system", [("Span", str(span)), ("Alarm", ALARM_TEXT[kind])]
                    )
                )

    def set_stalled(self, stalled: bool) -> None:
        self.stalled = stalled
        if stalled:
            self._unstalled.clear()
        else:
            self._unstalled.set()

    def drop(self) -> int:
        n = len(self.sessions)
        for session in list(self.sessions):
            session.close(abort=True)
        return n

    def state(self) -> dict[str, Any]:
        return {
            "ok": True,
            "pid": os.getpid(),
            "port": self.port,
            "booted": self.booted,
            "stalled": self.stalled,
            "slow": self.slow,
            "testcall": self.testcall_mode,
            "sessions": len(self.sessions),
            "authenticated": sum(1 for s in self.sessions if s.authenticated),
            "channels": len(self.channels),
            "spans": {str(n): self.span_alarms.get(n, "none") for n in range(1, self.nspans + 1)},
            "report_alarms": self.report_alarms,
        }

    # ------------------------------------------------------------------ AMI sessions

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, writer)
        self.sessions.add(session)
        decoder = FrameDecoder(max_frame=self.max_frame)
        try:
            await self._unstalled.wait()  # a hung Asterisk accepts but never greets
            writer.write(encode_greeting(AMI_VERSION))
            while not session.closing:
                data = await reader.read(65536)
                if not data:
                    break
                decoder.receive_data(data)
                while not session.closing and (frame := decoder.next_event()) is not None:
                    assert isinstance(frame, dict)
                    await self._unstalled.wait()
                    if self.slow > 0:
                        await asyncio.sleep(self.slow)
                    await self._handle(session, {k.lower(): v for k, v in frame.items()})
                await writer.drain()
        except AmiProtocolError as exc:
            log.warning("AMI session %s: %s; closing it", session.peer, exc)
        except (ConnectionError, OSError):
            pass
        finally:
            self.sessions.discard(session)
            session.close(abort=True)

    async def _handle(self, s: _Session, a: dict[str, str]) -> None:
        action = a.get("action", "").strip()
        low = action.lower()
        reply: Fields = [("Response", "Success")]
        if "actionid" in a:
            reply.append(("ActionID", a["actionid"]))

        def error(message: str) -> None:
            s.send([("Response", "Error"), *reply[1:], ("Message", message)])

        if low == "login":
            await self._login(s, a, reply)
            return
        if low == "logoff":
            s.send([("Response", "Goodbye"), *reply[1:], ("Message", "Thanks for all the fish.")])
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.writer.drain(), 1.0)
            s.close()
            return
        if low == "challenge":
            reply.append(("Challenge", "123456789"))
            s.send(reply)
            return
        if not s.authenticated:
            error("Permission denied")
            return
        if self.shutting_down:
            error("Asterisk is shutting down")
            return
        handler = self._ACTIONS.get(low)
        if handler is None:
            error(
                f"Invalid/unknown command: {action}. "
                "Use Action: ListCommands to show available commands."
            )
            return
        need = ACTION_CLASSES.get(low)
        if need and self.write is not None and not need & self.write:
            error("Permission denied")  # all a real Asterisk says about a missing right
            return
        await handler(self, s, a, reply)

    async def _login(self, s: _Session, a: dict[str, str], reply: Fields) -> None:
        if s.authenticated:
            s.send([*reply, ("Message", "Already authenticated")])
            return
        if a.get("username") != self.username or a.get("secret") != self._secret:
            await asyncio.sleep(self.auth_fail_delay)
            s.send([("Response", "Error"), *reply[1:], ("Message", "Authentication failed")])
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.writer.drain(), 1.0)
            s.close()
            return
        s.authenticated = True
        s.events = a.get("events", "on").strip().lower() != "off"
        s.send([*reply, ("Message", "Authentication accepted")])
        if self.booted:
            # Sent at login: Uptime and LastReload before Status (unlike the broadcast).
            s.send_event(
                self._event("FullyBooted", "system", [*self._uptimes(), ("Status", "Fully Booted")])
            )
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime())
        self.broadcast(
            self._event(
                "SuccessfulAuth",
                "security",
                [
                    ("EventTV", now),
                    ("Severity", "Informational"),
                    ("Service", "AMI"),
                    ("EventVersion", "1"),
                    ("AccountID", self.username),
                    ("SessionID", s.session_id),
                    ("LocalAddress", f"IPV4/TCP/{self.host}/{self.port}"),
                    ("RemoteAddress", f"IPV4/TCP/{s.peer.replace(':', '/')}"),
                    ("UsingPassword", "0"),
                    ("SessionTV", now),
                ],
            )
        )

    async def _ping(self, s: _Session, a: dict[str, str], reply: Fields) -> None:
        s.send([*reply, ("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")])

    async def _core_status(self, s: _Session, a: dict[str, str], reply: Fields) -> None:
        start = time.localtime(self.started_wall)
        date, hms = time.strftime("%Y-%m-%d", start), time.strftime("%H:%M:%S", start)
        s.send(
            [
                *reply,
                ("CoreStartupDate", date),
                ("CoreStartupTime", hms),
                ("CoreReloadDate", date),
                ("CoreReloadTime", hms),
                ("CoreCurrentCalls", str(len(self.channels))),
                ("CoreProcessedCalls", str(self.processed_calls)),
            ]
        )

    async def _core_settings(self, s: _Session, a: dict[str, str], reply: Fields) -> None:
        s.send(
            [
                *reply,
                ("AMIversion", AMI_VERSION),
                ("AsteriskVersion", ASTERISK_VERSION),
                ("SystemName", ""),
                ("CoreMaxCalls", "0"),
                ("CoreMaxLoadAvg", "0.000000"),
                ("CoreRunUser", ""),
                ("CoreRunGroup", ""),
                ("CoreMaxFilehandles", "0"),
                ("CoreRealTimeEnabled", "No"),
                ("CoreCDRenabled", "Yes"),
                ("CoreHTTPenabled", "No"),
                ("SoundsSearchCustomDir", "No"),
            ]
        )

    async def _core_show_channels(self, s: _Session, a: dict[str, str], reply: Fields) -> None:
        s.send([*reply, ("EventList", "start"), ("Message", "Channels will follow")])
        aid = reply[1:]
        now = time.monotonic()
        for chan in list(self.channels.values()):
            dur = int(now - chan.created)
            s.send(
                [
                    ("Event", "CoreShowChannel"),
                    *aid,
                    *self._snapshot(chan, 6, "Up"),
                    ("Application", chan.application),
                    ("ApplicationData", chan.data),
                    ("Duration", f"{dur // 3600:02d}:{dur // 60 % 60:02d}:{dur % 60:02d}"),
                    ("BridgeId", ""),
                ]
            )
        s.send(
            [
                ("Event", "CoreShowChannelsComplete"),
                *aid,
                ("EventList", "Complete"),
                ("ListItems", str(len(self.channels))),
            ]
        )

    async def _dahdi_show_status(self, s: _Session, a: dict[str, str], reply: Fields) -> None:
        if self.nspans <= 0:
            s.send([("Response", "Error"), *reply[1:], ("Message", "No DAHDI detected")])
            return
        s.send([*reply, ("EventList", "start"), ("Message", "DAHDI span statuses will follow")])
        aid = reply[1:]
        for span in range(1, self.nspans + 1):
            kind = self.span_alarms.get(span)
            s.send(
                [
                    ("Event", "DAHDIShowStatus"),
                    ("Span", str(span)),
                    ("Description", f"T1 span {span} (simulated)"),
                    ("Alarms", ALARM_CODE[kind] if kind else "OK"),
                    ("IRQ", "0"),
                    ("bpviol", "0"),
                    ("CRC", "0"),
                    ("Framing", "ESF"),
                    ("Coding", "B8ZS"),
                    ("Options", ""),
                    ("LBO", "0 db (CSU)/0-133 feet (DSX-1)"),
                    *aid,
                ]
            )
        n = str(self.nspans)
        s.send(
            [
                ("Event", "DAHDIShowStatusComplete"),
                *aid,
                ("EventList", "Complete"),
                ("ListItems", n),
                ("Items", n),
            ]
        )

    async def _command(self, s: _Session, a: dict[str, str], reply: Fields) -> None:
        cmd = " ".join(a.get("command", "").split())
        if not cmd:
            s.send([("Response", "Error"), *reply[1:], ("Message", "No command provided")])
            return
        if cmd in ("core stop now", "core restart now"):
            # The issuer gets neither a response nor the Shutdown event, only the close.
            await self.shutdown(restart=cmd.startswith("core restart"), issuer=s)
            return
        if cmd == "core show version":
            output = (
                f"Asterisk {ASTERISK_VERSION} built by root @ simulator on a x86_64 running Linux"
            )
            status = "Success"
        elif cmd == "core show uptime":
            output = f"System uptime: {int(self.clock() - self.started)} seconds"
            status = "Success"
        else:
            hint = " ".join(cmd.split()[:2])
            output = (
                f"No such command '{cmd}' (type 'core show help {hint}' for other possible "
                "commands)"
            )
            status = "Error"
        s.send(
            [("Response", status), *reply[1:], ("Message", "Command output follows")]
            + [("Output", line) for line in output.split("\n")]
        )

    async def _hangup_action(self, s: _Session, a: dict[str, str], reply: Fields) -> None:
        chan = self.channels.get(a.get("channel", ""))
        if chan is None:
            s.send([("Response", "Error"), *reply[1:], ("Message", "No such channel")])
            return
        self._hangup(chan, 16, "Normal Clearing")
        s.send([*reply, ("Message", "Channel Hungup")])

    async def _originate(self, s: _Session, a: dict[str, str], reply: Fields) -> None:
        err = [("Response", "Error"), *reply[1:]]
        channel = a.get("channel", "")
        if not channel:
            s.send([*err, ("Message", "Channel not specified")])
            return
        if "/" not in channel:
            s.send([*err, ("Message", "Invalid channel")])
            return
        try:
            timeout_ms = int(a.get("timeout", "30000"))
        except ValueError:
            s.send([*err, ("Message", "Invalid timeout")])
            return
        if "exten" in a:
            if "context" not in a or "priority" not in a:
                s.send(
                    [*err, ("Message", "Originate with 'Exten' requires 'Context' and 'Priority'")]
                )
                return
            if a["exten"] not in DIALPLAN.get(a["context"], {}):
                s.send([*err, ("Message", "Extension does not exist.")])
                return
            target = [("Context", a["context"]), ("Exten", a["exten"])]
        else:
            target = [("Application", a.get("application", "")), ("Data", a.get("data", ""))]
        outcome = self._outcome(channel)
        is_async = a.get("async", "false").strip().lower() in ("true", "yes", "1", "on")
        if is_async:
            s.send([*reply, ("Message", "Originate successfully queued")])
            self._spawn(self._call(s, a.get("actionid"), channel, target, outcome, timeout_ms))
            return
        reason = await self._call(None, None, channel, target, outcome, timeout_ms)
        if reason == 4:
            s.send([*reply, ("Message", "Originate successfully queued")])
        else:
            s.send([*err, ("Message", "Originate failed")])

    def _dialplan(self) -> dict[str, dict[str, str]]:
        plan = {context: dict(extens) for context, extens in DIALPLAN.items()}
        if self.dialplan_file is None:
            return plan
        try:
            shared = json.loads(self.dialplan_file.read_text())
        except FileNotFoundError:
            return plan
        except (OSError, ValueError) as exc:
            log.warning("dialplan file %s unreadable, ignored: %s", self.dialplan_file, exc)
            return plan
        if not isinstance(shared, dict):
            log.warning("dialplan file %s is not a JSON object, ignored", self.dialplan_file)
            return plan
        for context, extens in shared.items():
            if isinstance(extens, dict):
                plan.setdefault(str(context), {}).update(
                    {str(k): str(v) for k, v in extens.items() if v in OUTCOME_CODES}
                )
        return plan

    def _outcome(self, channel: str) -> str:
        if self.testcall_mode != "dialplan":
            return self.testcall_mode
        tech, _, resource = channel.partition("/")
        if tech.lower() == "local":
            exten, _, context = resource.partition("@")
            return self._dialplan().get(context or "default", {}).get(exten, "fail")
        if tech.upper() == "DAHDI":
            up = [n for n in range(1, self.nspans + 1) if n not in self.span_alarms]
            return "answer" if up else "congestion"
        return "fail"

    async def _call(
        self,
        s: _Session | None,
        action_id: str | None,
        channel: str,
        target: Fields,
        outcome: str,
        timeout_ms: int,
    ) -> int:
        self._call_seq += 1
        self.processed_calls += 1
        exten, _, context = channel.partition("/")[2].partition("@")
        chan = _Channel(
            f"{channel}-{self._call_seq - 1:08x};1", self._uniqueid(), context or "default", exten
        )
        self._add_channel(chan, 0, "Down")
        if outcome == "silent":
            return -1
        if outcome == "noanswer":
            await asyncio.sleep(timeout_ms / 1000)
        else:
            await asyncio.sleep(0.01)
        reason, cause, text = OUTCOME_CODES[outcome]
        answered = reason == 4
        if not answered:
            self._hangup(chan, cause, text)
        if s is not None:
            head: Fields = [("Event", "OriginateResponse"), ("Privilege", "call,all")]
            if action_id is not None:
                head.append(("ActionID", action_id))
            s.send_event(
                [
                    *head,
                    ("Response", "Success" if answered else "Failure"),
                    ("Channel", chan.name if answered else channel),
                    *target,
                    ("Reason", str(reason)),
                    ("Uniqueid", chan.uniqueid if answered else "<unknown>"),
                    ("CallerIDNum", "<unknown>"),
                    ("CallerIDName", "<unknown>"),
                ]
            )
        if answered:
            self._spawn(self._hang_up_later(chan))
        return reason

    async def _hang_up_later(self, chan: _Channel) -> None:
        await asyncio.sleep(self.call_duration)
        self._hangup(chan, 16, "Normal Clearing")

    _ACTIONS: dict[str, Any] = {
        "ping": _ping,
        "corestatus": _core_status,
        "coresettings": _core_settings,
        "coreshowchannels": _core_show_channels,
        "dahdishowstatus": _dahdi_show_status,
        "command": _command,
        "originate": _originate,
        "hangup": _hangup_action,
    }

    # ------------------------------------------------------------------ control

    async def _serve_control(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(b'{"ok": false, "error": "line too long"}\n')
                    break
                if not line:
                    break
                try:
                    cmd = json.loads(line)
                    if not isinstance(cmd, dict):
                        raise ValueError("a command is a JSON object")
                    answer = await self.apply(cmd)
                except (ValueError, KeyError, TypeError) as exc:
                    answer = {"ok": False, "error": str(exc) or type(exc).__name__}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def apply(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Apply one control command; raises ValueError for a bad one."""
        name = cmd.get("cmd")
        if name == "span_alarm":
            span, kind = int(cmd["span"]), str(cmd.get("kind", "red"))
            if kind not in ALARM_TEXT:
                raise ValueError(f"kind must be one of {', '.join(ALARM_TEXT)}")
            if not 1 <= span <= self.nspans:
                raise ValueError(f"span must be 1..{self.nspans}")
            self.set_span_alarm(span, kind)
        elif name == "span_clear":
            self.set_span_alarm(int(cmd["span"]), None)
        elif name == "shutdown":
            self._spawn(self.shutdown(restart=bool(cmd.get("restart", False))))
        elif name == "stall":
            self.set_stalled(True)
        elif name == "unstall":
            self.set_stalled(False)
        elif name == "drop":
            return {"ok": True, "dropped": self.drop()}
        elif name == "slow":
            delay = float(cmd.get("delay", 0.0))
            if not 0 <= delay <= 60:
                raise ValueError("delay must be 0..60 s")
            self.slow = delay
        elif name == "channels":
            count = int(cmd["count"])
            if not 0 <= count <= 1000:
                raise ValueError("count must be 0..1000")
            self.set_channels(count)
        elif name == "testcall":
            mode = str(cmd.get("mode", "dialplan"))
            if mode not in TESTCALL_MODES:
                raise ValueError(f"mode must be one of {', '.join(TESTCALL_MODES)}")
            self.testcall_mode = mode
        elif name == "report_alarms":
            mode = str(cmd.get("mode", "all"))
            if mode not in ("all", "spans", "channels", "none"):
                raise ValueError("mode must be all, spans, channels or none")
            self.report_alarms = mode
        elif isinstance(name, str) and name in self.commands:
            return {**self.state(), **self.commands[name](cmd)}
        elif name != "state":
            raise ValueError(f"unknown command {name!r}")
        return self.state()


async def control(port: int, cmd: dict[str, Any], timeout: float = 2.0) -> dict[str, Any]:  # noqa: ASYNC109
    """Send one control command to a simulator on 127.0.0.1:port; its JSON answer."""
    return await request(port, cmd, timeout)
