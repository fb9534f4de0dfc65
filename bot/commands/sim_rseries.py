"""``failover-bot simulate rseries``: run the appliance simulator in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from bot.commands.base import CannotRun, run_async
from rseries.simulator import Simulator


def register_simulate(simsub: argparse._SubParsersAction) -> None:
    p = simsub.add_parser(
        "rseries",
        help="the R-Series appliance with two host links (pseudo-terminals or TCP)",
        description="Prints 'ready' on stdout once both links and the control port are up; "
        "pty symlinks are created only then.",
    )
    links = p.add_mutually_exclusive_group(required=True)
    links.add_argument("--link-a", metavar="PATH", help="symlink to host A's pseudo-terminal")
    links.add_argument("--tcp-a", metavar="PORT", type=int, help="host A's TCP port (loopback)")
    p.add_argument("--link-b", metavar="PATH", help="symlink to host B's pseudo-terminal")
    p.add_argument("--tcp-b", metavar="PORT", type=int, help="host B's TCP port (loopback)")
    p.add_argument("--control-port", metavar="C", type=int, help="JSON-lines control port")
    # --log-file too: the top-level --log-format/--log-level make a bare --log ambiguous
    # while argparse allows abbreviations there.
    p.add_argument("--log", "--log-file", dest="log", metavar="FILE", help="JSONL state log")
    p.add_argument("--relay-time", type=float, default=0.02, help="relay settle time, s")
    p.add_argument("--mode", choices=["auto", "manual"], default="manual")
    p.add_argument("--wdt", type=int, default=None, help="watchdog seconds at power-on")
    p.set_defaults(handler=run_async(_run))


async def _run(args: argparse.Namespace) -> int:
    if args.link_a is not None and args.link_b is not None:
        links: dict[str, str | int] = {"a": args.link_a, "b": args.link_b}
    elif args.tcp_a is not None and args.tcp_b is not None:
        links = {"a": args.tcp_a, "b": args.tcp_b}
    else:
        raise CannotRun("give --link-a PATH --link-b PATH, or --tcp-a PORT --tcp-b PORT")
    if args.wdt is not None and not 1 <= args.wdt <= 60:
        raise CannotRun("--wdt must be 1..60")
    try:
        sim = Simulator(
            links=links,
            control_port=args.control_port,
            log_path=args.log,
            relay_time=args.relay_time,
            mode=args.mode,
            wdt=args.wdt,
        )
        await sim.start()
    except OSError as exc:
        raise CannotRun(f"simulator cannot start: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        where = ", ".join(f"{n}={lk.describe()}" for n, lk in sim.links.items())
        print(f"ready {where} control={sim.control_port}", flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await sim.close()
    print("stopped", file=sys.stderr)
    return 0
