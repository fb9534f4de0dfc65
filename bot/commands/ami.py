"""``failover-bot ami watch`` and ``failover-bot test-call``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from ami.client import AmiClient, AmiState
from ami.errors import AmiError
from ami.events import AmiEvent, format_event
from ami.testcall import run_test_call
from bot.commands.base import (
    EXIT_OK,
    CannotRun,
    VerbFailed,
    add_config_arg,
    config_from_args,
    run_async,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ami", help="Asterisk manager interface tools")
    amisub = p.add_subparsers(dest="ami_command", metavar="COMMAND")
    w = amisub.add_parser("watch", help="print AMI events as they arrive, one per line")
    add_config_arg(w)
    w.add_argument("--json", action="store_true", help="one JSON object per event")
    w.add_argument("--count", type=int, default=0, help="stop after N events (0: never)")
    w.set_defaults(handler=run_async(_watch))

    t = sub.add_parser("test-call", help="one AMI-originated test call against the local Asterisk")
    add_config_arg(t)
    t.add_argument("--json", action="store_true", help="print one JSON result object")
    t.set_defaults(handler=run_async(_test_call))


AMI_SECRETS = frozenset({"ami.secret_file"})


def _client(args: argparse.Namespace) -> AmiClient:
    return AmiClient.from_config(config_from_args(args, secrets=AMI_SECRETS).ami)


async def _connected(client: AmiClient) -> None:
    await client.start()
    try:
        await client.wait_connected(client.connect_timeout + 0.5)
    except AmiError as exc:
        await client.close()
        raise CannotRun(f"Asterisk unreachable: {exc}") from None


async def _test_call(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, secrets=AMI_SECRETS)
    if cfg.test_call is None:
        raise CannotRun("configuration has no [test_call] section")
    client = AmiClient.from_config(cfg.ami)
    await _connected(client)
    try:
        result = await run_test_call(client, cfg.test_call)
    except AmiError as exc:
        raise CannotRun(f"Asterisk unreachable: {exc}") from None
    finally:
        await client.close()
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        setup = f"{result.setup_seconds:.3f} s" if result.setup_seconds is not None else "-"
        print(f"{result.outcome} (setup {setup}, {result.channel}): {result.reason}")
    if not result.answered:
        raise VerbFailed(f"test call {result.outcome}")
    return EXIT_OK


async def _watch(args: argparse.Namespace) -> int:
    client = _client(args)
    queue: asyncio.Queue[AmiEvent | str] = asyncio.Queue()
    client.subscribe(queue.put_nowait)
    client.on_state(lambda state, _t: queue.put_nowait(f"# AMI {state.value}"))
    await _connected(client)
    seen = 0
    try:
        while True:
            item = await queue.get()
            if isinstance(item, str):
                if not args.json:
                    print(item, flush=True)
                if item.endswith(AmiState.DISCONNECTED.value) and client.last_error:
                    print(f"# {client.last_error}", file=sys.stderr, flush=True)
                continue
            if args.json:
                print(json.dumps({"event": item.name, **item.fields}), flush=True)
            else:
                print(format_event(item), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                return EXIT_OK
    finally:
        await client.close()
