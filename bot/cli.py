"""The ``failover-bot`` command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from bot import __version__
from bot.commands import modules_for
from bot.commands.base import EXIT_CANNOT_RUN, EXIT_FAILED, CannotRun, VerbFailed
from bot.config import ConfigError
from bot.logsetup import setup_logging


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="failover-bot",
        allow_abbrev=False,
        description="Keeps an Asterisk PBX in service across two servers.",
        epilog="Exit codes: 0 done; 1 it ran and the outcome was a failure; "
        "2 it could not run (usage, configuration, unreachable dependency).",
    )
    parser.add_argument("--version", action="version", version=f"failover-bot {__version__}")
    parser.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="log line format"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules_for(verb):
        importlib.import_module(f"bot.commands.{name}").register(sub)
    return parser


def _verb(argv: list[str]) -> str | None:
    """The first word that is not a global option (or its value)."""
    takes_value = {"--log-format", "--log-level"}
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    parser = build_parser(_verb(args_list))
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_CANNOT_RUN
    setup_logging(args.log_format, args.log_level)
    try:
        return int(args.handler(args))
    except VerbFailed as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except CannotRun as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except ConfigError as exc:  # a secret read at its first use (see bot.config.Secret)
        print("cannot run: configuration invalid:\n  " + "\n  ".join(exc.lines()), file=sys.stderr)
        return EXIT_CANNOT_RUN
    except KeyboardInterrupt:
        return 130
    except Exception:  # a bug: say so, and keep the exit-code convention
        logging.getLogger("failover-bot").exception("internal error")
        return EXIT_CANNOT_RUN
