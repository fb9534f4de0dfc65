"""The R-Series link: request/response over pyserial-asyncio, supervised.

One command in flight (a lock); each has a timeout, after which the next
command first resynchronises (CR LF, then drain until the line is quiet).
Answers are matched to the command in flight by the keys the command table
says they carry, so a stray late answer is not taken for the next one.
Notifications can arrive at any time and go to every subscriber. A lost port
(read error, hang-up, closed socket) is noticed by the transport at once and
the supervisor reopens it with backoff; three timeouts in a row also count as
a lost port (a serial server that vanished without closing the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import serial
import serial_asyncio

from rseries import protocol as p
from rseries.errors import (
    ApplianceError,
    RSeriesError,
    RSeriesLinkError,
    RSeriesProtocolError,
    RSeriesTimeout,
    WriteRefused,
)
from rseries.protocol import ApplianceState, Notification

__all__ = ["ApplianceState", "Notification", "RSeriesLink"]

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 5.0
RECONNECT_MIN = 0.05
RESYNC_QUIET = 0.05
TIMEOUTS_BEFORE_REOPEN = 3
SUBSCRIBER_QUEUE = 1000

LinkCallback = Callable[[bool, str], None]


def _open_serial(url: str, baudrate: int) -> Any:
    """Blocking: open the port exclusively and drop stale input (runs in a thread)."""
    try:
        ser = serial.serial_for_url(url, baudrate=baudrate, exclusive=True, timeout=0)
    except serial.SerialException as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK) or "exclusively lock" in str(exc):
            raise RSeriesLinkError(
                f"{url} is in use by another process (the running bot owns the port)"
            ) from None
        raise RSeriesLinkError(f"cannot open {url}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise RSeriesLinkError(f"cannot open {url}: {exc}") from None
    try:
        ser.reset_input_buffer()
    except (serial.SerialException, OSError) as exc:
        ser.close()
        raise RSeriesLinkError(f"cannot open {url}: {exc}") from None
    return ser


def _close_late(fut: asyncio.Future[Any]) -> None:
    """A port that opened after we stopped waiting is closed, not leaked."""
    if not fut.cancelled() and fut.exception() is None:
        fut.result().close()


class _Protocol(asyncio.Protocol):
    def __init__(self, link: RSeriesLink) -> None:
        self.link = link

    def data_received(self, data: bytes) -> None:
        self.link._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._on_lost(self, exc)


class _Subscription:
    """An async iterator over notifications; registered at creation, so none are missed."""

    def __init__(self, link: RSeriesLink) -> None:
        self._link = link
        self._queue: asyncio.Queue[Notification | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        link._subscribers.add(self)

    def put(self, item: Notification | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # a slow reader loses the oldest, not the newest
            log.warning("R-Series notification subscriber too slow: dropped one")
        self._queue.put_nowait(item)

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Notification:
        item = await self._queue.get()
        if item is None:
            self.close()
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        self._link._subscribers.discard(self)

    async def aclose(self) -> None:
        self.close()


class RSeriesLink:
    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 9600,
        command_timeout: float = 1.0,
        reconnect_max: float = 5.0,
        on_link: LinkCallback | None = None,
        busy_retry_for: float = 2.0,
    ) -> None:
        self.url = url
        self.baudrate = baudrate
        self.command_timeout = command_timeout
        self.reconnect_max = reconnect_max
        self.busy_retry_for = busy_retry_for
        self._on_link = on_link
        self._codec = p.HostCodec()
        self._transport: serial_asyncio.SerialTransport | None = None
        self._protocol: _Protocol | None = None
        self._lock = asyncio.Lock()
        self._pending: tuple[p.Command, asyncio.Future[p.OkResponse | p.ErrResponse]] | None = None
        self._state: ApplianceState | None = None
        # Notifications that arrive while a command waits for its answer: they are newer
        # than a STATUS answer the appliance took before sending them.
        self._notes_while_pending: list[dict[str, str]] = []
        self._subscribers: set[_Subscription] = set()
        self._timeouts = 0
        self._need_resync = False
        self._last_rx = 0.0
        self._lost = asyncio.Event()
        self._closed_fut: asyncio.Future[None] | None = None
        self._closing = False
        self._first_attempt = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.garbage_lines = 0

    # --- public ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._timeouts == 0

    @property
    def state(self) -> ApplianceState | None:
        return self._state

    async def start(self) -> None:
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name="rseries-link")
        await self._first_attempt.wait()

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._drop_transport()
        for sub in list(self._subscribers):
            sub.put(None)

    async def __aenter__(self) -> RSeriesLink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def status(self) -> ApplianceState:
        ok = await self._command(p.status())
        state = ApplianceState.from_fields(ok.fields)
        if state.active is None:
            raise RSeriesProtocolError(f"STATUS answer without a valid ACTIVE: {ok.raw!r}")
        return state

    async def ping(self) -> None:
        await self._command(p.ping())

    async def route(
        self, host: str, *, may_write: Callable[[], bool] | None = None
    ) -> ApplianceState:
        """Move all spans to ``host`` ("A"|"B"), then verify with STATUS.

        ``may_write`` is asked right before each ROUTE line is written (after the link's
        lock and between BUSY retries); False raises ``WriteRefused``, nothing sent."""
        host = host.upper()
        if host not in p.HOSTS:
            raise ValueError(f"host must be A or B, got {host!r}")
        await self._retry_busy(p.route(host), may_write)
        state = await self.status()
        if state.active != host:
            raise RSeriesProtocolError(
                f"ROUTE {host} was acknowledged but STATUS says ACTIVE={state.active}"
            )
        return state

    async def set_mode(self, mode: str) -> None:
        if mode.upper() not in p.MODES:
            raise ValueError(f"mode must be auto or manual, got {mode!r}")
        await self._retry_busy(p.mode(mode))

    async def set_watchdog(self, seconds: int | None) -> None:
        if seconds is not None and not p.WDT_MIN <= seconds <= p.WDT_MAX:
            raise ValueError(f"watchdog must be {p.WDT_MIN}..{p.WDT_MAX} s or None (off)")
        await self._command(p.wdt(seconds))

    async def heartbeat(self) -> None:
        await self._command(p.hb())

    def notifications(self) -> AsyncIterator[Notification]:
        return _Subscription(self)

    async def run_heartbeat(self, interval: float, enabled: Callable[[], bool]) -> None:
        """Send HB every ``interval`` while ``enabled()``; runs until cancelled."""
        failing = False
        next_at = time.monotonic()
        while True:
            if enabled() and self._transport is not None:
                try:
                    await self.heartbeat()
                    if failing:
                        log.info("R-Series heartbeat answered again")
                    failing = False
                except RSeriesError as exc:
                    if not failing:
                        log.warning("R-Series heartbeat failed: %s", exc)
                    failing = True
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # fell behind (slow link): do not burst
                next_at = now
            await asyncio.sleep(next_at - now)

    # --- commands --------------------------------------------------------------

    async def _retry_busy(
        self, command: p.Command, may_write: Callable[[], bool] | None = None
    ) -> p.OkResponse:
        deadline = time.monotonic() + self.busy_retry_for
        pause = 0.01
        while True:
            try:
                return await self._command(command, may_write)
            except ApplianceError as exc:
                if exc.code != p.ERR_BUSY or time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)  # relays settle in tens of ms
                pause = min(pause * 2, 0.2)

    async def _command(
        self, command: p.Command, may_write: Callable[[], bool] | None = None
    ) -> p.OkResponse:
        data = p.encode(command)
        async with self._lock:
            if self._transport is None:
                raise RSeriesLinkError(f"link {self.url} is down: {self.last_error or 'not open'}")
            if self._need_resync:
                await self._resync()
                if self._transport is None:
                    raise RSeriesLinkError(f"link {self.url} lost: {self.last_error}")
            fut: asyncio.Future[p.OkResponse | p.ErrResponse] = (
                asyncio.get_running_loop().create_future()
            )
            if may_write is not None and not may_write():
                raise WriteRefused(
                    f"{data.decode().strip()} not sent: refused right before writing"
                )
            self._pending = (command, fut)
            self._notes_while_pending = []
            try:
                self._transport.write(data)
                async with asyncio.timeout(self.command_timeout):
                    answer = await fut
            except TimeoutError:
                self._on_timeout(command)
                raise RSeriesTimeout(
                    f"no answer to {command} within {self.command_timeout:g} s on {self.url}"
                ) from None
            finally:
                self._pending = None
            if self._timeouts:
                self._timeouts = 0
                self._report(True, "answering again")
        if isinstance(answer, p.ErrResponse):
            raise ApplianceError(answer.code, answer.text)
        return answer

    def _on_timeout(self, command: p.Command) -> None:
        self._need_resync = True
        self._timeouts += 1
        if self._timeouts == 1:
            self._report(False, f"timeout on {command}")
        if self._timeouts >= TIMEOUTS_BEFORE_REOPEN and self._transport is not None:
            log.warning("R-Series %s: %d timeouts in a row, reopening", self.url, self._timeouts)
            self.last_error = "no answers"
            self._transport.abort()

    async def _resync(self) -> None:
        """CR LF ends whatever half line the appliance holds; then drain until quiet."""
        assert self._transport is not None
        self._transport.write(p.EOL)
        self._last_rx = time.monotonic()
        deadline = self._last_rx + self.command_timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(RESYNC_QUIET)
            if time.monotonic() - self._last_rx >= RESYNC_QUIET:
                break
        if self._codec.buffered:
            self._codec = p.HostCodec()  # a half line after a quiet period is noise
        self._need_resync = False

    # --- receiving -------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        self._codec.receive_data(data)
        while not isinstance(event := self._codec.next_event(), p.NeedData):
            if isinstance(event, p.Notification):
                self._on_notification(event)
            elif isinstance(event, p.LineError):
                self.garbage_lines += 1
                log.debug("R-Series %s: skipped %s line %r", self.url, event.reason, event.raw)
            else:
                self._on_answer(event)

    def _on_answer(self, answer: p.OkResponse | p.ErrResponse) -> None:
        pending = self._pending
        if pending is None or pending[1].done():
            log.debug("R-Series %s: stray answer %r", self.url, answer.raw)
            return
        command, fut = pending
        if isinstance(answer, p.OkResponse):
            if not answer.answers(command):
                log.debug("R-Series %s: answer %r does not fit %s", self.url, answer.raw, command)
                return
            if command.verb == "STATUS":
                new = ApplianceState.from_fields(answer.fields)
                for fields in self._notes_while_pending:
                    new = new.updated(fields)
                self._state = new if new.active else self._state
            elif self._state is not None:
                self._state = self._state.updated(answer.fields)
        fut.set_result(answer)

    def _on_notification(self, note: Notification) -> None:
        if self._pending is not None and not self._pending[1].done():
            self._notes_while_pending.append(note.fields)
        if self._state is not None:
            self._state = self._state.updated(note.fields)
        if note.cause:
            log.info("R-Series: spans now on %s (cause %s)", note.active, note.cause)
        for sub in list(self._subscribers):
            sub.put(note)

    # --- supervision -----------------------------------------------------------

    def _report(self, up: bool, reason: str) -> None:
        if self._on_link is None:
            return
        try:
            self._on_link(up, reason)
        except Exception:
            log.exception("R-Series link callback failed")

    async def _supervise(self) -> None:
        delay = RECONNECT_MIN
        warned = False
        while True:
            try:
                await self._open()
            except RSeriesLinkError as exc:
                self.last_error = str(exc)
                if not warned:
                    log.warning("R-Series: %s; retrying", exc)
                warned = True
                self._first_attempt.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max)
                continue
            self._first_attempt.set()
            log.info("R-Series link %s open", self.url)
            warned = False
            delay = RECONNECT_MIN
            self._report(True, "opened")
            try:
                await self.status()  # seed the cache; the appliance may have changed meanwhile
            except RSeriesError as exc:
                log.warning("R-Series: first STATUS failed: %s", exc)
            await self._lost.wait()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        # Opening can block (a TCP connect to a serial server): never on the loop.
        opening = loop.run_in_executor(None, _open_serial, self.url, self.baudrate)
        try:
            # asyncio.timeout, not wait_for: wait_for returns the result when a cancel lands
            # as the open completes, swallowing the cancel (a close then never ended).
            async with asyncio.timeout(OPEN_TIMEOUT):
                ser = await asyncio.shield(opening)
        except TimeoutError:
            opening.add_done_callback(_close_late)
            raise RSeriesLinkError(
                f"cannot open {self.url}: no answer in {OPEN_TIMEOUT:g} s"
            ) from None
        except asyncio.CancelledError:
            opening.add_done_callback(_close_late)
            raise
        self._codec = p.HostCodec()
        self._lost.clear()
        self._timeouts = 0
        self._closed_fut = loop.create_future()
        proto = _Protocol(self)
        self._protocol = proto
        self._transport = serial_asyncio.SerialTransport(loop, proto, ser)
        # The appliance may hold half a line from the port's last user.
        self._need_resync = True

    def _on_lost(self, proto: _Protocol, exc: Exception | None) -> None:
        if proto is not self._protocol:
            return
        self._transport = None
        self._protocol = None
        reason = str(exc) if exc else "closed"
        if self._closed_fut is not None and not self._closed_fut.done():
            self._closed_fut.set_result(None)
        if self._pending is not None and not self._pending[1].done():
            self._pending[1].set_exception(RSeriesLinkError(f"link {self.url} lost: {reason}"))
        if not self._closing:
            self.last_error = f"link lost: {reason}"
            log.warning("R-Series link %s lost: %s", self.url, reason)
            self._report(False, self.last_error)
        self._lost.set()

    async def _drop_transport(self) -> None:
        transport, done = self._transport, self._closed_fut
        if transport is None:
            return
        with contextlib.suppress(serial.SerialException, OSError, AttributeError):
            # Unsent output would make the close wait (tcdrain) for a reader that is gone.
            transport.serial.reset_output_buffer()
        transport.abort()
        if done is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), 1.0)
