"""A supervised AMI connection on ``panoramisk.Manager`` that a failover decision can trust.

Exactly one layer reconnects: this one. panoramisk's own reconnection (after
a lost connection or a ``Shutdown`` event), its pinger and its replay of
pending actions after a reconnect are all bypassed: a test call must never be
re-sent on a new connection behind the caller's back. panoramisk still does
what it is good at: action objects, ActionIDs and correlating responses and
list events with the action that asked for them. Frames are read by our
bounded codec (``ami.codec``), so a peer that never ends a frame cannot grow
memory without limit.

Liveness: panoramisk does not notice a silent peer, so a ``Ping`` goes out
every ``ping_interval``; a reply later than ``ping_timeout`` declares the link
dead, and the socket is closed and reopened. A stalled Asterisk is therefore
detected within ``ping_interval + ping_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.manager import Manager
from panoramisk.message import Message

from ami.codec import DEFAULT_MAX_FRAME, Frame, FrameDecoder, Greeting, encode
from ami.errors import (
    AmiActionError,
    AmiAuthError,
    AmiConnectionError,
    AmiError,
    AmiProtocolError,
    AmiTimeout,
)
from ami.events import AmiEvent, FullyBooted, Shutdown, SpanStatus, parse_event, parse_span_status

if TYPE_CHECKING:
    from bot.config import AmiConfig

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
# A refused login is retried slowly: a wrong secret must never become a hot loop.
AUTH_RETRY = 5.0
# The manager.conf right each action the bot sends needs (main/manager.c).
# Asterisk answers a missing one only with "Permission denied": the bot names it.
ACTION_RIGHTS = {
    "originate": "write = originate",
    "coreshowchannels": "write = reporting",
    "corestatus": "write = reporting",
    "command": "write = command",
}


class AmiState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    AUTHENTICATED = "authenticated"
    FULLY_BOOTED = "fully_booted"


@dataclass(frozen=True)
class ShutdownInfo:
    restart: bool
    cleanly: bool
    at: float


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with jitter: 100 ms doubling up to 5 s, drawn from [cap/2, cap]."""
    cap = min(BACKOFF_MAX, BACKOFF_MIN * (2 ** min(attempt, 16)))
    return rng.uniform(cap / 2, cap)


class _Manager(Manager):
    """panoramisk's Manager with its reconnection and pinger switched off."""

    def __init__(self, client: AmiClient, **config: Any) -> None:
        super().__init__(**config)
        # Drop the replay-on-FullyBooted callback: no action is ever re-sent.
        self.callbacks.clear()
        self.patterns.clear()
        self._client = client

    def connection_lost(self, exc: object) -> None:
        pass  # the client's supervisor decides about reconnecting

    def dispatch(self, event: Any) -> list[str]:
        return []


class _Protocol(AMIProtocol):
    def __init__(self, client: AmiClient) -> None:
        super().__init__()
        self.client = client
        self.decoder = FrameDecoder(expect_greeting=True, max_frame=client.max_frame)
        loop = asyncio.get_running_loop()
        self.greeted: asyncio.Future[Any] = loop.create_future()
        self.lost: asyncio.Future[Any] = loop.create_future()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.factory = self.client._manager
        self.encoding = "utf-8"
        self.log = log

    def send(self, data: Any, as_list: Any = None) -> asyncio.Future[Any]:
        # Our own send: panoramisk's logs the whole action on a write error,
        # and the Login action carries the secret.
        action = data if isinstance(data, Action) else Action(data, as_list=as_list)
        payload = encode([(k, v) for k, v in action.items()])  # refuses CR/LF injection
        if self.closed or self.transport.is_closing():
            raise AmiConnectionError("AMI connection is closed")
        self.responses[action.id] = action
        self.transport.write(payload)
        return action.future

    def data_received(self, data: bytes) -> None:
        try:
            self.decoder.receive_data(data)
            while (item := self.decoder.next_event()) is not None:
                if isinstance(item, Greeting):
                    self.version = item.version
                    if not self.greeted.done():
                        self.greeted.set_result(item.version)
                else:
                    self._frame(item)
        except AmiProtocolError as exc:
            log.error("AMI %s: %s; closing the connection", self.client.address, exc)
            self.transport.abort()

    def _frame(self, fields: Frame) -> None:
        action_id = fields.get("ActionID")
        if action_id is not None:
            pending = self.responses.get(action_id)
            if pending is not None:
                try:
                    if pending.add_message(Message(fields)):
                        self.responses.pop(action_id, None)
                except Exception as exc:  # a malformed answer must not kill the link
                    log.warning("AMI: unusable answer to %s dropped (%r)", action_id, exc)
                return
        if "Event" in fields:
            self.client._on_event(parse_event(fields))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fail_pending(AmiConnectionError("AMI connection lost"))
        if not self.lost.done():
            self.lost.set_result(None)

    def fail_pending(self, exc: AmiError) -> None:
        for action in list(self.responses.values()):
            if not action.future.done():
                action.future.set_exception(exc)
                action.future.exception()  # retrieved: the awaiting caller raises it
        self.responses.clear()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()


class AmiClient:
    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        ping_interval: float = 1.0,
        ping_timeout: float = 1.0,
        connect_timeout: float = 2.0,
        action_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        max_frame: int = DEFAULT_MAX_FRAME,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.connect_timeout = connect_timeout
        self.action_timeout = action_timeout
        self.clock = clock
        self.max_frame = max_frame
        self._rng = rng or random.Random()
        self.state = AmiState.DISCONNECTED
        self.state_since = clock()
        self.last_ping_rtt: float | None = None
        self.reconnects = 0
        self.connects = 0
        self.failures = 0
        self.last_shutdown: ShutdownInfo | None = None
        self.last_error: str | None = None
        # The wait before the next connection attempt, set when a connection ends.
        self.retry_delay: float | None = None
        self.ami_version: str | None = None
        self._subscribers: list[Callable[[AmiEvent], None]] = []
        self._state_listeners: list[Callable[[AmiState, float], None]] = []
        self._manager: _Manager | None = None
        self._proto: _Protocol | None = None
        self._task: asyncio.Task[None] | None = None
        self._booted = asyncio.Event()
        self._booted_seen = False
        self._kick = asyncio.Event()

    @classmethod
    def from_config(cls, cfg: AmiConfig) -> AmiClient:
        secret = cfg.secret_file.reveal() if cfg.secret_file is not None else ""
        return cls(
            cfg.host,
            cfg.port,
            cfg.username,
            secret,
            ping_interval=cfg.ping_interval,
            ping_timeout=cfg.ping_timeout,
            connect_timeout=cfg.connect_timeout,
            action_timeout=cfg.action_timeout,
        )

    def __repr__(self) -> str:
        return f"AmiClient({self.username}@{self.address}, {self.state.value})"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self.state in (AmiState.AUTHENTICATED, AmiState.FULLY_BOOTED)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Spawn the supervision task (it connects, logs in, pings and reconnects)."""
        if self._task is not None:
            return
        self._manager = _Manager(
            self, host=self.host, port=self.port, loop=asyncio.get_running_loop()
        )
        self._task = asyncio.create_task(self._supervise(), name=f"ami-{self.address}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._drop_connection()
        self._set_state(AmiState.DISCONNECTED)

    def kick(self) -> None:
        """Skip the current reconnect backoff (e.g. right after Asterisk was started)."""
        self._kick.set()

    def subscribe(self, callback: Callable[[AmiEvent], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def on_state(self, callback: Callable[[AmiState, float], None]) -> Callable[[], None]:
        self._state_listeners.append(callback)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._state_listeners.remove(callback)

        return remove

    async def wait_fully_booted(self, timeout: float) -> None:  # noqa: ASYNC109
        if self.state is AmiState.FULLY_BOOTED:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._booted.wait()
        except TimeoutError:
            raise AmiTimeout(
                f"Asterisk at {self.address} not fully booted within {timeout:g} s "
                f"(AMI {self.state.value})"
            ) from None

    async def wait_connected(self, within: float) -> None:
        """Until logged in; raises AmiConnectionError with the reason when an attempt fails."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        failures = self.failures
        while not self.connected:
            if loop.time() >= deadline or self.failures > failures:
                raise AmiConnectionError(
                    self.last_error or f"AMI {self.address}: not connected within {within:g} s"
                )
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ state

    def _set_state(self, state: AmiState) -> None:
        if state is self.state:
            return
        self.state = state
        self.state_since = now = self.clock()
        if state is AmiState.FULLY_BOOTED:
            self._booted.set()
        else:
            self._booted.clear()
        log.info("AMI %s: %s", self.address, state.value)
        for listener in list(self._state_listeners):
            try:
                listener(state, now)
            except Exception:
                log.exception("AMI state listener failed")

    def _on_event(self, event: AmiEvent) -> None:
        if isinstance(event, FullyBooted):
            self._booted_seen = True
            if self.state is AmiState.AUTHENTICATED:
                self._set_state(AmiState.FULLY_BOOTED)
        elif isinstance(event, Shutdown):
            self.last_shutdown = ShutdownInfo(event.restart, event.cleanly, self.clock())
            log.warning(
                "AMI %s: Asterisk shutting down (%s, restart %s)",
                self.address,
                "cleanly" if event.cleanly else "uncleanly",
                event.restart,
            )
            # Shutdown is immediate loss: close now, the supervisor reconnects.
            self._booted_seen = False
            if self._proto is not None:
                self._proto.close()
            self._set_state(AmiState.DISCONNECTED)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("AMI event subscriber failed on %s", event.name)

    # ------------------------------------------------------------------ supervision

    async def _supervise(self) -> None:
        attempt = 0
        while True:
            delay: float
            try:
                await self._connect_and_login()
                attempt = 0
                self.last_error = None
                await self._watch()
                delay = backoff_delay(0, self._rng)
            except AmiAuthError as exc:
                self.last_error = str(exc)
                self.failures += 1
                log.error("%s; retrying in %.0f s", exc, AUTH_RETRY)
                delay = AUTH_RETRY * self._rng.uniform(1.0, 1.2)
            except AmiError as exc:
                self.last_error = str(exc)
                self.failures += 1
                delay = backoff_delay(attempt, self._rng)
                attempt += 1
                log.log(
                    logging.WARNING if attempt <= 1 else logging.DEBUG,
                    "%s; reconnecting in %.2f s",
                    exc,
                    delay,
                )
            finally:
                self._drop_connection()
                self._set_state(AmiState.DISCONNECTED)
            self._kick.clear()
            self.retry_delay = delay
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._kick.wait()
            self.reconnects += 1

    def _drop_connection(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None:
            proto.fail_pending(AmiConnectionError("AMI connection closed"))
            if not proto.closed:
                proto.closed = True
                proto.transport.abort()

    async def _connect_and_login(self) -> None:
        self._set_state(AmiState.CONNECTING)
        self._booted_seen = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port
                )
                self._proto = proto
                done, _ = await asyncio.wait(
                    {proto.greeted, proto.lost}, return_when=asyncio.FIRST_COMPLETED
                )
                if proto.greeted not in done:
                    raise AmiConnectionError(f"AMI {self.address}: closed before the greeting")
        except TimeoutError:
            raise AmiTimeout(
                f"AMI {self.address}: no greeting within {self.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise AmiConnectionError(f"AMI {self.address}: {exc.strerror or exc}") from None
        self.ami_version = proto.version
        login = Action(
            {"Action": "Login", "Username": self.username, "Secret": self._secret, "Events": "on"}
        )
        # Asterisk answers a wrong secret only after about 1 s: leave room for that.
        remaining = max(self.action_timeout, deadline - loop.time())
        resp = await self._await(proto, login, remaining, "Login")
        if not resp.success:
            raise AmiAuthError(
                f"AMI login refused for user {self.username!r} at {self.address}: "
                f"{resp.get('Message', 'no reason given')}"
            )
        self.connects += 1
        self._set_state(AmiState.AUTHENTICATED)
        if self._booted_seen:
            self._set_state(AmiState.FULLY_BOOTED)

    async def _watch(self) -> None:
        """Ping until the link dies; returns when it is lost or declared dead."""
        proto = self._proto
        assert proto is not None
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.ping_interval
        while True:
            done, _ = await asyncio.wait({proto.lost}, timeout=max(0.0, next_ping - loop.time()))
            if done or proto.closed:
                raise AmiConnectionError(f"AMI {self.address}: connection lost")
            next_ping = loop.time() + self.ping_interval
            t0 = self.clock()
            try:
                await self._await(proto, Action({"Action": "Ping"}), self.ping_timeout, "Ping")
            except AmiTimeout:
                raise AmiTimeout(
                    f"AMI {self.address}: link dead, no Ping reply within {self.ping_timeout:g} s"
                ) from None
            self.last_ping_rtt = self.clock() - t0

    async def _await(self, proto: _Protocol, action: Action, limit: float, what: str) -> Any:
        future = proto.send(action)
        try:
            async with asyncio.timeout(limit):
                return await future
        except TimeoutError:
            proto.responses.pop(action.id, None)
            raise AmiTimeout(
                f"AMI {self.address}: {what} got no answer within {limit:.3g} s"
            ) from None

    # ------------------------------------------------------------------ actions

    async def send_action(self, fields: dict[str, Any], limit: float | None = None) -> Any:
        """Send one action; its answer (a panoramisk Message, or a list for list actions).

        Raises AmiConnectionError when not logged in, AmiTimeout, and
        AmiActionError for ``Response: Error``.
        """
        proto = self._proto
        if proto is None or not self.connected or proto.closed:
            raise AmiConnectionError(f"AMI {self.address}: not connected ({self.state.value})")
        name = str(fields.get("Action", "action"))
        try:
            action = Action(dict(fields))
        except Exception as exc:
            raise AmiActionError(f"{name}: invalid action ({exc})") from None
        try:
            answer = await self._await(proto, action, limit or self.action_timeout, name)
        except ValueError as exc:  # CR/LF in a value
            raise AmiActionError(f"{name}: {exc}") from None
        first = answer[0] if isinstance(answer, list) else answer
        if first.get("Response", "") == "Error":
            output = first.get("Output", "")
            detail = first.get("Message", "error")
            right = ACTION_RIGHTS.get(name.lower())
            if detail == "Permission denied" and right:
                detail += f": the AMI user {self.username!r} lacks `{right}` in manager.conf"
            raise AmiActionError(f"{name}: {detail}" + (f": {output}" if output else ""))
        return answer

    async def core_status(self) -> dict[str, str]:
        answer = await self.send_action({"Action": "CoreStatus"})
        return {k: str(v) for k, v in answer.items() if k not in ("content", "ActionID")}

    async def active_channels(self) -> int:
        answer = await self.send_action({"Action": "CoreShowChannels"})
        items = answer[1:] if isinstance(answer, list) else []
        return sum(1 for m in items if m.get("Event", "") == "CoreShowChannel")

    async def dahdi_show_status(self) -> list[SpanStatus]:
        answer = await self.send_action({"Action": "DAHDIShowStatus"})
        rows: list[SpanStatus] = []
        for m in answer[1:] if isinstance(answer, list) else []:
            if m.get("Event", "") != "DAHDIShowStatus":
                continue
            try:
                rows.append(parse_span_status({k: str(v) for k, v in m.items()}))
            except (KeyError, ValueError):
                log.warning("AMI: malformed DAHDIShowStatus row ignored")
        return rows

    async def command(self, cmd: str) -> str:
        answer = await self.send_action({"Action": "Command", "Command": cmd})
        return str(answer.get("Output", ""))
