"""AMI event throughput: the client's typed path against raw panoramisk, same stream.

Run: .venv/bin/python bench/ami.py [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script, bench/ would shadow the ami package: import from the repository.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from panoramisk.ami_protocol import AMIProtocol  # noqa: E402
from panoramisk.manager import Manager  # noqa: E402

from ami.client import AmiClient, _Manager, _Protocol  # noqa: E402
from ami.codec import encode  # noqa: E402
from ami.events import AmiEvent  # noqa: E402


class _NullTransport(asyncio.Transport):
    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return False


def make_stream(n: int) -> list[bytes]:
    """A mix like a busy PBX: channel events, span alarms, unknown events; 64 KiB reads."""
    frames = []
    for i in range(n):
        k = i % 4
        if k == 0:
            f = [
                ("Event", "Newchannel"),
                ("Privilege", "call,all"),
                ("Channel", f"PJSIP/{i}"),
                ("ChannelState", "4"),
                ("ChannelStateDesc", "Ring"),
                ("CallerIDNum", "100"),
                ("CallerIDName", "<unknown>"),
                ("ConnectedLineNum", "<unknown>"),
                ("ConnectedLineName", "<unknown>"),
                ("Language", "en"),
                ("AccountCode", ""),
                ("Context", "from-internal"),
                ("Exten", "200"),
                ("Priority", "1"),
                ("Uniqueid", f"1795631144.{i}"),
                ("Linkedid", f"1795631144.{i}"),
            ]
        elif k == 1:
            f = [
                ("Event", "Hangup"),
                ("Privilege", "call,all"),
                ("Channel", f"PJSIP/{i}"),
                ("Uniqueid", f"1795631144.{i}"),
                ("Cause", "16"),
                ("Cause-txt", "Normal Clearing"),
            ]
        elif k == 2:
            f = [
                ("Event", "SpanAlarm"),
                ("Privilege", "system,all"),
                ("Span", "1"),
                ("Alarm", "Red Alarm"),
            ]
        else:
            f = [
                ("Event", "VarSet"),
                ("Privilege", "dialplan,all"),
                ("Channel", f"PJSIP/{i}"),
                ("Variable", "X"),
                ("Value", str(i)),
                ("Uniqueid", f"1795631144.{i}"),
            ]
        frames.append(encode(f))
    blob = b"Asterisk Call Manager/11.0.0\r\n" + b"".join(frames)
    return [blob[i : i + 65536] for i in range(0, len(blob), 65536)]


def bench_ours(stream: list[bytes], n: int) -> float:
    async def run() -> float:
        client = AmiClient("127.0.0.1", 1, "u", "s")
        client._manager = _Manager(client, loop=asyncio.get_running_loop())
        count = 0

        def on(e: AmiEvent) -> None:
            nonlocal count
            count += 1

        client.subscribe(on)
        proto = _Protocol(client)
        proto.connection_made(_NullTransport())
        t0 = time.perf_counter()
        for chunk in stream:
            proto.data_received(chunk)
        dt = time.perf_counter() - t0
        assert count == n, count
        return dt

    return asyncio.run(run())


def bench_raw(stream: list[bytes], n: int) -> float:
    async def run() -> float:
        manager = Manager(loop=asyncio.get_running_loop())
        count = 0

        def on(_m: object, _e: object) -> None:
            nonlocal count
            count += 1

        manager.register_event("*", on)
        proto = AMIProtocol()
        proto.connection_made(_NullTransport())
        proto.factory = manager
        t0 = time.perf_counter()
        for chunk in stream:
            proto.data_received(chunk)
        dt = time.perf_counter() - t0
        assert count == n, count
        return dt

    return asyncio.run(run())


def best(fn: Callable[[list[bytes], int], float], stream: list[bytes], n: int, runs: int) -> float:
    return min(fn(stream, n) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    stream = make_stream(args.events)
    size = sum(map(len, stream))
    ours = best(bench_ours, stream, args.events, args.runs)
    raw = best(bench_raw, stream, args.events, args.runs)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.events} events, {size / 1e6:.1f} MB, best of {args.runs}")
    print(f"{'path':<28}{'events/s':>12}{'seconds':>10}")
    print(f"{'client typed path':<28}{args.events / ours:>12,.0f}{ours:>10.3f}")
    print(f"{'raw panoramisk':<28}{args.events / raw:>12,.0f}{raw:>10.3f}")
    print(f"{'ratio typed/raw':<28}{raw / ours:>12.2f}")
    print(f"{'peak RSS (MiB)':<28}{rss_mib:>12.1f}")


if __name__ == "__main__":
    main()
