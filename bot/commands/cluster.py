"""Cluster verbs: status, switchover, pause, resume, cordon, uncordon, clear-failed, events.

They read from and write intent to the cluster bus; the HA loops act on it.
``status`` falls back to the bots' own ``GET /status`` when Redis is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from bot.bus import Bus, BusCorrupt, BusError
from bot.bus.status import build_status, merge_answers
from bot.commands.base import CannotRun, VerbFailed, add_config_arg, config_from_args, run_async
from bot.config import BUS_SECRETS, Config, parse_duration

PEER_TIMEOUT = 2.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="nodes, roles, lease, epoch, health")
    add_config_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--watch",
        nargs="?",
        const=1.0,
        type=_duration,
        metavar="S",
        help="print it again every S seconds (default 1) until Ctrl-C",
    )
    p.set_defaults(handler=run_async(status))

    p = sub.add_parser("switchover", help="hand the primary role to NODE (planned)")
    add_config_arg(p)
    p.add_argument("--to", required=True, metavar="NODE", help="the node to become primary")
    p.add_argument(
        "--drain-timeout",
        type=_duration,
        default=0.0,
        metavar="S",
        help="wait this long for calls to end before stopping Asterisk (e.g. 30, 30s, 2m)",
    )
    p.add_argument("--wait", action="store_true", help="wait until NODE holds the lease")
    p.set_defaults(handler=run_async(switchover))

    for verb, text in (("pause", "maintenance mode: no automatic action"), ("resume", None)):
        p = sub.add_parser(verb, help=text or "end maintenance mode")
        add_config_arg(p)
        p.set_defaults(handler=run_async(pause if verb == "pause" else resume))

    for verb, text in (
        ("cordon", "take NODE out of eligibility"),
        ("uncordon", "put NODE back into eligibility"),
        ("clear-failed", "end NODE's failed hold-down now"),
    ):
        p = sub.add_parser(verb, help=text)
        add_config_arg(p)
        p.add_argument("node", metavar="NODE")
        p.set_defaults(handler=run_async(node_control), verb=verb)

    p = sub.add_parser("events", help="the cluster's event log")
    add_config_arg(p)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--count", type=int, default=50, help="how many past events (default 50)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=run_async(events))


def _duration(text: str) -> float:
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@contextlib.asynccontextmanager
async def _bus(args: argparse.Namespace) -> AsyncIterator[tuple[Config, Bus]]:
    cfg = config_from_args(args, secrets=BUS_SECRETS)
    bus = Bus.from_config(cfg)
    try:
        yield cfg, bus
    except BusError as exc:
        raise CannotRun(f"cluster bus: {exc}") from None
    finally:
        await bus.close()


def _nodes(cfg: Config) -> list[str]:
    return sorted({cfg.node.id, *cfg.peer_ids})


def _check_node(cfg: Config, node: str) -> None:
    if node not in _nodes(cfg):
        raise CannotRun(f"unknown node {node!r} (nodes: {', '.join(_nodes(cfg))})")


# ---------------------------------------------------------------------- status


async def read_status(cfg: Config, bus: Bus) -> dict[str, Any]:
    """The status object from Redis (corrupt values listed as problems); BusError when
    Redis cannot be used."""
    problems: list[str] = []
    lease = records = controls = None
    try:
        lease = await bus.read_lease()
    except BusCorrupt as exc:
        problems.append(f"lease: {exc}")
    try:
        records = await bus.node_records()
    except BusCorrupt as exc:
        problems.append(f"node records: {exc}")
    try:
        controls = await bus.controls()
    except BusCorrupt as exc:
        problems.append(f"controls: {exc}")
    seen = await bus.last_seen_times()
    return dict(
        build_status(
            cluster=cfg.cluster.name,
            node_ids=_nodes(cfg),
            lease=lease,
            records=records or {},
            controls=controls,
            now_wall=time.time(),
            now_clock=bus.clock(),
            stale_after=stale_after(cfg),
            seen=seen,
            problems=problems,
        )
    )


def stale_after(cfg: Config) -> float:
    """A node record older than this is stale: a live node rewrites it every renewal."""
    return cfg.cluster.lease_ttl + cfg.cluster.renew_interval


def status_urls(cfg: Config) -> list[tuple[str, str]]:
    """(node id, GET /status URL) for this node's own API and every peer's."""
    host, _, port = cfg.api.listen.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    urls = [(cfg.node.id, f"http://{host}:{port}/status")]
    urls += [(p.id, p.api.rstrip("/") + "/status") for p in cfg.cluster.peers]
    return urls


async def status_from_peers(
    urls: list[tuple[str, str]], within: float = PEER_TIMEOUT
) -> tuple[dict[str, Any] | None, list[str]]:
    """Ask every bot at once (each within ``within``); every node that answers speaks
    for itself (``merge_answers``)."""
    problems: list[str] = []

    async def ask(
        session: aiohttp.ClientSession, node: str, url: str
    ) -> tuple[str, dict[str, Any] | None, str]:
        try:
            async with session.get(url) as resp:
                if resp.status != 200:
                    return node, None, f"HTTP {resp.status}"
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return node, None, str(exc) or type(exc).__name__
        if not isinstance(data, dict):
            return node, None, "not a JSON object"
        return node, data, ""

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as session:
        results = await asyncio.gather(*(ask(session, node, url) for node, url in urls))
    answers: list[tuple[str, dict[str, Any]]] = []
    for node, data, problem in results:
        if data is None:
            problems.append(f"{node}: {problem}")
        else:
            answers.append((node, data))
    if not answers:
        return None, problems
    return merge_answers(answers), problems


async def gather_status(cfg: Config) -> dict[str, Any]:
    """The status from Redis or, when Redis cannot be read, from the first bot API that
    answers (``redis_error`` then says why). CannotRun when neither answers."""
    bus = Bus.from_config(cfg)
    try:
        return await read_status(cfg, bus)
    except BusError as exc:
        answer, problems = await status_from_peers(status_urls(cfg))
        if answer is None:
            raise CannotRun(
                f"Redis unreachable ({exc}) and no bot API answered: " + "; ".join(problems)
            ) from None
        return {**answer, "redis_error": str(exc)}
    finally:
        await bus.close()


async def status(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, secrets=BUS_SECRETS)
    if args.watch is not None:
        return await watch(cfg, args.watch, as_json=args.json)
    obj = await gather_status(cfg)
    if "redis_error" in obj:
        print(
            f"Redis unreachable ({obj['redis_error']}): answered by {obj['source']}",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(obj, sort_keys=True))
    else:
        print(format_status(obj))
    return 0


CLEAR = "\x1b[H\x1b[2J"


async def watch(cfg: Config, interval: float, *, as_json: bool = False, frames: int = 0) -> int:
    """Print the status again every ``interval`` seconds (on a terminal, in place) until
    interrupted; ``frames`` > 0 stops after that many (for scripts)."""
    shown = 0
    tty = sys.stdout.isatty()
    while True:
        started = time.monotonic()
        try:
            obj = await gather_status(cfg)
            text = json.dumps(obj, sort_keys=True) if as_json else format_status(obj)
        except CannotRun as exc:
            text = f"nothing answers: {exc}"
        stamp = time.strftime("%H:%M:%S")
        if as_json:
            print(text, flush=True)
        else:
            print(
                (CLEAR if tty else "")
                + f"{text}\n-- {stamp}, every {interval:g} s (Ctrl-C to stop)",
                flush=True,
            )
        shown += 1
        if frames and shown >= frames:
            return 0
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


def _yn(value: object) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _seen(n: dict[str, Any]) -> str:
    seen = n.get("last_seen_seconds")
    text = "never" if n.get("freshness") == "missing" and seen is None else "-"
    if seen is not None:
        text = f"{seen:.1f}s ago"
    return text + (" STALE" if n.get("stale") else "")


def format_status(obj: dict[str, Any]) -> str:
    remaining = obj.get("lease_remaining_seconds")
    lines = [
        f"cluster {obj.get('cluster')} (from {obj.get('source')}): "
        f"holder {obj.get('holder') or 'none'}, epoch {obj.get('epoch')}, "
        f"lease {'-' if remaining is None else f'{remaining:.1f}s'} left, "
        f"paused {_yn(obj.get('paused'))}"
    ]
    sw = obj.get("switchover")
    if sw:
        lines.append(f"switchover requested to {sw.get('target')}")
    if obj.get("settings_drift"):
        lines.append("WARNING: the nodes' cluster settings differ (configuration drift)")
    if not obj.get("serving", [None]):
        lines.append("WARNING: no node is serving")
    lines.append(f"{'NODE':<12} {'ROLE':<20} {'HEALTHY':<8} {'READY':<6} {'CORDONED':<9} SEEN")
    for n in obj.get("nodes", []):
        lines.append(
            f"{n.get('id', '?'):<12} {n.get('role', '?'):<20} {_yn(n.get('healthy')):<8} "
            f"{_yn(n.get('ready')):<6} {_yn(n.get('cordoned')):<9} {_seen(n)}"
        )
        reasons = [*(n.get("health_reasons") or []), *(n.get("ready_reasons") or [])]
        notes = (n.get("extra") or {}).get("asterisk", {}).get("notes") or []
        if reasons or notes:
            lines.append(f"{'':<12} " + "; ".join([*reasons, *notes]))
    lines += [f"problem: {p}" for p in obj.get("problems", [])]
    advice = cold_start_advice(obj)
    if advice:
        lines.append(advice)
    return "\n".join(lines)


def cold_start_advice(obj: dict[str, Any]) -> str | None:
    """With no node reporting, which one to start first: the last primary, whose data
    is the newest as far as the bus knows; DRBD has the last word once both connect."""
    nodes = [n for n in obj.get("nodes", []) if isinstance(n, dict)]
    if not nodes or any(n.get("freshness") in ("live", "skewed") for n in nodes):
        return None
    drbd = "DRBD decides once both are up: `drbdadm status` shows UpToDate on the newer disk"
    last = [n for n in nodes if str(n.get("role", "")).endswith("(was primary)")]
    if len(last) == 1:
        n = last[0]
        seen = n.get("last_seen_seconds")
        ago = f", last seen {seen:.0f} s ago" if isinstance(seen, (int, float)) else ""
        return (
            f"COLD START: no node reports. Start {n.get('id')} first: it was primary last"
            f"{ago}, so its data is the newest as far as Redis knows; {drbd}."
        )
    return f"COLD START: no node reports and Redis does not know the last primary; {drbd}."


# ---------------------------------------------------------------------- controls


async def switchover(args: argparse.Namespace) -> int:
    async with _bus(args) as (cfg, bus):
        _check_node(cfg, args.to)
        controls = await bus.controls()
        read = await bus.read_lease()
        refused = _refusal(args.to, bool(controls.paused), controls.cordoned, controls.failed)
        if refused:
            raise VerbFailed(f"switchover to {args.to} refused: {refused}")
        if read.lease is not None and read.lease.held_by(args.to):
            print(f"{args.to} already holds the lease (epoch {read.lease.epoch})")
            return 0
        request_id = uuid.uuid4().hex[:12]
        await bus.append_event(
            "switchover_requested",
            f"switchover to {args.to} requested from the CLI",
            target=args.to,
            drain_timeout=args.drain_timeout,
            request=request_id,
        )
        await bus.request_switchover(args.to, args.drain_timeout, request_id=request_id)
        print(f"switchover to {args.to} requested (request {request_id})")
        if not args.wait:
            return 0
        limit = args.drain_timeout + 3 * cfg.cluster.lease_ttl + cfg.asterisk.boot_timeout + 30
        outcome = await wait_for_switchover(bus, args.to, request_id, limit)
        if outcome != "done":
            raise VerbFailed(f"switchover to {args.to}: {outcome}")
        print(f"{args.to} holds the lease")
        return 0


def _refusal(target: str, paused: bool, cordoned: frozenset[str], failed: dict[str, float]) -> str:
    if paused:
        return "the cluster is paused (resume first)"
    if target in cordoned:
        return f"{target} is cordoned"
    until = failed.get(target)
    if until is not None and until > time.time():
        return f"{target} is held down after a failed takeover (clear-failed {target})"
    return ""


async def wait_for_switchover(bus: Bus, target: str, request_id: str, limit: float) -> str:
    """ "done" when ``target`` holds the lease; otherwise why it did not happen."""
    woken = asyncio.Event()

    async def listen() -> None:
        while True:
            try:
                async for _kind in bus.wakeups():
                    woken.set()
            except BusError:
                woken.set()
                await asyncio.sleep(bus.timeout)

    listener = asyncio.create_task(listen())
    try:
        async with asyncio.timeout(limit):
            while True:
                woken.clear()
                try:
                    # Controls first: a request cleared after the hand-over is then
                    # followed by a lease read that shows the new holder.
                    controls = await bus.controls()
                    read = await bus.read_lease()
                except BusError:
                    read = None
                if read is not None:
                    if read.lease is not None and read.lease.held_by(target):
                        return "done"
                    sw = controls.switchover
                    if sw is None or sw.request_id != request_id:
                        reason = await _last_switchover_event(bus)
                        return f"request ended without a hand-over{reason}"
                # Woken by the bus; re-check at least every second regardless.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), 1.0)
    except TimeoutError:
        return f"{target} did not take the lease within {limit:g}s"
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def _last_switchover_event(bus: Bus) -> str:
    try:
        for event in reversed(await bus.read_events(20)):
            if event["kind"].startswith("switchover") and event["kind"] != "switchover_requested":
                return f": {event['message']}"
    except BusError:
        pass
    return ""


async def pause(args: argparse.Namespace) -> int:
    async with _bus(args) as (_cfg, bus):
        await bus.set_paused(True)
        await bus.append_event("paused", "maintenance mode on (CLI)")
        print("paused: no automatic action until resume")
    return 0


async def resume(args: argparse.Namespace) -> int:
    async with _bus(args) as (_cfg, bus):
        await bus.set_paused(False)
        await bus.append_event("resumed", "maintenance mode off (CLI)")
        print("resumed")
    return 0


async def node_control(args: argparse.Namespace) -> int:
    async with _bus(args) as (cfg, bus):
        _check_node(cfg, args.node)
        if args.verb == "cordon":
            await bus.set_cordon(args.node, True)
        elif args.verb == "uncordon":
            await bus.set_cordon(args.node, False)
        else:
            await bus.set_failed(args.node, None)
        kind = args.verb.replace("-", "_")
        await bus.append_event(kind, f"{args.verb} {args.node} (CLI)", target=args.node)
        print(f"{args.verb} {args.node}: done")
    return 0


# ---------------------------------------------------------------------- events


def format_event(event: dict[str, Any]) -> str:
    when = event.get("time")
    stamp = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
        if isinstance(when, (int, float))
        else "?"
    )
    fields = " ".join(f"{k}={v}" for k, v in sorted((event.get("fields") or {}).items()))
    return (
        f"{stamp} {event.get('node') or '-':<8} {event.get('kind'):<22} {event.get('message')}"
        + (f"  [{fields}]" if fields else "")
    )


async def events(args: argparse.Namespace) -> int:
    async with _bus(args) as (_cfg, bus):
        past = await bus.read_events(max(0, args.count)) if args.count > 0 else []
        for event in past:
            _print_event(event, args.json)
        if not args.follow:
            return 0
        since = past[-1]["id"] if past else "$"
        async for event in bus.follow_events(since):
            _print_event(event, args.json)
    return 0


def _print_event(event: dict[str, Any], as_json: bool) -> None:
    print(json.dumps(event, sort_keys=True) if as_json else format_event(event), flush=True)
