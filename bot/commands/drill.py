"""``failover-bot drill``: a production drill, safe to schedule.

Refuses unless both nodes are healthy, reporting and the standby ready. Then:
switchover with drain to the standby, proven by the new primary's own test call;
the same back. Each step's time, the calls drained (and cut), the test call and
the outage seen (no Asterisk answering on a primary or a draining one, in the
status polled every POLL seconds) are
printed, appended to the event log (kind ``drill_passed`` or ``drill_failed``),
sent as a webhook of that kind (when this user can read the webhook URL) and, with ``--textfile``,
written for node_exporter's textfile collector. Exit 0: passed; 1: refused or
failed; 2: could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bot.bus import Bus, BusError
from bot.commands.base import (
    EXIT_FAILED,
    EXIT_OK,
    CannotRun,
    add_config_arg,
    config_from_args,
    run_async,
)
from bot.commands.cluster import _duration, read_status
from bot.config import BUS_SECRETS, Config, ConfigError
from bot.drill import (
    OutageMeter,
    Report,
    Step,
    answering,
    channels_left,
    refusals,
    serving,
    test_call_since,
)
from bot.drill import asterisk as asterisk_of
from bot.drill import node as drill_node

POLL = 0.1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("drill", help="switch over to the standby and back, proven by test calls")
    add_config_arg(p)
    p.add_argument(
        "--drain-timeout",
        type=_duration,
        default=30.0,
        metavar="S",
        help="wait this long for calls to end before each hand-over (default 30 s)",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument(
        "--textfile",
        metavar="FILE",
        help="also write the report as Prometheus text (node_exporter textfile collector)",
    )
    p.set_defaults(handler=run_async(drill))


async def drill(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, secrets=BUS_SECRETS)
    bus = Bus.from_config(cfg)
    report = Report(cluster=cfg.cluster.name, started=time.time())
    try:
        try:
            status = await read_status(cfg, bus)
        except BusError as exc:
            raise CannotRun(f"cluster bus: {exc}") from None
        report.refused = refusals(status)
        report.original_primary = serving(status)
        if not report.refused and report.original_primary is not None:
            first = report.original_primary
            second = next(n["id"] for n in status["nodes"] if n.get("id") != first)
            for source, target, name in ((first, second, "over"), (second, first, "back")):
                step = await _step(cfg, bus, args.drain_timeout, source, target, name)
                report.steps.append(step)
                if not step.ok:
                    break
        try:
            report.serving_at_end = serving(await read_status(cfg, bus))
        except BusError:
            report.serving_at_end = None
        await _record(cfg, bus, report)
    finally:
        await bus.close()
    if args.textfile:
        _write_atomic(Path(args.textfile), report.textfile())
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        print("\n".join(report.lines()))
    return EXIT_OK if report.ok else EXIT_FAILED


async def _step(cfg: Config, bus: Bus, drain: float, source: str, target: str, name: str) -> Step:
    step = Step(name=f"switch {name} to {target}", source=source, target=target)
    limit = drain + 3 * cfg.cluster.lease_ttl + cfg.asterisk.boot_timeout + 30
    started, wall = time.monotonic(), time.time()
    meter = OutageMeter()
    status = await read_status(cfg, bus)
    if serving(status) != source or refusals(status):
        step.reason = "; ".join(refusals(status)) or f"{source} is not serving"
        return step
    calls = asterisk_of(status, source).get("active_calls")
    step.calls_at_start = calls if isinstance(calls, int) else None
    request = uuid.uuid4().hex[:12]
    await bus.append_event(
        "switchover_requested",
        f"drill: switchover to {target} requested",
        target=target,
        drain_timeout=drain,
        request=request,
    )
    await bus.request_switchover(target, drain, request_id=request)
    served_at: float | None = None
    test_wait = _test_call_wait(cfg)
    while time.monotonic() - started < limit:
        try:
            status = await read_status(cfg, bus)
        except BusError:
            status = {}
        now = time.monotonic()
        server = serving(status)
        meter.sample(now, answering(status))
        if server == target and served_at is None:
            served_at = now
            step.seconds = now - started
        if served_at is not None:
            if cfg.test_call is None:
                step.test_call = "not configured"
            else:
                step.test_call = test_call_since(status, target, wall)
            if step.test_call is not None or now - served_at > test_wait:
                break
        await asyncio.sleep(POLL)
    step.outage_seconds = round(meter.finish(time.monotonic()), 3)
    step.seconds = round(step.seconds, 3)
    step.calls_left = await _drained(bus, source, wall)
    if served_at is None:
        step.reason = f"{target} did not serve within {limit:g} s"
    elif step.test_call is None:
        step.reason = f"no test call from {target} within {test_wait:g} s of serving"
    elif step.test_call not in ("answered", "not configured"):
        step.reason = f"{target}'s test call: {step.test_call}"
    else:
        step.ok = await _standby_ready(cfg, bus, source, limit)
        if not step.ok:
            step.reason = f"{source} is not a ready standby again (or the request stayed)"
    return step


def _test_call_wait(cfg: Config) -> float:
    tc = cfg.test_call
    return 10.0 if tc is None else tc.interval + tc.timeout + 5.0


async def _standby_ready(cfg: Config, bus: Bus, node_id: str, limit: float) -> bool:
    """Wait until ``node_id`` is a ready standby again and the request is cleared (the
    next step needs both: a request still pending is not a finished hand-over)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            status = await read_status(cfg, bus)
        except BusError:
            status = {}
        n = drill_node(status, node_id)
        ready = n.get("role") == "standby" and n.get("ready") is True and n.get("healthy") is True
        if ready and not status.get("switchover"):
            return True
        await asyncio.sleep(POLL)
    return False


async def _drained(bus: Bus, source: str, since_wall: float) -> int | None:
    """Channels the source's drain left up (from its drain step event), if it said."""
    try:
        events = await bus.read_events(200)
    except BusError:
        return None
    for event in reversed(events):
        if (
            event.get("node") == source
            and event.get("kind") == "step"
            and (event.get("fields") or {}).get("step") == "drain"
            and float(event.get("time") or 0) >= since_wall
        ):
            return channels_left(str(event.get("message", "")))
    return None


async def _record(cfg: Config, bus: Bus, report: Report) -> None:
    """Event, then webhook; a webhook this user cannot send is said, not hidden."""
    kind = "drill_passed" if report.ok else "drill_failed"
    fields = report.as_dict()
    try:
        await bus.append_event(kind, report.summary(), **fields)
    except BusError as exc:
        print(f"drill: event not recorded: {exc}", file=sys.stderr)
    if not cfg.notify.webhooks:
        return
    from bot.notify import Notifier

    try:
        notifier = Notifier(
            list(cfg.notify.webhooks),
            node_id=cfg.node.id,
            cluster=cfg.cluster.name,
            timeout=cfg.notify.timeout,
            max_attempts=2,
        )
    except ConfigError as exc:  # the URL file is root's: run the drill as root
        print(f"drill: webhook not sent: {'; '.join(exc.lines())}", file=sys.stderr)
        return
    runner = asyncio.create_task(notifier.run())
    try:
        notifier.notify(kind, report.summary(), fields)
        await notifier.close(flush_timeout=cfg.notify.timeout)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
