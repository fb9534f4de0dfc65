"""Collects the local health inputs (I/O) and asks ``bot.health`` for the verdict.

It feeds AMI events into the span model, takes a ``DAHDIShowStatus`` snapshot
now and then, counts active channels and places test calls while this node is
primary. When the AMI link closes on the primary it checks Asterisk's process
at once (the configured status command): a process found gone is a certain
death, acted on without the grace. The verdict itself is pure (``bot.health``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from ami.ari import AriClient
from ami.client import AmiClient, AmiState
from ami.errors import AmiError
from ami.events import AmiEvent
from ami.spans import SpanModel
from ami.testcall import TestCallResult, run_test_call
from bot.config import Config
from bot.health import (
    HealthInputs,
    HealthPolicy,
    PendingShutdown,
    SpanState,
    Verdict,
    evaluate,
    standby_verdict,
)
from bot.metrics import Metrics

log = logging.getLogger(__name__)

PRIMARY_ROLES = ("primary",)
# While the link stays down and the process was not found gone, check again this
# often (a process that was just killed may still be reaped, or its unit still
# "active", at the first check), until the grace decides anyway.
PROCESS_RECHECK = 0.2


class HealthMonitor:
    def __init__(
        self,
        cfg: Config,
        ami: AmiClient | None,
        metrics: Metrics,
        *,
        ari: AriClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        process_check: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.ami = ami
        self.ari = ari
        self.metrics = metrics
        self.clock = clock
        self.spans = SpanModel()
        self.policy = HealthPolicy.from_config(cfg)
        self.active_calls: int | None = None
        self.test_call_streak = 0
        self.test_call_failing_since: float | None = None
        self.last_test_call: dict[str, Any] | None = None
        self.last_test_call_at: float | None = None  # wall clock
        self.last = Verdict(True)
        self.role = "starting"
        self.serving_since: float | None = None
        # When the current Asterisk was started (serving began, or a restart): every
        # Asterisk-dependent input is judged from no earlier than this.
        self.asterisk_started_at: float | None = None
        self._ami_up = False
        self._last_rtt: float | None = None
        self._reconnects = 0
        self._ami_up_since: float | None = None
        self._wake: Callable[[], None] = lambda: None
        self._fully_booted = False
        # Asterisk's process: ``process_check`` answers whether it runs (the status
        # command); each result is kept with the time its check began.
        self.process_check = process_check
        self._process_gone_at: float | None = None
        self._process_checked_at: float | None = None
        # The status command said "not running" while the AMI link was up all through
        # the check (it names the wrong unit?): not believed until it says "running".
        self._status_disagrees = False
        self._restarting = False  # the agent's own restart: the process is meant to go
        self._process_from: float | None = None  # checks begun earlier do not count
        self._link_lost = asyncio.Event()

    # ------------------------------------------------------------------ verdict

    def verdict(self, role: str, routed_at: float | None) -> Verdict:
        now = self.clock()
        if role in PRIMARY_ROLES and self.role not in PRIMARY_ROLES:
            self.serving_since = now
            self.note_asterisk_start(now)
        self.role = role
        if role not in PRIMARY_ROLES:
            # A standby's Asterisk is stopped by design: only the primary needs it.
            self.last = standby_verdict(role)
            return self.last
        ami = self.ami
        up = ami is not None and ami.connected
        booted = ami is not None and ami.state is AmiState.FULLY_BOOTED
        shutdown = None
        if ami is not None and ami.last_shutdown is not None and not booted:
            said = ami.last_shutdown
            # The Shutdown of the agent's own restart was asked for: said during the
            # restart, it belongs to the Asterisk that the restart stopped.
            since = self._process_from
            if not self._restarting and (since is None or said.at >= since):
                shutdown = PendingShutdown(said.restart, said.at)
        spans = tuple(
            SpanState(n, None if kind in ("none", "unknown") else kind, self.spans.since(n) or now)
            for n, kind in self.spans.spans().items()
            if n in self.cfg.spans.critical
        )
        if up != self._ami_up:
            self._ami_up, self._ami_up_since = up, now
        inputs = HealthInputs(
            ami_up=up,
            # Since the link last went up or down: reconnect attempts while it stays
            # down must not restart the grace period.
            ami_since=self._ami_up_since if self._ami_up_since is not None else now,
            # The client itself drops a link whose Ping goes unanswered.
            last_ping_ok_at=now if up else None,
            ping_rtt=ami.last_ping_rtt if ami is not None else None,
            fully_booted=booted,
            asterisk_started_at=self.asterisk_started_at,
            shutdown=shutdown,
            spans=spans,
            spans_routed_at=routed_at if routed_at is not None else self.serving_since,
            test_call_failures=self.test_call_streak,
            test_call_failing_since=self.test_call_failing_since,
            ari_ok=self.ari.ok if self.ari is not None else None,
            ari_since=self.ari.ok_since if self.ari is not None else 0.0,
            process_gone_at=self._process_gone(),
            status_disagrees=self._status_disagrees,
        )
        self.last = evaluate(inputs, self.policy, now)
        return self.last

    def _process_gone(self) -> float | None:
        gone, since = self._process_gone_at, self._process_from
        if self._restarting or gone is None or since is None or gone < since:
            return None
        return gone

    def note_process(self, running: bool | None, began: float) -> None:
        """The answer of a process check begun at ``began`` (this monitor's clock);
        None: the check could not tell. A late answer of an older check is ignored."""
        if running is None:
            return
        last = self._process_checked_at
        if last is not None and began < last:
            return
        self._process_checked_at = began
        if running:
            self._status_disagrees = False
        elif self._denies_live_asterisk(began):
            if not self._status_disagrees:
                log.warning("asterisk.status says Asterisk is not running while its AMI answers")
            self._status_disagrees = True
        was = self._process_gone_at
        self._process_gone_at = began if running is False else None
        if was is None and self._process_gone_at is not None:
            self._wake()

    def _denies_live_asterisk(self, began: float) -> bool:
        """A "not running" from a check begun on the serving primary while the AMI link
        was up, and up still: the command contradicts a live Asterisk."""
        up_since = self._ami_up_since
        if self.role not in PRIMARY_ROLES or self._restarting or not self._ami_up:
            return False
        return up_since is not None and up_since <= began

    @contextlib.contextmanager
    def restarting(self) -> Iterator[None]:
        """Around the agent's own restart of Asterisk (stop, then start): a new Asterisk
        starts, and its process is meant to be gone until the start command has run, so
        only a check begun after that can find it dead."""
        self.note_asterisk_start()
        self._restarting = True
        try:
            yield
        finally:
            self._restarting = False
            self._process_from = self.clock()

    async def place_test_call(self) -> TestCallResult:
        """One test call, counted and kept as this node's last (the takeover's too): the
        peer reads it to tell a fault of this node from one that both share."""
        assert self.ami is not None and self.cfg.test_call is not None
        result = await run_test_call(self.ami, self.cfg.test_call)
        self.metrics.test_calls.labels(result=result.outcome).inc()
        if result.setup_seconds is not None:
            self.metrics.test_call_setup.observe(result.setup_seconds)
        self.last_test_call = result.as_dict()
        self.last_test_call_at = time.time()
        return result

    def note_asterisk_start(self, at: float | None = None) -> None:
        """A new Asterisk starts (serving began, or a restart): a test-call failure
        streak of the previous one does not carry over."""
        self.asterisk_started_at = self.clock() if at is None else at
        self._process_from = self.asterisk_started_at
        self.test_call_streak = 0
        self.test_call_failing_since = None

    def asterisk_status(self) -> dict[str, Any]:
        """What the status shows of the local Asterisk and of what was judged."""
        ami = self.ami
        ari = self.ari
        now = self.clock()
        started = self.asterisk_started_at
        return {
            "expected": self.role in PRIMARY_ROLES,
            "ami_up": ami is not None and ami.connected,
            "fully_booted": ami is not None and ami.state is AmiState.FULLY_BOOTED,
            "ami_ping_ms": None
            if ami is None or ami.last_ping_rtt is None
            else round(ami.last_ping_rtt * 1000, 1),
            "ari_ok": None if ari is None else ari.ok,
            "started_seconds_ago": None if started is None else round(now - started, 1),
            "active_calls": self.active_calls,
            "test_call_streak": self.test_call_streak,
            "last_test_call": self.last_test_call,
            "last_test_call_at": self.last_test_call_at,
            "notes": list(self.last.notes),
        }

    def spans_up(self) -> bool:
        """No critical span in a red alarm (the takeover's last check)."""
        return all(self.spans.kind(n) != "red" for n in self.cfg.spans.critical)

    def spans_status(self) -> dict[str, Any]:
        return {
            str(n): {"kind": kind, "since": self.spans.since(n)}
            for n, kind in self.spans.spans().items()
        }

    # ------------------------------------------------------------------ tasks

    async def run(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        if self.ami is None:
            await asyncio.Event().wait()
            return
        unsubscribe = self.ami.subscribe(self._on_event)
        forget_state = self.ami.on_state(self._on_ami_state)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._poll_spans())
                tg.create_task(self._poll_channels())
                if self.cfg.test_call is not None and self.cfg.test_call.interval > 0:
                    tg.create_task(self._test_calls())
                if self.ari is not None:
                    tg.create_task(self.ari.run_health(self.cfg.ami.ping_interval))
                if self.process_check is not None:
                    tg.create_task(self._check_process_on_loss(self.process_check))
        finally:
            unsubscribe()
            forget_state()

    def _on_ami_state(self, state: AmiState, at: float) -> None:
        up = state in (AmiState.AUTHENTICATED, AmiState.FULLY_BOOTED)
        if up != self._ami_up:
            self._ami_up, self._ami_up_since = up, at
            if not up and self.role in PRIMARY_ROLES:
                self._link_lost.set()
        self._wake()

    async def _check_process_on_loss(self, check: Callable[[], Awaitable[bool]]) -> None:
        """The link closed on the primary: is Asterisk's process gone? Checked at once,
        then every PROCESS_RECHECK while the link stays down, until it is found gone or
        the grace has passed (the grace rule decides from then on)."""
        while True:
            await self._link_lost.wait()
            self._link_lost.clear()
            lost_at = self.clock()
            while (
                self.role in PRIMARY_ROLES
                and not self._ami_up
                and not self._restarting
                and self.clock() - lost_at < self.policy.ami_grace
            ):
                began = self.clock()
                try:
                    running: bool | None = await check()
                except Exception as exc:  # the status command failing tells nothing
                    log.warning("Asterisk status check failed: %s", exc)
                    running = None
                self.note_process(running, began)
                if running is False:
                    break
                await asyncio.sleep(PROCESS_RECHECK)

    def _on_event(self, event: AmiEvent) -> None:
        try:
            if self.spans.feed(event, self.clock()):
                self.metrics.set_span_alarms(self.spans.spans())
                self._wake()
            if event.name in ("FullyBooted", "Shutdown"):
                self._wake()
        except Exception:  # input from the wire never stops the monitor
            log.exception("could not use AMI event %s", event.name)

    async def _poll_spans(self) -> None:
        assert self.ami is not None
        while True:
            if self.ami.state is AmiState.FULLY_BOOTED and self.cfg.spans.critical:
                try:
                    rows = await self.ami.dahdi_show_status()
                    if self.spans.snapshot(rows, self.clock()):
                        self.metrics.set_span_alarms(self.spans.spans())
                        self._wake()
                except AmiError as exc:
                    log.debug("DAHDIShowStatus failed: %s", exc)
            await asyncio.sleep(self.cfg.spans.poll_interval)

    async def _poll_channels(self) -> None:
        assert self.ami is not None
        while True:
            ami = self.ami
            self.metrics.ami_up.set(1 if ami.connected else 0)
            self.metrics.fully_booted.set(1 if ami.state is AmiState.FULLY_BOOTED else 0)
            if ami.last_ping_rtt is not None and ami.last_ping_rtt != self._last_rtt:
                self._last_rtt = ami.last_ping_rtt
                self.metrics.observe_ami_ping(ami.last_ping_rtt)
            if ami.reconnects > self._reconnects:
                self.metrics.ami_reconnects.inc(ami.reconnects - self._reconnects)
                self._reconnects = ami.reconnects
            if ami.state is AmiState.FULLY_BOOTED:
                try:
                    self.active_calls = await ami.active_channels()
                    self.metrics.active_channels.set(self.active_calls)
                except AmiError:
                    self.active_calls = None
            else:
                self.active_calls = None
            await asyncio.sleep(1.0)

    async def _test_calls(self) -> None:
        assert self.ami is not None and self.cfg.test_call is not None
        tc = self.cfg.test_call
        while True:
            await asyncio.sleep(tc.interval)
            if self.role not in PRIMARY_ROLES or self.ami.state is not AmiState.FULLY_BOOTED:
                self.test_call_streak = 0
                self.test_call_failing_since = None
                continue
            placed_at = self.clock()
            try:
                result = await self.place_test_call()
            except AmiError as exc:
                log.warning("test call could not be placed: %s", exc)
                continue
            if result.answered:
                self.test_call_streak = 0
                self.test_call_failing_since = None
            else:
                if self.test_call_streak == 0:
                    self.test_call_failing_since = placed_at
                self.test_call_streak += 1
                log.warning("test call %s: %s", result.outcome, result.reason)
            with contextlib.suppress(Exception):
                self._wake()
