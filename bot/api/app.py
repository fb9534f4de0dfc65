"""The HTTP API (aiohttp): health endpoints, status, SSE, status page, controls, peer.

Handlers read the node's view or record intent on the bus through
``ControlSink``; the agent's loop acts on it.  Every JSON answer is rendered by
``_Renderer``, which turns ``Secret`` objects into ``***`` and scrubs every
known secret value from the text, so no answer can carry one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bot.api import requests as rq
from bot.api.protocols import ControlSink, NodeView, PeerHandler
from bot.config import Secret
from bot.peer import SIGNATURE_HEADER
from bot.statusview import PAGE_TABLE_MARK, status_table_html

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
BODY_TIMEOUT = 5.0
CONTROL_TIMEOUT = 5.0

VIEW: web.AppKey[NodeView] = web.AppKey("view", NodeView)
CONTROLS: web.AppKey[ControlSink] = web.AppKey("controls", ControlSink)
PEER: web.AppKey[PeerHandler | None] = web.AppKey("peer", object)  # type: ignore[arg-type]
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)
SETTINGS: web.AppKey[_Settings] = web.AppKey("settings", object)  # type: ignore[arg-type]


class _Renderer:
    """JSON with secrets removed: Secret objects and known secret values."""

    def __init__(self, secrets: Iterable[Secret]) -> None:
        values = {s.reveal() for s in secrets if s is not None}
        self._values = sorted((v for v in values if v), key=len, reverse=True)

    def text(self, data: Any) -> str:
        out = json.dumps(data, default=_default, allow_nan=False, separators=(",", ":"))
        return self.scrub(out)

    def scrub(self, text: str) -> str:
        for value in self._values:
            # Inside JSON a value may appear escaped (quotes, backslashes, non-ASCII).
            for form in {value, json.dumps(value)[1:-1]}:
                if form in text:
                    text = text.replace(form, "***")
        return text

    def response(self, data: Any, status: int = 200) -> web.Response:
        return web.Response(text=self.text(data), status=status, content_type="application/json")


def _default(obj: Any) -> Any:
    if isinstance(obj, Secret):
        return "***"
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


class _Settings:
    def __init__(
        self,
        token: Secret | None,
        nodes: Collection[str],
        renderer: _Renderer,
        page: bytes,
        keepalive: float,
        max_streams: int,
        status_interval: float,
    ) -> None:
        self.token = token
        self.nodes = tuple(nodes)
        self.render = renderer
        self.page = page
        self.keepalive = keepalive
        self.status_interval = status_interval
        self.max_streams = max_streams
        self.streams = 0
        self.closing = asyncio.Event()


def _settings(request: web.Request) -> _Settings:
    return request.app[SETTINGS]


def _error(request: web.Request, status: int, reason: str, **extra: Any) -> web.Response:
    resp = _settings(request).render.response({"error": reason, **extra}, status)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="failover-bot"'
    return resp


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(request, exc.status, exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # No str(exc): it could quote a configuration value.
        log.error(
            "API %s %s failed: %s", request.method, request.path, type(exc).__name__, exc_info=True
        )
        return _error(request, 500, f"internal error ({type(exc).__name__})")


async def _body(request: web.Request) -> bytes:
    async with asyncio.timeout(BODY_TIMEOUT):
        return await request.read()


# --------------------------------------------------------------------------- read-only


async def _health(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    healthy, reasons = view.health()
    data = {"node": view.node_id, "role": view.role(), "healthy": healthy, "reasons": reasons}
    return _settings(request).render.response(data, 200 if healthy else 503)


def _role_check(wanted: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        view = request.app[VIEW]
        role = view.role()
        data = {"node": view.node_id, "role": role, wanted: role == wanted}
        return _settings(request).render.response(data, 200 if role == wanted else 503)

    return handler


async def _status(request: web.Request) -> web.Response:
    return _settings(request).render.response(request.app[VIEW].status())


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def _page(request: web.Request) -> web.Response:
    s = _settings(request)
    try:
        table = status_table_html(request.app[VIEW].status())
    except Exception as exc:  # the page still loads; the script fetches /status itself
        log.error("status table failed: %s", type(exc).__name__, exc_info=True)
        table = "<p>status unavailable</p>"
    body = s.page.replace(PAGE_TABLE_MARK, s.render.scrub(table).encode())
    resp = web.Response(body=body, content_type="text/html", charset="utf-8")
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:"
    )
    resp.headers["Cache-Control"] = "no-cache"
    return resp


# --------------------------------------------------------------------------- SSE


def _frame(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


async def _next(it: AsyncIterator[dict[str, Any]]) -> tuple[bool, dict[str, Any] | None]:
    try:
        return True, await anext(it)
    except StopAsyncIteration:
        return False, None


async def _events(request: web.Request) -> web.StreamResponse:
    s = _settings(request)
    if s.closing.is_set():
        return _error(request, 503, "shutting down")
    if s.streams >= s.max_streams:
        return _error(request, 503, f"too many event streams (limit {s.max_streams})")
    view = request.app[VIEW]
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    it = view.subscribe_events()
    s.streams += 1
    nxt: asyncio.Task[tuple[bool, dict[str, Any] | None]] | None = None
    closer = asyncio.ensure_future(s.closing.wait())
    try:
        await resp.prepare(request)
        await resp.write(b"retry: 1000\n\n")
        await resp.write(_frame("status", s.render.text(view.status())))
        while True:
            if nxt is None:
                nxt = asyncio.ensure_future(_next(it))
            # A status frame every status_interval: ages and roles change with time
            # alone (a dead node turns stale), not only with events.
            periodic = 0 < s.status_interval < s.keepalive
            done, _ = await asyncio.wait(
                {nxt, closer},
                timeout=s.status_interval if periodic else s.keepalive,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if closer in done:
                break
            if nxt not in done:
                if periodic:
                    await resp.write(_frame("status", s.render.text(view.status())))
                else:
                    await resp.write(b": keepalive\n\n")
                continue
            more, event = nxt.result()
            nxt = None
            if not more:
                break
            await resp.write(_frame("event", s.render.text(event)))
            await resp.write(_frame("status", s.render.text(view.status())))
    except (ConnectionError, OSError):
        pass  # the client went away
    except Exception as exc:
        log.error("event stream ended: %s", type(exc).__name__, exc_info=True)
    finally:
        s.streams -= 1
        for task in (nxt, closer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    return resp


async def _on_shutdown(app: web.Application) -> None:
    app[SETTINGS].closing.set()


# --------------------------------------------------------------------------- controls


def _authorize(request: web.Request) -> web.Response | None:
    token = _settings(request).token
    if token is None:
        return _error(request, 403, "control endpoints are disabled (api.token_file is not set)")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return _error(request, 401, "a bearer token is required")
    if not hmac.compare_digest(given.strip().encode(), token.reveal().encode()):
        return _error(request, 403, "wrong token")
    return None


Action = Callable[[ControlSink, bytes, Collection[str]], Awaitable[dict[str, Any]]]


async def _switchover(c: ControlSink, body: bytes, nodes: Collection[str]) -> dict[str, Any]:
    req = rq.parse_switchover(body, nodes)
    await c.request_switchover(req.to, req.drain_timeout)
    return {"action": "switchover", "to": req.to, "drain_timeout": req.drain_timeout}


def _pause_action(paused: bool) -> Action:
    async def action(c: ControlSink, body: bytes, nodes: Collection[str]) -> dict[str, Any]:
        rq.parse_empty(body)
        await c.set_paused(paused)
        return {"action": "pause" if paused else "resume"}

    return action


def _cordon_action(on: bool) -> Action:
    async def action(c: ControlSink, body: bytes, nodes: Collection[str]) -> dict[str, Any]:
        req = rq.parse_node(body, nodes)
        await c.set_cordon(req.node, on)
        return {"action": "cordon" if on else "uncordon", "node": req.node}

    return action


async def _clear_failed(c: ControlSink, body: bytes, nodes: Collection[str]) -> dict[str, Any]:
    req = rq.parse_node(body, nodes)
    await c.set_failed(req.node, None)
    return {"action": "clear-failed", "node": req.node}


def _control(action: Action) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        refused = _authorize(request)
        if refused is not None:
            return refused
        s = _settings(request)
        body = await _body(request)
        controls = request.app[CONTROLS]
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT):
                result = await action(controls, body, s.nodes)
        except rq.BadRequest as exc:
            return _error(request, 400, str(exc))
        except TimeoutError:
            return _error(request, 503, "could not record the request: the bus timed out")
        except Exception as exc:
            log.warning("control %s not recorded: %s", request.path, type(exc).__name__)
            return _error(request, 503, f"could not record the request ({type(exc).__name__})")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CONTROL_TIMEOUT):
                await controls.append_event(
                    "control",
                    f"{result['action']} requested through the API",
                    source=request.remote or "",
                    **{k: v for k, v in result.items() if k != "action"},
                )
        return s.render.response({"accepted": True, **result}, 202)

    return handler


async def _heartbeat(request: web.Request) -> web.Response:
    peer = request.app[PEER]
    if peer is None:
        return _error(request, 404, "the peer channel is not configured")
    body = await _body(request)
    status, answer = await peer.handle(body, request.headers.get(SIGNATURE_HEADER))
    return _settings(request).render.response(answer, status)


async def _outdate(request: web.Request) -> web.Response:
    """DRBD fencing from the peer: outdate this node's data (signed like a heartbeat)."""
    peer = request.app[PEER]
    if peer is None:
        return _error(request, 404, "the peer channel is not configured")
    body = await _body(request)
    status, answer = await peer.handle_outdate(body, request.headers.get(SIGNATURE_HEADER))
    return _settings(request).render.response(answer, status)


# --------------------------------------------------------------------------- wiring


def _load_page() -> bytes:
    return resources.files("bot").joinpath("static/status.html").read_bytes()


def create_app(
    *,
    view: NodeView,
    controls: ControlSink,
    peer: PeerHandler | None,
    registry: CollectorRegistry,
    token: Secret | None,
    nodes: Collection[str] = (),
    secrets: Iterable[Secret | None] = (),
    sse_keepalive: float = 15.0,
    max_event_streams: int = 32,
    sse_status_interval: float = 1.0,
) -> web.Application:
    """The API application.

    ``nodes``: the cluster's node ids; requests naming another node get 400
    (empty: not checked).  ``secrets``: further secrets (cluster secret, webhook
    URLs, passwords) that must never appear in an answer.
    """
    known = [s for s in (token, *secrets) if s is not None]
    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY)
    app[VIEW] = view
    app[CONTROLS] = controls
    app[PEER] = peer
    app[REGISTRY] = registry
    app[SETTINGS] = _Settings(
        token,
        nodes,
        _Renderer(known),
        _load_page(),
        sse_keepalive,
        max_event_streams,
        sse_status_interval,
    )
    app.on_shutdown.append(_on_shutdown)
    app.router.add_get("/", _page)
    app.router.add_get("/health", _health)
    app.router.add_get("/primary", _role_check("primary"))
    app.router.add_get("/standby", _role_check("standby"))
    app.router.add_get("/status", _status)
    app.router.add_get("/events", _events)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/switchover", _control(_switchover))
    app.router.add_post("/pause", _control(_pause_action(True)))
    app.router.add_post("/resume", _control(_pause_action(False)))
    app.router.add_post("/cordon", _control(_cordon_action(True)))
    app.router.add_post("/uncordon", _control(_cordon_action(False)))
    app.router.add_post("/clear-failed", _control(_clear_failed))
    app.router.add_post("/peer/heartbeat", _heartbeat)
    app.router.add_post("/peer/outdate", _outdate)
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {listen!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


async def start_api(
    app: web.Application, listen: str, shutdown_timeout: float = 2.0
) -> web.AppRunner:
    """Serve the app on HOST:PORT; the caller owns the runner and calls ``cleanup()``."""
    host, port = parse_listen(listen)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (useful with port 0)."""
    return int(runner.addresses[0][1])
