"""failover-bot fence-local: the action systemd calls when the bot stops."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

from bot.actions.asterisk import AsteriskService
from bot.actions.drbd import Drbd
from bot.actions.runner import run_command
from bot.actions.takeover import Takeover, TakeoverReport
from bot.actions.vip import Vip
from bot.bus import Bus, BusError
from bot.commands.base import (
    EXIT_OK,
    VerbFailed,
    add_config_arg,
    config_from_args,
    run_async,
)
from bot.config import Config
from bot.state import StateDir, StateError

log = logging.getLogger(__name__)

FENCE_RETRY = 0.5  # seconds between fence-local's escalated retries


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fence-local",
        help="fence this node now: floating IP down, Asterisk killed, DRBD secondary "
        "(systemd ExecStopPost; operators); nothing is done while the cluster is paused",
    )
    add_config_arg(p)
    p.add_argument(
        "--even-if-paused", action="store_true", help="fence even in maintenance mode (operators)"
    )
    p.set_defaults(handler=run_async(fence_local))


# ------------------------------------------------------------------ fence-local


async def paused_state(cfg: Config) -> tuple[bool, str]:
    """Paused if Redis or the state directory says so; when Redis is unreachable the state
    directory decides. Returns (paused, how that was decided)."""
    try:
        local = StateDir(cfg.node.state_dir).paused
        local_note = f"state directory says {'paused' if local else 'not paused'}"
    except StateError as exc:
        local, local_note = False, f"state directory unreadable ({exc})"
    bus = Bus.from_config(cfg)
    try:
        await bus.connect()
        remote = (await bus.controls()).paused
    except BusError as exc:
        return local, f"Redis unreachable ({exc}): {local_note}"
    finally:
        await bus.close()
    return bool(local or remote), f"Redis says {'paused' if remote else 'not paused'}; {local_note}"


def fence_takeover(cfg: Config) -> Takeover:
    return Takeover(
        cfg,
        drbd=Drbd(cfg.drbd) if cfg.drbd else None,
        vip=Vip(cfg.vip) if cfg.vip else None,
        asterisk=AsteriskService(cfg.asterisk),
        pstn=None,
        ami=None,
        lease_valid=lambda: False,
    )


async def fence_local(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    paused, how = await paused_state(cfg)
    if paused and not args.even_if_paused:
        print(f"not fencing: the cluster is paused ({how})")
        return EXIT_OK
    print(f"fencing {cfg.node.id} ({how})")
    takeover = fence_takeover(cfg)
    report = await takeover.fence()
    _print_steps(report)
    # A failed step is retried (escalated: command timeouts, busy mounts' users ended)
    # for fence.escalate_after, then fence.escalate_command runs, as in the agent.
    give_up = time.monotonic() + cfg.fence.escalate_after
    while report.outcome != "succeeded" and time.monotonic() < give_up:
        await asyncio.sleep(FENCE_RETRY)
        report = await takeover.fence(escalate=True)
        _print_steps(report)
    if report.outcome != "succeeded" and cfg.fence.escalate_command:
        argv = list(cfg.fence.escalate_command)
        print(f"fence still incomplete: running {argv[0]}")
        result = await run_command(argv, timeout=30.0, check=False)
        print(f"  {result.summary()}")
    await _event(cfg, "fenced", f"{cfg.node.id} fenced itself: {report.outcome}", report.reason)
    if report.outcome != "succeeded":
        raise VerbFailed(f"fencing incomplete: {report.reason}")
    return EXIT_OK


def _print_steps(report: TakeoverReport) -> None:
    for step in report.steps:
        state = "ok" if step.ok else "FAILED"
        print(f"  {step.name:15} {state:6} {step.duration * 1000:7.1f} ms  {step.detail}")


async def _event(cfg: Config, kind: str, message: str, reason: str) -> None:
    """Best effort: the event log is for people; fencing never waits on it for long."""
    bus = Bus.from_config(cfg)
    try:
        await bus.append_event(kind, message, reason=reason)
    except BusError as exc:
        log.info("event not recorded: %s", exc)
    finally:
        await bus.close()
