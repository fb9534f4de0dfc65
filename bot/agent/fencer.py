"""The one way this node fences itself: floating IP down, Asterisk killed, DRBD secondary.

A fence is complete or it is still going on; it is never reported done while a
step failed. It first cancels the jobs that could start a service again, then
runs every step (they are idempotent), and retries the failed ones with
escalation until all succeed: DRBD's step ends the processes holding its mounts
on a retry, and after ``fence.escalate_after`` ``fence.escalate_command`` runs
once (the way Pacemaker fences a node whose stop failed). While incomplete the
node reports role ``fencing``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

from bot.actions.runner import run_command
from bot.actions.takeover import Takeover, TakeoverReport
from bot.agent.jobs import Jobs
from bot.config import FenceConfig
from bot.metrics import Metrics

log = logging.getLogger(__name__)

Events = Callable[..., None]  # kind, message, alert=..., fields (bot.agent.events.Events)

# The label values of failoverbot_self_fences_total (bot.metrics.SELF_FENCE_REASONS).
FenceReason = Literal[
    "lease_expiring",
    "lease_taken",
    "stopped",
    "manual",
    "rollback_failed",
    "demote_failed",
    "other",
]
RETRY_INTERVAL = 0.5
ESCALATE_TIMEOUT = 30.0
# Jobs that start or keep a primary service; a fence cancels them before it starts.
SERVICE_JOBS = ("promote", "demote", "restart_asterisk", "route_spans", "adopt")


def reason_of(text: str) -> FenceReason:
    """The metric label for a fence the HA step asked for, from its sentence."""
    if "taken by" in text:
        return "lease_taken"
    if "demotion failed" in text:
        return "demote_failed"
    if "renewal failed" in text or "lease" in text:
        return "lease_expiring"
    if "stopping" in text:
        return "stopped"
    return "other"


class Fencer:
    def __init__(
        self,
        takeover: Takeover,
        cfg: FenceConfig,
        *,
        jobs: Jobs,
        metrics: Metrics,
        events: Events,
        clock: Callable[[], float] = time.monotonic,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        self.takeover = takeover
        self.cfg = cfg
        self.jobs = jobs
        self.metrics = metrics
        self.events = events
        self.clock = clock
        self.retry_interval = retry_interval
        self.incomplete_since: float | None = None  # first failed attempt of this fence
        self.failing = ""  # the steps that failed last, for status and health
        self._clean_after: int | None = None  # service jobs started before the last complete fence
        self._lock = asyncio.Lock()

    @property
    def incomplete(self) -> bool:
        return self.incomplete_since is not None

    @property
    def busy(self) -> bool:
        """A fence is running (or waiting to run)."""
        return self._lock.locked()

    async def wait_complete(self) -> None:
        """Until no fence runs and the last one completed (every step succeeded)."""
        while True:
            async with self._lock:
                if not self.incomplete:
                    return
            await asyncio.sleep(self.retry_interval)

    async def fence(
        self,
        reason: FenceReason,
        detail: str,
        *,
        deadline: float | None = None,
        announce: bool = True,
    ) -> bool:
        """Fence until every step succeeded; True then. False only once ``deadline``
        (this fencer's clock; shutdown) passed with the fence still incomplete.

        ``announce=False`` (a check after a completed hand-over), or a fence with no
        service job started since the last complete one: not a new self-fence, so no
        alert and not counted, unless it had to retry."""
        async with self._lock:
            # Nothing that starts a service ran since the last complete fence: this one
            # only checks again (the HA step and the renewal both fence a lost lease).
            started = self.jobs.starts(SERVICE_JOBS)
            repeat = started == self._clean_after
            cancelled = await self.jobs.cancel(SERVICE_JOBS)
            if cancelled:
                log.warning("fencing: cancelled %s", ", ".join(cancelled))
            attempt = 0
            escalated = False
            began = self.clock()
            while True:
                report = await self.takeover.fence(escalate=attempt > 0)
                if report.outcome == "succeeded":
                    if (announce and not repeat) or attempt > 0:  # not a mere check again
                        self._check_budget(reason, detail, report, self.clock() - began, attempt)
                    self._clean_after = started
                    self._complete(
                        reason, detail, attempt, (announce and not repeat) or attempt > 0
                    )
                    return True
                self.failing = report.reason
                if self.incomplete_since is None:
                    self.incomplete_since = self.clock()
                    self.events(
                        "fence_incomplete",
                        f"fence incomplete ({detail}): {report.reason}; retrying",
                        alert=True,
                        steps=[s.name for s in report.steps if not s.ok],
                    )
                attempt += 1
                late = self.clock() - self.incomplete_since >= self.cfg.escalate_after
                if late and not escalated and self.cfg.escalate_command:
                    escalated = True
                    await self._escalate(detail)
                if deadline is not None and self.clock() >= deadline:
                    log.critical("fence still incomplete: %s", report.reason)
                    return False
                if attempt > 1:  # the first retry at once: a step cut off at the bound
                    await asyncio.sleep(self.retry_interval)

    def _check_budget(
        self, reason: FenceReason, detail: str, report: TakeoverReport, took: float, retries: int
    ) -> None:
        """A fence that completed past ``cluster.fence_budget`` is counted and logged with
        how long it took: rule 3 budgets the fence to end before the lease does, and this
        one may not have."""
        budget = self.takeover.cfg.cluster.fence_budget
        if took <= budget:
            return
        self.metrics.fence_overruns.labels(reason=reason).inc()
        slowest = max(report.steps, key=lambda s: s.duration, default=None)
        worst = f"; slowest {slowest.name} {slowest.duration:.3f} s" if slowest else ""
        self.events(
            "fence_overrun",
            f"fence ({detail}) took {took:.3f} s against cluster.fence_budget {budget:g} s"
            + worst
            + (f", after {retries} retries" if retries else ""),
            alert=True,
            took=round(took, 3),
            budget=budget,
        )

    def _complete(self, reason: FenceReason, detail: str, retries: int, announce: bool) -> None:
        if self.incomplete_since is not None:
            took = self.clock() - self.incomplete_since
            self.events(
                "fence_complete",
                f"fence complete after {retries} retries ({took:.1f} s)",
                alert=True,
            )
        self.incomplete_since = None
        self.failing = ""
        if not announce:
            self.events("fence_checked", f"fence checked again, nothing primary here: {detail}")
            return
        self.metrics.self_fences.labels(reason=reason).inc()
        self.events("self_fence", f"fenced: {detail}", alert=True)

    async def _escalate(self, detail: str) -> None:
        argv = list(self.cfg.escalate_command)
        self.events(
            "fence_escalated",
            f"fence incomplete for {self.cfg.escalate_after:g} s ({detail}): running {argv[0]}",
            alert=True,
        )
        try:
            result = await run_command(argv, timeout=ESCALATE_TIMEOUT, check=False)
            log.warning("fence escalation: %s", result.summary())
        except Exception as exc:  # the retries go on whatever the command did
            log.error("fence escalation failed: %s", exc)
