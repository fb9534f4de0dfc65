"""failover-bot fence-local | drbd-fence-peer: the actions systemd and DRBD call."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time

from bot.actions.asterisk import AsteriskService
from bot.actions.drbd import Drbd
from bot.actions.runner import run_command
from bot.actions.takeover import Takeover, TakeoverReport
from bot.actions.vip import Vip
from bot.bus import Bus, BusError
from bot.commands.base import (
    EXIT_OK,
    CannotRun,
    VerbFailed,
    add_config_arg,
    config_from_args,
    run_async,
)
from bot.config import Config
from bot.state import StateDir, StateError

log = logging.getLogger(__name__)

# DRBD's fence-peer handler exit codes (drbd.conf(5), "fence-peer").
FENCE_RETRY = 0.5  # seconds between fence-local's escalated retries
DRBD_PEER_INCONSISTENT = 3
DRBD_PEER_OUTDATED = 4
DRBD_PEER_DOWN = 5
DRBD_PEER_PRIMARY = 6
# Anything outside 3..7 tells DRBD the handler failed: it does not assume the peer is fenced.
DRBD_HANDLER_FAILED = 1


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

    p = sub.add_parser(
        "drbd-fence-peer",
        help="DRBD's fence-peer handler: mark the peer's data outdated on the cluster bus "
        "(exit 4 peer outdated, 6 peer is primary, other codes: not fenced)",
    )
    add_config_arg(p)
    p.add_argument("--peer", metavar="NODE", help="the peer's node id (default: the only peer)")
    p.add_argument(
        "--unfence",
        action="store_true",
        help="clear this node's own outdated mark (DRBD after-resync-target)",
    )
    p.set_defaults(handler=drbd_fence_peer)


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


# ------------------------------------------------------------------ drbd-fence-peer


def drbd_fence_peer(args: argparse.Namespace) -> int:
    """Exit codes are DRBD's, not the CLI's: DRBD reads them."""
    try:
        return asyncio.run(_drbd_fence_peer(args))
    except (CannotRun, VerbFailed) as exc:
        print(f"drbd-fence-peer: {exc}", file=sys.stderr)
        return DRBD_HANDLER_FAILED


async def _drbd_fence_peer(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    resource = os.environ.get("DRBD_RESOURCE", "?")
    bus = Bus.from_config(cfg)
    try:
        if args.unfence:
            await bus.set_outdated(cfg.node.id, False)
            message = f"{cfg.node.id} resynchronised ({resource}): outdated mark cleared"
            code = EXIT_OK
        else:
            peer = _peer_id(cfg, args.peer)
            lease = (await bus.read_lease()).lease
            if lease is not None and lease.next_node is None and lease.holder == peer:
                # The peer is the primary: DRBD outdates this node instead.
                print(f"{peer} holds the lease (epoch {lease.epoch}): not outdating the primary")
                return DRBD_PEER_PRIMARY
            await bus.set_outdated(peer, True)
            message = f"{peer} marked outdated on the cluster bus (DRBD {resource} lost its peer)"
            code = DRBD_PEER_OUTDATED
        print(message)
        try:
            await bus.append_event("drbd_fence_peer", message, resource=resource)
        except BusError as exc:
            log.info("event not recorded: %s", exc)
        return code
    except BusError as exc:
        raise VerbFailed(f"the cluster bus did not take the outdated mark: {exc}") from None
    finally:
        await bus.close()


def _peer_id(cfg: Config, given: str | None) -> str:
    if given:
        if given not in cfg.peer_ids:
            raise CannotRun(f"{given!r} is not a configured peer ({', '.join(cfg.peer_ids)})")
        return given
    if len(cfg.peer_ids) != 1:
        raise CannotRun("cannot tell which peer to outdate: give --peer NODE")
    return cfg.peer_ids[0]
