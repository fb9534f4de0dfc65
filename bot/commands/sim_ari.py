"""``failover-bot simulate ari``: the ARI simulator as a process.

Also ``python -m bot.commands.sim_ari --port 8088 --password-file F``; SIGTERM stops
it like Asterisk stopping.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from ami.ari_simulator import AriSimulator
from bot.commands.base import CannotRun


def register_simulate(simsub: argparse._SubParsersAction) -> None:
    p = simsub.add_parser("ari", help="an ARI server answering like Asterisk 22's")
    _add_arguments(p)
    p.set_defaults(handler=_run)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8088, help="HTTP port (default 8088)")
    p.add_argument("--username", default="failover", help="ARI user")
    p.add_argument("--password-file", metavar="F", help="file with the ARI password")


def _run(args: argparse.Namespace) -> int:
    password = ""
    if args.password_file:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CannotRun(
                f"--password-file {args.password_file}: {exc.strerror or exc}"
            ) from None
    return asyncio.run(_serve(args.host, args.port, args.username, password))


async def _serve(host: str, port: int, username: str, password: str) -> int:
    sim = AriSimulator(host, port, username, password)
    try:
        await sim.start()
    except OSError as exc:
        raise CannotRun(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    print(f"ARI simulator listening on {sim.url}", flush=True)
    try:
        await stopping.wait()
    finally:
        await sim.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.commands.sim_ari", allow_abbrev=False)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except CannotRun as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
