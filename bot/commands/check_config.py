"""failover-bot check-config [--host]."""

from __future__ import annotations

import argparse
import sys

from bot.commands.base import EXIT_CANNOT_RUN, EXIT_FAILED, EXIT_OK, add_config_arg
from bot.config import ConfigError, load_config, summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate the configuration; every error listed")
    add_config_arg(p)
    p.add_argument(
        "--host",
        action="store_true",
        help="also check this host: secret file modes, interface, serial port, state "
        "directory, mount point, DRBD resource, Asterisk unit, API address, Redis, peer, clock",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="with --host: skip the checks that need the network (Redis, the peer's API)",
    )
    p.set_defaults(handler=check_config)


def check_config(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for line in exc.lines():
            print(line, file=sys.stderr)
        return EXIT_CANNOT_RUN
    print(summary(cfg))
    if not args.host:
        return EXIT_OK
    from bot.hostcheck import host_findings

    findings = host_findings(cfg, network=not args.offline)
    for finding in findings:
        print(finding.line())
    problems = [f for f in findings if not f.ok]
    print(f"host: {len(findings) - len(problems)} OK, {len(problems)} problem(s)")
    return EXIT_FAILED if problems else EXIT_OK
