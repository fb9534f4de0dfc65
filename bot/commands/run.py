"""failover-bot run: the agent, in the foreground (systemd Type=notify)."""

from __future__ import annotations

import argparse
import asyncio

from bot.commands.base import add_config_arg, config_from_args
from bot.logsetup import LOG_CONTEXT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the agent (foreground; systemd Type=notify)")
    add_config_arg(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    LOG_CONTEXT.node = cfg.node.id
    from bot.agent import Agent  # imported here: the other verbs start faster without it

    async def main() -> int:
        return await Agent(cfg).run()

    return asyncio.run(main())
