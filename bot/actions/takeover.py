"""Ordered promote, demote and fence sequences (design §3 rule 3 and §5).

Promote: route -> drbd -> vip -> asterisk_start -> fully_booted -> test_call ->
spans -> announce. The lease is checked right before every primary action
(route, drbd, vip, asterisk_start); a failing step, or a lease that stopped
being valid, undoes what was done in reverse order. Two exceptions: the spans
are never routed back (the next primary routes them), and a failing test call
on the only node that can serve leaves the service up as ``degraded``.
Releasing the lease and marking the node failed belong to the caller, who
acts on the report's outcome.

Every step is idempotent, has a limit and is reported through ``on_step``
as a ``StepTiming`` whose name is one of ``bot.metrics.TAKEOVER_STEPS``.
A cancelled sequence stops where it is (its commands are killed and reaped)
without undoing anything: whoever cancels it fences or demotes next.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from bot.actions.asterisk import AmiLike, AsteriskService, drain
from bot.actions.drbd import COMMAND_TIMEOUT as DRBD_COMMAND_TIMEOUT
from bot.actions.drbd import MOUNT_TIMEOUT, Drbd
from bot.actions.errors import ActionError, PromoteRefused
from bot.actions.pstn import Pstn
from bot.actions.vip import Vip
from bot.config import Config
from bot.health import ReadinessFacts, readiness

log = logging.getLogger(__name__)

Outcome = Literal["succeeded", "failed", "degraded", "aborted", "refused"]

ANNOUNCE_TIMEOUT = 5.0
SPANS_POLL = 0.1
# A fence step may run past the spent budget up to its floor (a kill given up half-way
# costs a retry), but the first attempt as a whole never runs past the budget by more
# than FENCE_OVERRUN_MAX: a step cut off there is retried at once with its command's
# own timeout, while DRBD stays Primary (rule 10) so that the peer cannot promote.
# The agent counts and alerts a fence that outlasts its budget (bot.agent.fencer).
FENCE_STEP_FLOOR = {"fence_vip": 0.5, "fence_asterisk": 1.0, "fence_drbd": 2.0}
FENCE_OVERRUN_MAX = 1.5
FENCE_STEP_MIN = 0.05  # a step is always tried, however late
# While the old primary is still fencing, DRBD refuses our promotion ("the peer is
# primary and connected"); it must be secondary by the end of its lease, so wait.
PEER_DEMOTION_POLL = 0.1
# ...but never less than this: a stalled old primary is killed by its watchdog and
# fenced by ExecStopPost, a new process whose steps may each run to their floor; a
# short lease (the fast profile) would otherwise give up before that can finish.
PEER_DEMOTION_MIN_WAIT = 1.0 + sum(FENCE_STEP_FLOOR.values())
PEER_PRIMARY = "peer is primary"  # DRBD's refusal while the peer has not demoted


@dataclass(frozen=True)
class StepTiming:
    name: str
    started: float  # monotonic
    duration: float
    ok: bool
    detail: str


@dataclass(frozen=True)
class TakeoverReport:
    outcome: Outcome
    steps: list[StepTiming] = field(default_factory=list)
    reason: str = ""
    undo_failed: tuple[str, ...] = ()  # rollback steps that failed: services may still run

    @property
    def duration(self) -> float:
        if not self.steps:
            return 0.0
        last = self.steps[-1]
        return last.started + last.duration - self.steps[0].started


@dataclass(frozen=True)
class FoundServices:
    """What runs here that only a primary may run (False when not configured; None: could
    not tell)."""

    vip_present: bool | None
    asterisk_running: bool | None
    drbd_primary: bool | None

    @property
    def any_primary(self) -> bool:
        """Anything primary-only running or possibly running (unknown counts)."""
        return any(
            v is not False for v in (self.vip_present, self.asterisk_running, self.drbd_primary)
        )


class TestCallResultLike(Protocol):
    @property
    def outcome(self) -> str: ...

    @property
    def reason(self) -> str | None: ...


TestCallFn = Callable[[], Awaitable[Any]]


class _StepFailed(Exception):
    def __init__(self, timing: StepTiming) -> None:
        super().__init__(timing.detail)
        self.timing = timing


def _not_gone(steps: list[StepTiming]) -> str:
    failed = ", ".join(s.name for s in steps if not s.ok)
    return f"{failed} failed: the address or Asterisk may still be up here"


class Takeover:
    def __init__(
        self,
        cfg: Config,
        *,
        drbd: Drbd | None,
        vip: Vip | None,
        asterisk: AsteriskService,
        pstn: Pstn | None,
        ami: AmiLike | None,
        lease_valid: Callable[[], bool],
        on_step: Callable[[StepTiming], None] | None = None,
        test_call: TestCallFn | None = None,
        spans_up: Callable[[], bool] | None = None,
        announce: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        fence_peer: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.drbd = drbd
        self.vip = vip
        self.asterisk = asterisk
        self.pstn = pstn
        self.ami = ami
        self.lease_valid = lease_valid
        self.on_step = on_step
        self.test_call = test_call if test_call is not None else self._default_test_call()
        self.spans_up = spans_up
        self.announce = announce
        self.clock = clock
        self.fence_peer = fence_peer  # cluster.fence_command against the peer, if set

    def _default_test_call(self) -> TestCallFn | None:
        if self.cfg.test_call is None or self.ami is None:
            return None
        tc_cfg, ami = self.cfg.test_call, self.ami

        async def run() -> Any:
            # Imported late: the AMI package is optional for fencing and the CLI.
            testcall: Any = importlib.import_module("ami.testcall")
            return await testcall.run_test_call(ami, tc_cfg)

        return run

    # ---------------------------------------------------------------- steps

    def _record(self, steps: list[StepTiming], timing: StepTiming) -> StepTiming:
        steps.append(timing)
        level = logging.INFO if timing.ok else logging.WARNING
        log.log(
            level,
            "step %s %s in %.3fs: %s",
            timing.name,
            "ok" if timing.ok else "FAILED",
            timing.duration,
            timing.detail,
        )
        if self.on_step is not None:
            try:
                self.on_step(timing)
            except Exception:
                log.exception("on_step callback failed")
        return timing

    async def _step(
        self,
        steps: list[StepTiming],
        name: str,
        action: Callable[[], Awaitable[str | None]],
        limit: float,
    ) -> StepTiming:
        started = self.clock()
        ok, detail = False, ""
        try:
            async with asyncio.timeout(limit):
                detail = await action() or "done"
            ok = True
        except TimeoutError:
            detail = f"no result within {limit:g}s"
        except ActionError as exc:
            detail = str(exc)
        except asyncio.CancelledError:
            self._record(
                steps, StepTiming(name, started, self.clock() - started, False, "cancelled")
            )
            raise
        except Exception as exc:  # a collaborator's own error family (AMI, R-Series)
            detail = f"{type(exc).__name__}: {exc}"
        return self._record(steps, StepTiming(name, started, self.clock() - started, ok, detail))

    def _lease_lost(self, steps: list[StepTiming], name: str) -> StepTiming | None:
        if self.lease_valid():
            return None
        now = self.clock()
        return self._record(
            steps, StepTiming(name, now, 0.0, False, f"lease no longer valid before {name}")
        )

    # ---------------------------------------------------------------- promote

    async def promote(self, *, only_node_that_can_serve: bool) -> TakeoverReport:
        steps: list[StepTiming] = []
        undo: list[tuple[str, Callable[[], Awaitable[str | None]], float]] = []
        cfg = self.cfg

        async def primary_step(
            name: str, action: Callable[[], Awaitable[str | None]], limit: float
        ) -> StepTiming | None:
            """None when done; the failing timing otherwise."""
            lost = self._lease_lost(steps, name)
            if lost is not None:
                return lost
            timing = await self._step(steps, name, action, limit)
            return None if timing.ok else timing

        plan: list[tuple[str, Callable[[], Awaitable[str | None]], float, Any]] = []
        if self.pstn is not None:
            plan.append(("route", self._route, self.pstn.route_timeout, None))
        if self.drbd is not None:
            drbd_timeout = 2 * DRBD_COMMAND_TIMEOUT * len(
                cfg.drbd.resources if cfg.drbd else []
            ) + (MOUNT_TIMEOUT * len(cfg.drbd.mount if cfg.drbd else []))
            plan.append(
                (
                    "drbd",
                    self._drbd_promote,
                    drbd_timeout,
                    ("drbd_down", self._drbd_demote, drbd_timeout),
                )
            )
        if self.vip is not None:
            plan.append(
                (
                    "vip",
                    self._vip_up,
                    self.vip.timeout * 2,
                    ("vip_down", self._vip_down, self.vip.timeout),
                )
            )
        ast_timeout = 2 * cfg.asterisk.command_timeout
        plan.append(
            (
                "asterisk_start",
                self._asterisk_start,
                ast_timeout,
                ("asterisk_stop", self._asterisk_kill, cfg.asterisk.command_timeout),
            )
        )
        for name, action, limit, undo_entry in plan:
            if undo_entry is not None:
                # Undo a step that failed half-way too: every undo is idempotent.
                undo.append(undo_entry)
            failed = await primary_step(name, action, limit)
            if failed is not None:
                return await self._roll_back(steps, undo, failed)

        if self.ami is not None:
            timing = await self._step(
                steps, "fully_booted", self._fully_booted, cfg.asterisk.boot_timeout + 1.0
            )
            if not timing.ok:
                return await self._roll_back(steps, undo, timing)

        degraded: list[str] = []
        if self.test_call is not None and cfg.test_call is not None:
            timing = await self._step(
                steps, "test_call", self._test_call, cfg.test_call.timeout + 2.0
            )
            if not timing.ok:
                if not only_node_that_can_serve:
                    return await self._roll_back(steps, undo, timing)
                degraded.append(f"test call failed ({timing.detail}); only node that can serve")

        if self.spans_up is not None and cfg.spans.critical:
            timing = await self._step(steps, "spans", self._spans, cfg.spans.grace + 1.0)
            if not timing.ok:
                degraded.append(f"critical spans not up: {timing.detail}")

        if self.announce is not None:
            await self._step(steps, "announce", self._announce, ANNOUNCE_TIMEOUT)

        if degraded:
            return TakeoverReport("degraded", steps, "; ".join(degraded))
        return TakeoverReport("succeeded", steps, "promoted")

    async def _roll_back(
        self,
        steps: list[StepTiming],
        undo: list[tuple[str, Callable[[], Awaitable[str | None]], float]],
        failed: StepTiming,
    ) -> TakeoverReport:
        undo_failed: list[str] = []
        for name, action, limit in reversed(undo):
            if name == "drbd_down" and undo_failed:
                # Rule 10: DRBD Primary is given up last; the caller fences (which keeps
                # it until the address and Asterisk are gone) before it gives the lease up.
                log.warning("rollback: DRBD kept Primary: %s failed", ", ".join(undo_failed))
                undo_failed.append(name)
                continue

            async def rollback(action: Callable[[], Awaitable[str | None]] = action) -> str:
                return f"rollback: {await action() or 'done'}"

            if not (await self._step(steps, name, rollback, limit)).ok:
                undo_failed.append(name)
        lease = failed.detail.startswith("lease no longer valid")
        refused = failed.name == "drbd" and PEER_PRIMARY in failed.detail
        outcome: Outcome = "aborted" if lease else "refused" if refused else "failed"
        return TakeoverReport(
            outcome, steps, f"{failed.name}: {failed.detail}", undo_failed=tuple(undo_failed)
        )

    async def _route(self) -> str:
        assert self.pstn is not None
        await self.pstn.route_here(may_write=self.lease_valid)
        return f"spans routed to host {self.pstn.host}"

    async def _drbd_promote(self) -> str:
        assert self.drbd is not None
        deadline = self.clock() + max(self.cfg.cluster.lease_ttl, PEER_DEMOTION_MIN_WAIT)
        peer_fenced = False
        while True:
            try:
                changed = await self.drbd.promote()
                break
            except PromoteRefused as exc:
                if PEER_PRIMARY not in str(exc):
                    raise
                if self.clock() >= deadline:
                    if peer_fenced or self.fence_peer is None:
                        raise
                    # A lease time passed and the peer still has not demoted: fence it
                    # (cluster.fence_command), then wait one more lease time.
                    await self.fence_peer()
                    peer_fenced = True
                    deadline = self.clock() + self.cfg.cluster.lease_ttl
                await asyncio.sleep(PEER_DEMOTION_POLL)
                if not self.lease_valid():  # every try is a primary action (rule 1)
                    raise ActionError("lease no longer valid before a DRBD promote retry") from None
        return ", ".join(changed) or "already primary and mounted"

    async def _drbd_demote(self, limit: float = DRBD_COMMAND_TIMEOUT) -> str:
        assert self.drbd is not None
        changed = await self.drbd.demote(limit=limit)
        return ", ".join(changed) or "already secondary"

    async def _vip_up(self) -> str:
        assert self.vip is not None
        added = await self.vip.up()
        if added:
            return f"{self.vip.cfg.address} added, ARP sent"
        return "address already present, ARP sent"

    async def _vip_down(self) -> str:
        assert self.vip is not None
        removed = await self.vip.down()
        return f"{self.vip.cfg.address} removed" if removed else "address not present"

    async def _asterisk_start(self) -> str:
        started = await self.asterisk.start()
        kick = getattr(self.ami, "kick", None)
        if kick is not None:
            kick()  # connect now rather than after the AMI client's reconnect backoff
        return "started" if started else "already running"

    async def _asterisk_kill(self) -> str:
        await self.asterisk.kill()
        return "killed"

    async def _fully_booted(self) -> str:
        assert self.ami is not None
        await self.asterisk.wait_fully_booted(self.ami)
        return "FullyBooted"

    async def _test_call(self) -> str:
        assert self.test_call is not None
        result = await self.test_call()
        outcome = getattr(result, "outcome", None)
        if outcome != "answered":
            reason = getattr(result, "reason", None) or ""
            raise ActionError(f"test call {outcome}{': ' + reason if reason else ''}")
        setup = getattr(result, "setup_seconds", None)
        return f"answered in {setup:.3f}s" if isinstance(setup, float) else "answered"

    async def _spans(self) -> str:
        assert self.spans_up is not None
        grace = self.cfg.spans.grace
        deadline = self.clock() + grace
        while not self.spans_up():
            if self.clock() >= deadline:
                raise ActionError(f"still in alarm after {grace:g}s")
            await asyncio.sleep(SPANS_POLL)
        return "critical spans up"

    async def _announce(self) -> str:
        assert self.announce is not None
        await self.announce()
        return "announced"

    # ---------------------------------------------------------------- demote

    async def demote(self, *, drain_timeout: float | None) -> TakeoverReport:
        """Planned demotion: every step is tried, even after a failure."""
        steps: list[StepTiming] = []
        cmd_timeout = self.cfg.asterisk.command_timeout
        if drain_timeout and self.ami is not None:
            ami = self.ami

            async def do_drain() -> str:
                left = await drain(ami, drain_timeout, clock=self.clock)
                return "no calls left" if left == 0 else f"{left} channel(s) left after drain"

            await self._step(steps, "drain", do_drain, drain_timeout + 2.0)
        await self._step(steps, "asterisk_stop", self._asterisk_stop, 2 * cmd_timeout + 1.0)
        if self.vip is not None:
            await self._step(steps, "vip_down", self._vip_down, self.vip.timeout + 1.0)
        failures = [s for s in steps if not s.ok and s.name != "drain"]
        if self.drbd is not None and failures:
            # Rule 10: DRBD Primary is given up last. While the address or Asterisk may
            # still be up here, it keeps the peer's promotion (and so its address) out.
            log.warning("DRBD kept Primary: %s", _not_gone(failures))
        elif self.drbd is not None:
            limit = 4 * DRBD_COMMAND_TIMEOUT
            await self._step(steps, "drbd_down", self._drbd_demote, limit)
        failures = [s for s in steps if not s.ok and s.name != "drain"]
        if failures:
            reason = f"{failures[0].name}: {failures[0].detail}"
            kept = self.drbd is not None and not any(s.name == "drbd_down" for s in steps)
            return TakeoverReport("failed", steps, reason + ("; DRBD kept Primary" if kept else ""))
        return TakeoverReport("succeeded", steps, "demoted")

    async def _asterisk_stop(self) -> str:
        try:
            stopped = await self.asterisk.stop()
        except ActionError as exc:
            log.warning("%s; killing Asterisk", exc)
            await self.asterisk.kill()
            return f"stop failed ({exc}); killed"
        return "stopped" if stopped else "not running"

    # ---------------------------------------------------------------- fence

    async def fence(self, *, escalate: bool = False) -> TakeoverReport:
        """IP down -> kill Asterisk -> DRBD secondary, within ``cluster.fence_budget``.

        Never raises (except on cancellation): every step is tried, and every step is
        idempotent, so a retry runs them all again. ``escalate`` (a retry): the budget
        is spent already, so each step gets its command's own timeout (a slow kill is
        not a failed one), and DRBD's step first ends the processes that keep its file
        systems busy.
        """
        steps: list[StepTiming] = []
        deadline = self.clock() + self.cfg.cluster.fence_budget
        bound = deadline + FENCE_OVERRUN_MAX
        floors = dict(FENCE_STEP_FLOOR)
        if escalate:
            floors["fence_vip"] = max(floors["fence_vip"], self.vip.timeout if self.vip else 0)
            floors["fence_asterisk"] = max(
                floors["fence_asterisk"], self.cfg.asterisk.command_timeout
            )
            floors["fence_drbd"] = max(floors["fence_drbd"], DRBD_COMMAND_TIMEOUT)
            bound = float("inf")

        def left(step: str) -> float:
            now = self.clock()
            return max(min(max(deadline - now, floors[step]), bound - now), FENCE_STEP_MIN)

        if self.vip is not None:
            vip = self.vip

            async def vip_down() -> str:
                removed = await vip.down(limit=left("fence_vip"))
                return "address removed" if removed else "address not present"

            await self._step(steps, "fence_vip", vip_down, left("fence_vip"))

        async def kill() -> str:
            await self.asterisk.kill(limit=left("fence_asterisk"))
            return "killed"

        await self._step(steps, "fence_asterisk", kill, left("fence_asterisk"))
        kept = self.drbd is not None and not all(s.ok for s in steps)
        if kept:
            # Rule 10: DRBD Primary is given up last (see ``demote``); the retry tries again.
            log.warning("DRBD kept Primary: %s", _not_gone(steps))
        elif self.drbd is not None:
            drbd = self.drbd

            async def secondary() -> str:
                await drbd.fence(limit=left("fence_drbd"), escalate=escalate)
                return "secondary"

            await self._step(steps, "fence_drbd", secondary, left("fence_drbd"))
        failures = [s for s in steps if not s.ok]
        if failures:
            reason = "; ".join(f"{s.name}: {s.detail}" for s in failures)
            return TakeoverReport("failed", steps, reason + ("; DRBD kept Primary" if kept else ""))
        return TakeoverReport("succeeded", steps, "fenced")

    # ---------------------------------------------------------------- state

    async def local_services(self) -> FoundServices:
        async def probe(fn: Callable[[], Awaitable[bool]] | None) -> bool | None:
            if fn is None:
                return False
            try:
                return await fn()
            except Exception as exc:
                log.warning("local service check failed: %s", exc)
                return None

        vip, ast, drbd = await asyncio.gather(
            probe(self.vip.present if self.vip else None),
            probe(self.asterisk.running),
            probe(self.drbd.is_primary if self.drbd else None),
        )
        return FoundServices(vip_present=vip, asterisk_running=ast, drbd_primary=drbd)

    async def readiness(
        self, outdated: bool, *, ami_configured: bool = True
    ) -> tuple[bool, list[str]]:
        """Ready to take over, with the reasons when not: the facts of each part, judged
        by the one rule (``bot.health.readiness``, design §4)."""
        facts = (
            await self.drbd.readiness_facts(outdated) if self.drbd is not None else ReadinessFacts()
        )
        facts = replace(
            facts,
            rseries_link_up=self.pstn.connected if self.pstn is not None else None,
            asterisk_commands_missing=tuple(self.asterisk.commands_missing()),
            ami_configured=ami_configured,
        )
        ok, reasons = readiness(facts)
        return ok, list(reasons)
