"""ARI (the Asterisk REST Interface) over aiohttp: ping, info, originate, hangup, events.

Errors stay in the ami family: a refused login (401/403) is ``AmiAuthError``,
a link that fails is ``AmiConnectionError``, a request that outlives
``timeout`` is ``AmiTimeout``, an error answer (``{"message": ...}``) is
``AmiActionError`` and a body that is not the JSON ARI promises is
``AmiProtocolError``. The password travels only in the Basic auth header;
no message, log line or repr carries it.

``events()`` is one endless stream over reconnects: when the websocket drops
(Asterisk stopping closes it without a close frame, code 1006) it reconnects
with backoff (100 ms doubling to 5 s, jittered). A frozen peer is found by
websocket ping: no pong within ``timeout`` after a ping (sent every
``2 * timeout`` of silence) drops the socket. Events that happen while it
is down are lost; ``ws_connects`` counts the connections so a consumer can
tell a gap happened.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp

from ami.client import BACKOFF_MIN, backoff_delay
from ami.errors import (
    AmiActionError,
    AmiAuthError,
    AmiConnectionError,
    AmiError,
    AmiProtocolError,
    AmiTimeout,
)

if TYPE_CHECKING:
    from bot.config import AriConfig

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
MAX_FRAME = 1 << 20
# A connection that lived this long counts as healthy: the backoff starts over.
STABLE_AFTER = 5.0
MESSAGE_CUT = 200


def reconnect_delay(attempt: int, rng: random.Random) -> float:
    """Delay before reconnect ``attempt`` (0-based): 100 ms doubling up to 5 s, jittered.

    Drawn from [cap/2, cap] but never under 100 ms, so many clients losing
    the same Asterisk do not come back in step.
    """
    return max(BACKOFF_MIN, backoff_delay(attempt, rng))


def _cut(text: str) -> str:
    text = text.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= MESSAGE_CUT else text[:MESSAGE_CUT] + "..."


def _error_message(status: int, reason: str, body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return _cut(parsed["message"])
    return f"{status} {_cut(reason)}"


class AriClient:
    """One ARI endpoint (``url`` ends in ``/ari``) with one user."""

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        app: str = "failover-bot",
        timeout: float = 2.0,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"ARI url must start with http:// or https://, got {_cut(url)!r}")
        if timeout <= 0:
            raise ValueError("ARI timeout must be positive")
        self.url = url.rstrip("/")
        self.username = username
        self._auth = _BasicAuth(username, password)
        self.app = app
        self.timeout = timeout
        self.clock = clock
        self._rng = rng or random.Random()
        self._session = session
        self._own_session = session is None
        self._sockets: set[aiohttp.ClientWebSocketResponse] = set()
        self._closed = False
        self._closing = asyncio.Event()
        # Health, kept by run_health().
        self.ok = False
        self.ok_since = clock()
        self.last_error: str | None = None
        self.last_rtt: float | None = None
        # Events websocket.
        self.ws_connected = False
        self.ws_connects = 0
        self.ws_last_close: int | None = None

    @classmethod
    def from_config(
        cls, cfg: AriConfig, *, session: aiohttp.ClientSession | None = None
    ) -> AriClient:
        password = cfg.password_file.reveal() if cfg.password_file is not None else ""
        return cls(cfg.url, cfg.username, password, app=cfg.app, session=session)

    def __repr__(self) -> str:
        return f"AriClient({self.url!r}, user={self.username!r}, app={self.app!r})"

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise AmiConnectionError("ARI client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    # -- requests ---------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        *,
        expect_body: bool = True,
    ) -> Any:
        session = self._get_session()
        what = f"ARI {method} {path}"
        try:
            async with asyncio.timeout(self.timeout):
                async with session.request(
                    method,
                    self.url + path,
                    params=params,
                    headers=self._auth.headers(),
                    timeout=aiohttp.ClientTimeout(total=self.timeout),
                    allow_redirects=False,
                ) as resp:
                    body = await self._read_body(resp, what)
                    status, reason = resp.status, resp.reason or ""
        except TimeoutError:
            raise AmiTimeout(f"{what}: no answer within {self.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            # str() of aiohttp errors names host and port only, never headers.
            raise AmiConnectionError(f"{what}: {type(exc).__name__}: {_cut(str(exc))}") from None
        except OSError as exc:
            raise AmiConnectionError(f"{what}: {_cut(str(exc))}") from None
        if status in (401, 403):
            raise AmiAuthError(
                f"{what}: user {self.username!r} refused ({status} {_cut(reason)}: "
                f"{_error_message(status, reason, body)})"
            )
        if status >= 300:
            raise AmiActionError(f"{what}: {status}: {_error_message(status, reason, body)}")
        if not expect_body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            raise AmiProtocolError(
                f"{what}: answer is not JSON ({status}, {len(body)} bytes)"
            ) from None

    @staticmethod
    async def _read_body(resp: aiohttp.ClientResponse, what: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > MAX_BODY:
                raise AmiProtocolError(f"{what}: answer larger than {MAX_BODY} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _expect_object(value: Any, what: str, *keys: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise AmiProtocolError(f"{what}: expected a JSON object, got {type(value).__name__}")
        missing = [k for k in keys if k not in value]
        if missing:
            raise AmiProtocolError(f"{what}: answer lacks {', '.join(missing)}")
        return value

    async def ping(self) -> float:
        """``GET /asterisk/ping``; the round trip in seconds."""
        start = self.clock()
        body = await self._request("GET", "/asterisk/ping")
        rtt = self.clock() - start
        obj = self._expect_object(body, "ARI ping", "ping")
        if obj["ping"] != "pong":
            raise AmiProtocolError(f"ARI ping: answer says {_cut(repr(obj['ping']))}, not 'pong'")
        return rtt

    async def info(self) -> dict[str, Any]:
        """``GET /asterisk/info``: build, system, config and status objects."""
        body = await self._request("GET", "/asterisk/info")
        return self._expect_object(body, "ARI info", "system")

    async def originate(
        self,
        endpoint: str,
        *,
        app_args: str = "",
        timeout: float = 30,  # noqa: ASYNC109 - Asterisk's dial timeout, not ours
        caller_id: str | None = None,
    ) -> dict[str, Any]:
        """``POST /channels`` into the Stasis app; the new Channel object (usually ``Down``).

        A 200 only means the channel exists: the call may still fail at once
        (a missing extension ends in ChannelDestroyed with cause 0).
        """
        # ARI takes whole seconds, -1 for none; never round a short wait down to 0.
        dial_timeout = -1 if timeout < 0 else max(1, math.ceil(timeout))
        params = {"endpoint": endpoint, "app": self.app, "timeout": str(dial_timeout)}
        if app_args:
            params["appArgs"] = app_args
        if caller_id is not None:
            params["callerId"] = caller_id
        body = await self._request("POST", "/channels", params)
        return self._expect_object(body, "ARI originate", "id", "name", "state")

    async def hangup(self, channel_id: str, *, reason: str = "normal") -> None:
        """``DELETE /channels/{id}``; ``AmiActionError`` (404) when the channel is gone."""
        path = "/channels/" + _quote(channel_id)
        await self._request("DELETE", path, {"reason": reason}, expect_body=False)

    # -- events -----------------------------------------------------------

    def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every event of the Stasis app, in order, across reconnects; ends only on close()."""
        return self._events()

    async def _events(self) -> AsyncIterator[dict[str, Any]]:
        attempt = 0
        failing_since: str | None = None
        while not self._closed:
            ws: aiohttp.ClientWebSocketResponse | None = None
            try:
                ws = await self._ws_connect()
            except AmiError as exc:
                if str(exc) != failing_since:
                    log.warning("%s; retrying", exc)
                    failing_since = str(exc)
            if ws is not None:
                failing_since = None
                opened = self.clock()
                try:
                    async with contextlib.aclosing(self._ws_frames(ws)) as frames:
                        async for event in frames:
                            attempt = 0
                            yield event
                finally:
                    self._sockets.discard(ws)
                    self.ws_connected = False
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        await ws.close()
                if self._closed:
                    return
                if self.clock() - opened >= STABLE_AFTER:
                    attempt = 0
                # No close frame (Asterisk stopping or a dead link) reads as 1006.
                self.ws_last_close = ws.close_code or 1006
                log.warning("ARI events websocket lost (code %s); reconnecting", self.ws_last_close)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(reconnect_delay(attempt, self._rng)):
                    await self._closing.wait()
            attempt += 1

    async def _ws_connect(self) -> aiohttp.ClientWebSocketResponse:
        session = self._get_session()
        what = "ARI events websocket"
        try:
            async with asyncio.timeout(self.timeout):
                ws = await session.ws_connect(
                    self.url + "/events",
                    params={"app": self.app},
                    headers=self._auth.headers(),
                    # A silent peer is found by ping/pong: no pong within heartbeat/2 closes.
                    heartbeat=max(2 * self.timeout, 0.2),
                    max_msg_size=MAX_FRAME,
                    autoclose=True,
                    timeout=aiohttp.ClientWSTimeout(ws_close=self.timeout),
                )
        except TimeoutError:
            raise AmiTimeout(f"{what}: no answer within {self.timeout:g}s") from None
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise AmiAuthError(
                    f"{what}: user {self.username!r} refused ({exc.status})"
                ) from None
            raise AmiConnectionError(f"{what}: handshake failed ({exc.status})") from None
        except aiohttp.ClientError as exc:
            raise AmiConnectionError(f"{what}: {type(exc).__name__}: {_cut(str(exc))}") from None
        except OSError as exc:
            raise AmiConnectionError(f"{what}: {_cut(str(exc))}") from None
        if self._closed:
            await ws.close()
            raise AmiConnectionError("ARI client is closed")
        self._sockets.add(ws)
        self.ws_connects += 1
        self.ws_connected = True
        log.info("ARI events websocket connected (app %s)", self.app)
        return ws

    async def _ws_frames(
        self, ws: aiohttp.ClientWebSocketResponse
    ) -> AsyncGenerator[dict[str, Any], None]:
        while True:
            try:
                msg = await ws.receive()
            except (aiohttp.ClientError, OSError) as exc:
                log.debug("ARI events websocket: %s", type(exc).__name__)
                return
            if msg.type == aiohttp.WSMsgType.TEXT:
                event = _parse_frame(msg.data)
                if event is not None:
                    yield event
            elif msg.type == aiohttp.WSMsgType.BINARY:
                log.warning("ARI events websocket: binary frame ignored (%d bytes)", len(msg.data))
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return

    # -- health -----------------------------------------------------------

    async def run_health(self, interval: float) -> None:
        """Ping every ``interval``; keeps ``ok``, ``ok_since``, ``last_error``, ``last_rtt``.

        A stalled Asterisk turns ``ok`` False within ``interval + timeout``.
        Returns once the client is closed.
        """
        if interval <= 0:
            raise ValueError("ARI health interval must be positive")
        while not self._closed:
            started = self.clock()
            try:
                rtt = await self.ping()
            except AmiError as exc:
                self._set_health(False, str(exc))
            except Exception as exc:  # never let a surprise end the health loop
                log.exception("ARI ping: unexpected failure")
                self._set_health(False, f"unexpected {type(exc).__name__}")
            else:
                self.last_rtt = rtt
                self._set_health(True, None)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, interval - (self.clock() - started))):
                    await self._closing.wait()

    def _set_health(self, ok: bool, error: str | None) -> None:
        if ok != self.ok:
            self.ok_since = self.clock()
            if ok:
                log.info("ARI answers (ping %.1f ms)", (self.last_rtt or 0.0) * 1000)
            else:
                log.warning("ARI unhealthy: %s", error)
        self.ok = ok
        self.last_error = error

    async def close(self) -> None:
        self._closed = True
        self._closing.set()
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        self._sockets.clear()
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None


class _BasicAuth:
    """The Authorization header; its repr hides it (aiohttp's BasicAuth repr shows the password)."""

    __slots__ = ("_value",)

    def __init__(self, username: str, password: str) -> None:
        raw = f"{username}:{password}".encode()
        self._value = "Basic " + base64.b64encode(raw).decode("ascii")

    def headers(self) -> dict[str, str]:
        return {"Authorization": self._value}

    def __repr__(self) -> str:
        return "_BasicAuth(***)"

    __str__ = __repr__


def _parse_frame(data: str) -> dict[str, Any] | None:
    """One events frame; a frame that is not a JSON object with a ``type`` is dropped and logged."""
    try:
        event = json.loads(data)
    except ValueError:
        log.warning("ARI events websocket: frame is not JSON, dropped (%d bytes)", len(data))
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        log.warning("ARI events websocket: frame without a type, dropped: %s", _cut(data))
        return None
    return event


def _quote(segment: str) -> str:
    return quote(segment, safe="")
