"""failover-bot rseries ...: talk to the R-Series appliance directly."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

from bot.commands.base import CannotRun, VerbFailed, add_config_arg, config_from_args, run_async
from rseries.driver import ApplianceState, RSeriesLink
from rseries.errors import ApplianceError, RSeriesError, RSeriesLinkError, RSeriesTimeout


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rseries", help="R-Series appliance: status, route, mode, watch")
    verbs = p.add_subparsers(dest="rseries_verb", metavar="VERB", required=True)
    for name, help_text in (
        ("status", "show the appliance state"),
        ("route", "move all spans to host A or B (verified with STATUS)"),
        ("mode", "AUTO (the appliance's watchdog may switch) or MANUAL"),
        ("watch", "print notifications as they arrive"),
    ):
        v = verbs.add_parser(name, help=help_text)
        if name == "route":
            v.add_argument("host", type=str.upper, choices=["A", "B"])
        if name == "mode":
            v.add_argument("mode", type=str.lower, choices=["auto", "manual"])
        v.add_argument("--port", metavar="URL", help="pyserial URL (default: rseries.port)")
        v.add_argument("--timeout", type=float, default=None, help="command timeout, s")
        v.add_argument("--json", action="store_true", help="machine-readable output")
        add_config_arg(v)
        v.set_defaults(handler=run_async(_run))


def _state_json(state: ApplianceState) -> dict[str, Any]:
    return state.as_dict()


def _print_state(state: ApplianceState, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_state_json(state)))
        return
    hb = f"A={state.hb_a} B={state.hb_b}"
    wdt = "off" if state.watchdog is None else f"{state.watchdog}s"
    lock = "on" if state.lock else "off"
    print(f"active {state.active}  mode {state.mode}  watchdog {wdt}  heartbeat {hb}  lock {lock}")
    if state.spans is not None or state.fw is not None:
        print(f"spans {state.spans}  firmware {state.fw}")


def _settings(args: argparse.Namespace) -> tuple[str, float]:
    if args.port:
        return args.port, args.timeout or 1.0
    rs = config_from_args(args).rseries
    if rs is None:
        raise CannotRun("no --port given and the configuration has no [rseries] section")
    return rs.port, args.timeout or rs.command_timeout


async def _run(args: argparse.Namespace) -> int:
    url, timeout = _settings(args)
    down = asyncio.Event()

    def on_link(up: bool, reason: str) -> None:
        if not up:
            down.set()

    link = RSeriesLink(url, command_timeout=timeout, reconnect_max=1.0, on_link=on_link)
    await link.start()
    try:
        if link.last_error and not link.connected:
            raise CannotRun(link.last_error)
        verb = args.rseries_verb
        if verb == "status":
            _print_state(await link.status(), args.json)
        elif verb == "route":
            _print_state(await link.route(args.host), args.json)
        elif verb == "mode":
            await link.set_mode(args.mode)
            _print_state(await link.status(), args.json)
        else:
            await _watch(link, down, args.json)
    except ApplianceError as exc:
        print(exc.line)
        hint = " (front-panel lock is on)" if exc.code == 4 else ""
        raise VerbFailed(f"the appliance answered {exc.line}{hint}") from None
    except (RSeriesLinkError, RSeriesTimeout) as exc:
        raise CannotRun(str(exc)) from None
    except RSeriesError as exc:
        raise VerbFailed(str(exc)) from None
    finally:
        await link.close()
    return 0


async def _watch(link: RSeriesLink, down: asyncio.Event, as_json: bool) -> None:
    """Print notifications until the link goes down (exit 2) or the user interrupts."""
    notes = link.notifications()
    _print_state(await link.status(), as_json)

    async def printer() -> None:
        async for note in notes:
            if as_json:
                print(json.dumps({"notification": note.fields, "raw": note.raw}), flush=True)
            else:
                print(note.raw, flush=True)

    printing = asyncio.create_task(printer())
    try:
        await down.wait()
    finally:
        printing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await printing
    raise RSeriesLinkError(link.last_error or "link lost")
