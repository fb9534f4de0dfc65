"""Shared helpers for CLI verbs: exit codes and configuration loading."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from bot.config import ALL_SECRETS, DEFAULT_CONFIG_PATH, Config, ConfigError, load_config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANNOT_RUN = 2


class VerbFailed(Exception):
    """The verb ran and its outcome was a failure (exit 1)."""


class CannotRun(Exception):
    """The verb could not run: usage, configuration, unreachable dependency (exit 2)."""


Handler = Callable[[argparse.Namespace], int]


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG_PATH,
        metavar="FILE",
        help=f"node configuration (default {DEFAULT_CONFIG_PATH})",
    )


def config_from_args(
    args: argparse.Namespace, *, secrets: frozenset[str] | None = ALL_SECRETS
) -> Config:
    """The verb's configuration; ``secrets``: the secret keys it needs read now (others
    are read only if used, so a verb never fails on a secret it does not need)."""
    try:
        return load_config(args.config, secrets=secrets)
    except ConfigError as exc:
        raise CannotRun("configuration invalid:\n  " + "\n  ".join(exc.lines())) from None


def run_async(coro_fn: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Handler:
    """Wrap an async handler for argparse."""

    def handler(args: argparse.Namespace) -> int:
        return asyncio.run(coro_fn(args))

    return handler
