"""failover-bot demo: a whole two-node cluster on this machine, with a failover."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="a whole two-node cluster on this machine: kills the primary, shows the failover",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="exit 0 after the failover's timeline (its last line states the failover time)",
    )
    p.add_argument(
        "--asterisk",
        choices=("real", "sim"),
        default=None,
        help="each node's Asterisk: a real one (default when `make asterisk` found or built "
        "one) or the AMI simulator",
    )
    p.set_defaults(handler=demo)


def demo(args: argparse.Namespace) -> int:
    from bot.lab.demo import Demo

    return Demo(once=args.once, asterisk=args.asterisk).run()
