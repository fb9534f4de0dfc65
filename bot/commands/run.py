"""failover-bot run: the agent, in the foreground (systemd Type=notify)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
from pathlib import Path

from bot.coldstart import recorded_epochs, summary
from bot.commands.base import add_config_arg, config_from_args
from bot.config import Config
from bot.logsetup import LOG_CONTEXT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the agent (foreground; systemd Type=notify)")
    add_config_arg(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    LOG_CONTEXT.node = cfg.node.id
    logging.getLogger("failover-bot").info("%s", data_at_start(cfg))
    from bot.agent import Agent  # imported here: the other verbs start faster without it

    async def main() -> int:
        return await Agent(cfg).run()

    return asyncio.run(main())


DSTATE_TIMEOUT = 5.0


def data_at_start(cfg: Config) -> str:
    """This node's data as the start-up log says it (before the agent's loop runs)."""
    highest, held = recorded_epochs(Path(cfg.node.state_dir))
    dstates: dict[str, str] = {}
    for resource in cfg.drbd.resources if cfg.drbd else []:
        argv = [cfg.drbd.drbdadm, "dstate", resource] if cfg.drbd else []
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=DSTATE_TIMEOUT)
            dstates[resource] = done.stdout.strip() if done.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            dstates[resource] = ""
    return summary(highest, held, dstates)
