"""Asterisk service control through the configured commands, plus AMI waits.

Start, stop, kill and status run the commands from ``[asterisk]``; booting is
confirmed by ``FullyBooted`` over AMI; a planned switchover drains the active
channels first. ``RestartBudget`` counts restarts of an unhealthy Asterisk when
no standby is ready.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from typing import Protocol

from bot.actions.errors import ActionError, AsteriskError
from bot.actions.runner import Runner, run_command
from bot.config import AsteriskConfig

log = logging.getLogger(__name__)

DRAIN_POLL = 0.5


class AmiLike(Protocol):
    """The parts of the AMI client the actions use."""

    async def wait_fully_booted(self, timeout: float) -> None: ...  # noqa: ASYNC109

    async def active_channels(self) -> int: ...


class AsteriskService:
    def __init__(self, cfg: AsteriskConfig, *, runner: Runner = run_command) -> None:
        self.cfg = cfg
        self.run = runner

    async def _command(self, name: str, argv: list[str], limit: float | None) -> None:
        try:
            await self.run(argv, timeout=limit or self.cfg.command_timeout)
        except ActionError as exc:
            raise AsteriskError(f"asterisk {name}: {exc}") from None

    async def running(self, *, limit: float | None = None) -> bool:
        try:
            result = await self.run(
                self.cfg.status, timeout=limit or self.cfg.command_timeout, check=False
            )
        except ActionError as exc:
            raise AsteriskError(f"asterisk status: {exc}") from None
        return result.returncode == 0

    async def start(self, *, limit: float | None = None) -> bool:
        """Start Asterisk; False when it was already running."""
        if await self.running(limit=limit):
            return False
        await self._command("start", self.cfg.start, limit)
        return True

    async def stop(self, *, limit: float | None = None) -> bool:
        """Stop gracefully. The stop command is idempotent (as ``systemctl stop`` is), so
        no status query first: on a planned switchover every 100 ms is service time."""
        await self._command("stop", self.cfg.stop, limit)
        return True

    async def kill(self, *, limit: float | None = None) -> None:
        """Kill at once (fencing): no status query first, it costs time."""
        await self._command("kill", self.cfg.kill, limit)

    async def restart(
        self, *, limit: float | None = None, may_start: Callable[[], bool] = lambda: True
    ) -> None:
        """Stop (or kill), then start, if ``may_start()`` still says so (the lease)."""
        try:
            await self.stop(limit=limit)
        except AsteriskError as exc:
            log.warning("%s; killing instead", exc)
            await self.kill(limit=limit)
        if not may_start():
            raise AsteriskError("not started again: the lease is no longer valid")
        await self._command("start", self.cfg.start, limit)

    async def wait_fully_booted(self, ami: AmiLike, *, limit: float | None = None) -> None:
        within = limit or self.cfg.boot_timeout
        try:
            async with asyncio.timeout(within):
                await ami.wait_fully_booted(within)
        except TimeoutError:
            raise AsteriskError(f"Asterisk not FullyBooted within {within:g}s") from None
        except ActionError:
            raise
        except Exception as exc:  # the AMI client's own error family
            raise AsteriskError(f"waiting for FullyBooted: {exc}") from None

    def commands_missing(self) -> list[str]:
        """Configured commands whose executable is not found (readiness)."""
        missing = []
        for name in ("start", "stop", "kill", "status"):
            argv: list[str] = getattr(self.cfg, name)
            if not argv or shutil.which(argv[0]) is None:
                missing.append(f"asterisk.{name}: {argv[0] if argv else '(empty)'} not found")
        return missing


async def drain(
    ami: AmiLike,
    limit: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    poll: float = DRAIN_POLL,
) -> int:
    """Wait until no channel is active or ``limit`` passes; return the channels left."""
    deadline = clock() + limit
    while True:
        try:
            count = await asyncio.wait_for(ami.active_channels(), timeout=max(poll, 1.0))
        except Exception as exc:  # AMI down: nothing more to wait for
            log.warning("drain: cannot count channels (%s); stopping now", exc)
            return -1
        remaining = deadline - clock()
        if count == 0 or remaining <= 0:
            return count
        await asyncio.sleep(min(poll, remaining))


class RestartBudget:
    """Restarts of an unhealthy Asterisk allowed while no standby is ready."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self.used = 0

    def allow(self) -> bool:
        if self.used >= self.attempts:
            return False
        self.used += 1
        return True

    @property
    def exhausted(self) -> bool:
        return self.used >= self.attempts

    def reset(self) -> None:
        """Asterisk was healthy again: the next trouble gets a fresh budget."""
        self.used = 0
