"""failover-bot check-config."""

from __future__ import annotations

import argparse
import sys

from bot.commands.base import EXIT_CANNOT_RUN, EXIT_OK, add_config_arg
from bot.config import ConfigError, load_config, summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate the configuration; every error listed")
    add_config_arg(p)
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
    return EXIT_OK
