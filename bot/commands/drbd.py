"""DRBD's handlers and the operator's override.

``drbd-fence-peer``    DRBD's fence-peer handler (and, with --unfence, after-resync-target;
                       with --unfence-peer, DRBD 9's unfence-peer)
``drbd-split-brain``   DRBD's split-brain handler: an alert through the bot
``force-promote``      let this node promote data marked outdated, once

The fence-peer handler outdates the peer along two paths at once: it asks the
peer bot over the signed peer channel to outdate itself (the peer makes its mark
durable and runs ``drbdadm outdate`` before it answers), and it records the mark on
the cluster bus, confirmed with ``WAIT`` where Sentinel is in use. Its exit code is
DRBD's (drbd.conf(5)):

- 4 (peer outdated) when either path confirmed;
- 6 (peer is primary: DRBD outdates this node instead) when the peer refused
  because it is Primary, or holds the lease, and no path confirmed;
- anything else otherwise. Never 5 ("peer unreachable"): DRBD takes 5 from an
  UpToDate node as "peer assumed dead" and resumes writing alone, which is exactly
  the unconfirmed fencing that loses data. With ``fencing resource-and-stonith``
  a failure keeps I/O frozen until the link returns or an operator decides.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass

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
from bot.state import DataMarks, StateError, describe_mark

log = logging.getLogger(__name__)

# DRBD's fence-peer handler exit codes (drbd.conf(5), "fence-peer").
DRBD_PEER_OUTDATED = 4
DRBD_PEER_PRIMARY = 6
# Outside 3..7: the handler failed; DRBD does not assume the peer is fenced.
DRBD_HANDLER_FAILED = 1

RETRY_PAUSE = 0.3  # between attempts on a path that did not answer
GRACE_AFTER_CONFIRMED = 0.5  # the other path's last chance once one path confirmed

CONFIRM_FLAG = "--i-know-data-may-be-lost"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "drbd-fence-peer",
        help="DRBD's fence-peer handler: outdate the peer over the peer channel and on the "
        "cluster bus (exit 4 peer outdated, 6 peer is primary, 1 not confirmed: I/O stays "
        "frozen)",
    )
    add_config_arg(p)
    p.add_argument("--peer", metavar="NODE", help="the peer's node id (default: the only peer)")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--unfence",
        action="store_true",
        help="this node resynchronised: clear its own outdated mark (after-resync-target)",
    )
    group.add_argument(
        "--unfence-peer",
        action="store_true",
        help="the peer resynchronised: clear its mark on the cluster bus (DRBD 9 unfence-peer)",
    )
    p.set_defaults(handler=drbd_fence_peer)

    p = sub.add_parser(
        "drbd-split-brain",
        help="DRBD's split-brain handler: alert (event and webhook); resolve by hand",
    )
    add_config_arg(p)
    p.set_defaults(handler=run_async(drbd_split_brain))

    p = sub.add_parser(
        "force-promote",
        help="let this node promote its DRBD data although it is marked outdated (once; "
        "acknowledged writes may be lost): clears the marks, logged, event and webhook",
    )
    add_config_arg(p)
    p.add_argument(
        CONFIRM_FLAG,
        dest="confirmed",
        action="store_true",
        help="required: you accept that writes the peer acknowledged may be lost",
    )
    p.add_argument("--reason", default="", help="why (recorded in the event log)")
    p.set_defaults(handler=run_async(force_promote))


# ------------------------------------------------------------------ drbd-fence-peer


def drbd_fence_peer(args: argparse.Namespace) -> int:
    """Exit codes are DRBD's, not the CLI's: DRBD reads them."""
    try:
        return asyncio.run(_drbd_fence_peer(args))
    except (CannotRun, VerbFailed) as exc:
        print(f"drbd-fence-peer: {exc}", file=sys.stderr)
        return DRBD_HANDLER_FAILED


@dataclass(frozen=True)
class PathOutcome:
    path: str  # "peer channel" | "cluster bus"
    outcome: str  # "outdated" | "primary" | "failed"
    detail: str


async def _drbd_fence_peer(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    resource = os.environ.get("DRBD_RESOURCE", "")
    if args.unfence:
        return await _unfence_self(cfg, resource)
    peer = _peer_id(cfg, args.peer)
    if args.unfence_peer:
        return await _unfence_peer(cfg, peer, resource)
    budget = 2 * cfg.cluster.lease_ttl
    outcomes = await fence_peer(cfg, peer, resource, budget)
    code, summary = decide(outcomes)
    out = sys.stdout if code == DRBD_PEER_OUTDATED else sys.stderr
    for o in outcomes:
        print(f"{o.path}: {o.outcome} ({o.detail})", file=out)
    print(summary, file=out)
    kind = "drbd_fence_peer" if code == DRBD_PEER_OUTDATED else "drbd_fence_peer_failed"
    await _event(cfg, kind, summary, resource=resource, exit=code)
    return code


def decide(outcomes: list[PathOutcome]) -> tuple[int, str]:
    """DRBD's exit code and one sentence, from what each path confirmed (pure)."""
    confirmed = [o.path for o in outcomes if o.outcome == "outdated"]
    if confirmed:
        return DRBD_PEER_OUTDATED, f"peer outdated, confirmed by the {' and the '.join(confirmed)}"
    primary = [o for o in outcomes if o.outcome == "primary"]
    if primary:
        return DRBD_PEER_PRIMARY, f"peer is primary ({primary[0].detail}): not outdating it"
    details = "; ".join(f"{o.path}: {o.detail}" for o in outcomes)
    return (
        DRBD_HANDLER_FAILED,
        f"peer NOT outdated (no path confirmed: {details}); I/O stays frozen",
    )


async def fence_peer(cfg: Config, peer: str, resource: str, budget: float) -> list[PathOutcome]:
    """Both paths at once; once one confirmed, the other gets a short grace."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    tasks = [
        asyncio.create_task(_peer_path(cfg, peer, resource, deadline)),
        asyncio.create_task(_bus_path(cfg, peer, resource, deadline)),
    ]
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(t.result().outcome == "outdated" for t in done) and pending:
                _, pending = await asyncio.wait(pending, timeout=GRACE_AFTER_CONFIRMED)
                break
    finally:
        for t in pending:
            t.cancel()
        for t in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await t
    results = []
    for name, t in zip(("peer channel", "cluster bus"), tasks, strict=True):
        if t.cancelled():
            results.append(PathOutcome(name, "failed", "gave up: the other path confirmed"))
        else:
            results.append(t.result())
    return results


async def _peer_path(cfg: Config, peer: str, resource: str, deadline: float) -> PathOutcome:
    import aiohttp

    from bot.peer import request_outdate

    name = "peer channel"
    peer_cfg = cfg.peer(peer)
    if cfg.cluster.secret_file is None or peer_cfg is None:
        return PathOutcome(name, "failed", "no cluster secret or peer API configured")
    loop = asyncio.get_running_loop()
    detail = "not tried"
    async with aiohttp.ClientSession() as session:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return PathOutcome(name, "failed", detail)
            answer = await request_outdate(
                cfg.node.id,
                peer_cfg.api,
                cfg.cluster.secret_file,
                resource or None,
                session=session,
                limit=min(left, max(1.0, cfg.cluster.lease_ttl / 2)),
            )
            if answer.outdated:
                return PathOutcome(name, "outdated", answer.reason)
            if answer.primary:
                return PathOutcome(name, "primary", answer.reason)
            detail = answer.reason
            if answer.reached:
                return PathOutcome(name, "failed", detail)  # it answered: no retry helps
            await asyncio.sleep(min(RETRY_PAUSE, max(0.0, deadline - loop.time())))


async def _bus_path(cfg: Config, peer: str, resource: str, deadline: float) -> PathOutcome:
    name = "cluster bus"
    loop = asyncio.get_running_loop()
    detail = "not tried"
    bus = Bus.from_config(cfg)
    try:
        while loop.time() < deadline:
            try:
                # One script: no acquire can come between the lease check and the mark.
                lease, replicas = await bus.mark_outdated(peer, by=cfg.node.id)
                if lease is not None:
                    return PathOutcome(name, "primary", f"{peer} holds the lease {lease.epoch}")
                how = "" if replicas is None else f", {replicas} replica(s) confirmed (WAIT)"
                return PathOutcome(name, "outdated", f"{peer} marked outdated{how}")
            except BusError as exc:
                detail = str(exc)
            await asyncio.sleep(min(RETRY_PAUSE, max(0.0, deadline - loop.time())))
        return PathOutcome(name, "failed", detail)
    finally:
        await bus.close()


async def _unfence_self(cfg: Config, resource: str) -> int:
    """After-resync-target: this node's data is UpToDate again."""
    problems = []
    try:
        cleared = DataMarks(cfg.node.state_dir).clear_outdated()
    except StateError as exc:
        cleared = False
        problems.append(str(exc))
    bus = Bus.from_config(cfg)
    try:
        await bus.set_outdated(cfg.node.id, False)
    except BusError as exc:
        problems.append(f"cluster bus: {exc}")
    finally:
        await bus.close()
    message = f"{cfg.node.id} resynchronised ({resource or 'DRBD'}): outdated mark cleared" + (
        "" if cleared else " (there was no local mark)"
    )
    print(message)
    await _event(cfg, "drbd_unfenced", message, resource=resource)
    if problems:
        # A mark left behind keeps the node not ready: safe, and the message says why.
        print("not cleared: " + "; ".join(problems), file=sys.stderr)
        return DRBD_HANDLER_FAILED
    return EXIT_OK


async def _unfence_peer(cfg: Config, peer: str, resource: str) -> int:
    bus = Bus.from_config(cfg)
    try:
        await bus.set_outdated(peer, False)
    except BusError as exc:
        print(f"drbd-fence-peer --unfence-peer: cluster bus: {exc}", file=sys.stderr)
        return DRBD_HANDLER_FAILED
    finally:
        await bus.close()
    message = f"{peer} resynchronised ({resource or 'DRBD'}): its mark on the cluster bus cleared"
    print(message)
    await _event(cfg, "drbd_unfenced", message, resource=resource)
    return EXIT_OK


def _peer_id(cfg: Config, given: str | None) -> str:
    if given:
        if given not in cfg.peer_ids:
            raise CannotRun(f"{given!r} is not a configured peer ({', '.join(cfg.peer_ids)})")
        return given
    if len(cfg.peer_ids) != 1:
        raise CannotRun("cannot tell which peer to outdate: give --peer NODE")
    return cfg.peer_ids[0]


# ------------------------------------------------------------------ drbd-split-brain


async def drbd_split_brain(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    resource = os.environ.get("DRBD_RESOURCE", "DRBD")
    message = (
        f"DRBD split brain on {resource} seen by {cfg.node.id}: the resource stays "
        "disconnected (StandAlone) and nothing was discarded; choose the victim by hand "
        "(deploy/drbd/README.md)"
    )
    print(message, file=sys.stderr)
    log.critical("%s", message)
    await _event(cfg, "drbd_split_brain", message, resource=resource, alert=True)
    await _webhook(cfg, "drbd_split_brain", message, {"resource": resource})
    return EXIT_OK


# ------------------------------------------------------------------ force-promote


async def force_promote(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if not args.confirmed:
        raise CannotRun(
            f"force-promote needs {CONFIRM_FLAG}: writes acknowledged on the peer after this "
            "node was outdated are not in this node's data and will be lost"
        )
    if cfg.drbd is None:
        raise CannotRun("no [drbd] section: nothing to force")
    marks = DataMarks(cfg.node.state_dir)
    who = f"{os.environ.get('SUDO_USER') or os.environ.get('USER') or 'operator'}@{_host()}"
    overridden = []
    mark = marks.outdated()
    if mark is not None:
        overridden.append("state directory: " + describe_mark(mark))
    bus_note = ""
    bus = Bus.from_config(cfg)
    try:
        if cfg.node.id in (await bus.controls()).outdated:
            overridden.append("cluster bus: marked outdated")
        await bus.set_outdated(cfg.node.id, False)
    except BusError as exc:
        bus_note = f" (cluster bus not cleared: {exc}; the node stays ineligible until it is)"
    finally:
        await bus.close()
    try:
        marks.allow_force(by=who, at_wall=time.time(), reason=args.reason or "not given")
        marks.clear_outdated()
    except StateError as exc:
        raise VerbFailed(f"could not record the permission: {exc}") from None
    what = "; ".join(overridden) or "no outdated mark (DRBD's own disk state is overridden)"
    message = (
        f"force-promote on {cfg.node.id} by {who}: data that may lack acknowledged writes "
        f"will be promoted at the next takeover ({what}){bus_note}"
    )
    log.warning("%s", message)
    print(message)
    await _event(cfg, "force_promote", message, by=who, reason=args.reason, alert=True)
    await _webhook(cfg, "force_promote", message, {"by": who, "reason": args.reason})
    if bus_note:
        raise VerbFailed(bus_note.strip(" ()"))
    return EXIT_OK


def _host() -> str:
    try:
        return socket.gethostname()
    except OSError:
        return "?"


# ------------------------------------------------------------------ reporting


async def _event(cfg: Config, kind: str, message: str, **fields: object) -> None:
    """Best effort and bounded: the handler's answer never waits on the event log."""
    bus = Bus.from_config(cfg)
    try:
        await bus.append_event(kind, message, **fields)
    except BusError as exc:
        log.info("event not recorded: %s", exc)
    finally:
        await bus.close()


async def _webhook(cfg: Config, kind: str, message: str, fields: dict[str, object]) -> None:
    from bot.notify import Notifier

    if not cfg.notify.webhooks:
        return
    notifier = Notifier(
        list(cfg.notify.webhooks),
        node_id=cfg.node.id,
        cluster=cfg.cluster.name,
        timeout=cfg.notify.timeout,
        max_attempts=2,
    )
    runner = asyncio.create_task(notifier.run())
    notifier.notify(kind, message, fields)
    await notifier.close(flush_timeout=cfg.notify.timeout)
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
