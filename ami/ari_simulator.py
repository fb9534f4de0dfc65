"""An ARI server (aiohttp) that answers like Asterisk 22's, for tests and labs.

Same bodies, key order, JSON spacing and headers as ``tests/fixtures/captures/ari-*``:
``GET /ari/asterisk/ping``, ``GET /ari/asterisk/info``, ``POST /ari/channels``
into a Stasis app (the channel comes back ``Down``; an answering extension of
the simulated dialplan then sends ``StasisStart``, a missing one
``ChannelDestroyed`` with cause 0), ``DELETE /ari/channels/{id}`` and the
``/ari/events`` websocket. Basic auth or ``api_key``; a refusal is the exact
401 of Asterisk.

Faults: ``stall()`` (requests are held unanswered, websockets stay open),
``freeze_websockets()`` (websocket pings go unanswered), ``drop_websockets()``
(transports aborted without a close frame: the client sees 1006, as when
Asterisk stops) and ``stop()``/``start()`` on the same port.

As a process: ``failover-bot simulate ari`` (``bot.commands.sim_ari``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from ami.simulator import DIALPLAN, OUTCOME_CODES

log = logging.getLogger(__name__)

ASTERISK_VERSION = "22.10.1"
# Asterisk's http.c answer for a path no module has registered (e.g. /ari while
# res_ari is still loading), byte for byte as 22.10.1 sends it.
NOT_FOUND_PAGE = (
    '<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\r\n<html><head>\r\n'
    "<title>404 Not Found</title>\r\n</head><body>\r\n<h1>Not Found</h1>\r\n"
    "<p>The requested URL was not found on this server.</p>\r\n<hr />\r\n"
    f"<address>Asterisk/{ASTERISK_VERSION}</address>\r\n</body></html>\r\n"
)
ENTITY_ID = "02:00:00:00:00:0a"
REALM = "Asterisk REST Interface"
BUILD: dict[str, str] = {
    "os": "Linux",
    "kernel": "6.18.44-fc-v595",
    "machine": "x86_64",
    "options": "OPTIONAL_API",
    "date": "2026-11-25 18:03:26 UTC",
    "user": "root",
}
_CALLER_ID = re.compile(r'^\s*(?:"([^"]*)"|([^<]*?))\s*(?:<([^>]*)>)?\s*$')
_LOCAL = re.compile(r"^Local/([^@/]+)@([^/]+)$")


def ari_timestamp(wall: float) -> str:
    """Asterisk's ARI time format: ``2026-11-25T18:26:14.205+0000`` (UTC, milliseconds)."""
    ms = round(wall * 1000)
    secs, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{millis:03d}+0000"


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def parse_caller_id(text: str) -> tuple[str, str]:
    """``"Name" <number>`` -> (name, number)."""
    m = _CALLER_ID.match(text)
    if not m:
        return "", text
    name = m.group(1) if m.group(1) is not None else (m.group(2) or "")
    if m.group(3) is None and m.group(1) is None and name.isdigit():
        return "", name  # a bare number, as ast_callerid_parse reads it
    return name, m.group(3) or ""


@dataclass
class _Channel:
    id: str
    name: str
    state: str
    caller: tuple[str, str]
    context: str
    exten: str
    app_name: str
    app_data: str
    created: str

    def snapshot(self) -> dict[str, Any]:
        name, number = self.caller
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "protocol_id": "",
            "caller": {"name": name, "number": number},
            "connected": {"name": name, "number": number},
            "accountcode": "",
            "dialplan": {
                "context": self.context,
                "exten": self.exten,
                "priority": 1,
                "app_name": self.app_name,
                "app_data": self.app_data,
            },
            "creationtime": self.created,
            "language": "en",
        }


class AriSimulator:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "failover",
        password: str = "",
        *,
        entity_id: str = ENTITY_ID,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.entity_id = entity_id
        self.wall = wall
        self.started_at = wall()
        self.requests: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self.booting = False
        self._sockets: dict[web.WebSocketResponse, list[str]] = {}
        self._channels: dict[str, _Channel] = {}
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._id_base = int(self.started_at)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/ari"

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.on_response_prepare.append(self._headers)
        app.router.add_get("/ari/asterisk/ping", self._ping)
        app.router.add_get("/ari/asterisk/info", self._info)
        app.router.add_post("/ari/channels", self._originate)
        app.router.add_delete("/ari/channels/{id}", self._hangup)
        app.router.add_get("/ari/events", self._events)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server
            assert isinstance(server, asyncio.base_events.Server)
            self.port = server.sockets[0].getsockname()[1]
        log.info("ARI simulator on %s", self.url)

    async def stop(self) -> None:
        """Asterisk stopping: websockets dropped without a close frame, the port closed."""
        self._unstalled.set()
        self.drop_websockets()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- faults -----------------------------------------------------------

    def boot(self, booting: bool = True) -> None:
        """Booting (on): Asterisk's HTTP server already answers, but res_ari has not
        registered /ari yet, so every request gets http.c's 404 page, before any
        authentication. Off: ARI is loaded."""
        self.booting = booting

    def stall(self, on: bool = True) -> None:
        """Hold every request unanswered (on) or answer them again (off)."""
        if on:
            self._unstalled.clear()
        else:
            self._unstalled.set()

    def drop_websockets(self) -> int:
        """Abort every events websocket without a close frame (the client sees 1006)."""
        dropped = 0
        for ws in list(self._sockets):
            transport = ws._req.transport if ws._req is not None else None
            if transport is not None:
                transport.abort()
                dropped += 1
        self._sockets.clear()
        return dropped

    def freeze_websockets(self) -> int:
        """Stop reading the events websockets: pings go unanswered, like a hung Asterisk."""
        frozen = 0
        for ws in self._sockets:
            transport = ws._req.transport if ws._req is not None else None
            if transport is not None:
                transport.pause_reading()
                frozen += 1
        return frozen

    def ws_clients(self, app: str | None = None) -> int:
        return sum(1 for apps in self._sockets.values() if app is None or app in apps)

    async def send_raw(self, text: str, app: str | None = None) -> int:
        """Send one text frame as is to the websockets of ``app`` (all when None)."""
        sent = 0
        for ws, apps in list(self._sockets.items()):
            if app is not None and app not in apps:
                continue
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(text)
                sent += 1
        return sent

    async def send_event(self, app: str, type_: str, **fields: Any) -> int:
        event: dict[str, Any] = {"type": type_, "timestamp": ari_timestamp(self.wall())}
        event.update(fields)
        event["asterisk_id"] = self.entity_id
        event["application"] = app
        return await self.send_raw(dumps(event), app)

    # -- HTTP -------------------------------------------------------------

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = f"Asterisk/{ASTERISK_VERSION}"
        response.headers["Cache-Control"] = "no-cache, no-store"

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.booting:
            return web.Response(
                status=404, body=NOT_FOUND_PAGE.encode(), headers={"Content-Type": "text/html"}
            )
        if not self._authorized(request):
            resp = self._json(401, {"message": "Authentication required"})
            resp.headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
            return resp
        await self._unstalled.wait()
        result: web.StreamResponse = await handler(request)
        return result

    def _authorized(self, request: web.Request) -> bool:
        key = request.query.get("api_key")
        if key is not None:
            user, _, password = key.partition(":")
            return user == self.username and password == self._password
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        return user == self.username and password == self._password

    @staticmethod
    def _json(status: int, obj: Any) -> web.Response:
        return web.Response(
            status=status, body=dumps(obj).encode(), headers={"Content-Type": "application/json"}
        )

    async def _ping(self, request: web.Request) -> web.Response:
        return self._json(
            200,
            {
                "ping": "pong",
                "timestamp": ari_timestamp(self.wall()),
                "asterisk_id": self.entity_id,
            },
        )

    def info_body(self) -> dict[str, Any]:
        started = ari_timestamp(self.started_at)
        return {
            "build": dict(BUILD),
            "system": {"version": ASTERISK_VERSION, "entity_id": self.entity_id},
            "config": {"name": "", "default_language": "en", "setid": {"user": "", "group": ""}},
            "status": {"startup_time": started, "last_reload_time": started},
        }

    async def _info(self, request: web.Request) -> web.Response:
        body = self.info_body()
        only = request.query.get("only")
        if only:
            wanted = [part.strip() for part in only.split(",")]
            body = {k: v for k, v in body.items() if k in wanted}
        return self._json(200, body)

    async def _originate(self, request: web.Request) -> web.Response:
        q = request.query
        endpoint = q.get("endpoint", "")
        if not endpoint:
            return self._json(400, {"message": "Endpoint must be specified"})
        app = q.get("app", "")
        app_args = q.get("appArgs", "")
        caller = parse_caller_id(q["callerId"]) if "callerId" in q else ("", "")
        m = _LOCAL.match(endpoint)
        exten, context = (m.group(1), m.group(2)) if m else ("s", "default")
        created = ari_timestamp(self.wall())
        seq = self._seq
        self._seq += 1
        base = f"{endpoint}-{seq:08x}"
        one = _Channel(
            id=f"{self._id_base}.{2 * seq}",
            name=base + ";1",
            state="Down",
            caller=caller,
            context=context,
            exten=exten,
            app_name="AppDial2",
            app_data="(Outgoing Line)",
            created=created,
        )
        two = _Channel(
            id=f"{self._id_base}.{2 * seq + 1}",
            name=base + ";2",
            state="Ring",
            caller=caller,
            context=context,
            exten=exten,
            app_name="",
            app_data="",
            created=created,
        )
        answer = self._answer(request, one.snapshot())
        outcome = DIALPLAN.get(context, {}).get(exten)
        if app and outcome == "answer":
            self._channels[one.id] = one
            self._channels[two.id] = two
            one.state = two.state = "Up"
            one.app_name, one.app_data = "Stasis", ",".join(x for x in (app, app_args) if x)
            two.app_name = "Answer"
            args = app_args.split(",") if app_args else []
            self._after(
                answer, self.send_event(app, "StasisStart", args=args, channel=one.snapshot())
            )
        elif app:
            cause, cause_txt = (0, "Unknown")
            if outcome is not None:
                _, cause, cause_txt = OUTCOME_CODES[outcome]
            self._after(answer, self._destroyed(app, [two, one], cause, cause_txt))
        return answer

    def _answer(self, request: web.Request, snapshot: dict[str, Any]) -> web.Response:
        return self._json(200, snapshot)

    def _after(self, answer: web.Response, coro: Any) -> None:
        # Events follow the HTTP answer, as on Asterisk: queue them behind it.
        async def later() -> None:
            await asyncio.sleep(0)
            try:
                await coro
            except Exception:  # a test helper must never take the server down
                log.exception("ARI simulator: sending events failed")

        task = asyncio.get_running_loop().create_task(later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _destroyed(self, app: str, chans: list[_Channel], cause: int, txt: str) -> None:
        for ch in chans:
            await self.send_event(
                app, "ChannelDestroyed", cause=cause, cause_txt=txt, channel=ch.snapshot()
            )

    async def _hangup(self, request: web.Request) -> web.Response:
        chan = self._channels.pop(request.match_info["id"], None)
        if chan is None:
            return self._json(404, {"message": "Channel not found"})
        app = chan.app_data.split(",", 1)[0]
        peer_id = chan.id.rsplit(".", 1)
        other = self._channels.pop(f"{peer_id[0]}.{int(peer_id[1]) + 1}", None)

        async def events() -> None:
            snap = chan.snapshot()
            hangup = {"cause": 32, "soft": True, "type": "ChannelHangupRequest"}
            hangup.update(timestamp=ari_timestamp(self.wall()), channel=snap)
            hangup.update(asterisk_id=self.entity_id, application=app)
            await self.send_raw(dumps(hangup), app)
            await self.send_event(app, "StasisEnd", channel=snap)
            chan.app_name, chan.app_data = "AppDial2", "(Outgoing Line)"
            await self._destroyed(app, [chan] + ([other] if other else []), 16, "Normal Clearing")

        resp = web.Response(status=204)
        self._after(resp, events())
        return resp

    async def _events(self, request: web.Request) -> web.StreamResponse:
        apps = [a for a in request.query.get("app", "").split(",") if a]
        if not apps:
            return self._json(400, {"message": "Missing required param: app"})
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets[ws] = apps
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self._sockets.pop(ws, None)
        return ws


# -- as a process -------------------------------------------------------------
