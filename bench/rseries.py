"""Measure the R-Series driver over a pseudo-terminal against the simulator.

    .venv/bin/python bench/rseries.py [--n 1000] [--losses 20]

Prints a table: round trips of route (verified with STATUS) and of STATUS, and
the time from a dropped link (pty hang-up) to the driver reporting it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

# This file is named like the package: keep its own directory off the import path.
_here = Path(__file__).resolve().parent
sys.path[:] = [x for x in sys.path if Path(x or ".").resolve() != _here]

from rseries.driver import RSeriesLink  # noqa: E402
from rseries.simulator import Simulator  # noqa: E402


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


async def round_trips(n: int, relay_time: float, alternate: bool) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        links: dict[str, str | int] = {"a": str(Path(d) / "a"), "b": str(Path(d) / "b")}
        async with (
            Simulator(links=links, relay_time=relay_time),
            RSeriesLink(str(Path(d) / "a")) as link,
        ):
            await link.status()
            out = []
            for i in range(n):
                host = "AB"[i % 2] if alternate else "A"
                t0 = time.perf_counter()
                await link.route(host)
                out.append(time.perf_counter() - t0)
            return out


async def status_trips(n: int) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        links: dict[str, str | int] = {"a": str(Path(d) / "a"), "b": str(Path(d) / "b")}
        async with Simulator(links=links), RSeriesLink(str(Path(d) / "a")) as link:
            out = []
            for _ in range(n):
                t0 = time.perf_counter()
                await link.status()
                out.append(time.perf_counter() - t0)
            return out


async def loss_times(n: int) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        links: dict[str, str | int] = {"a": str(Path(d) / "a"), "b": str(Path(d) / "b")}
        down = asyncio.Event()
        up = asyncio.Event()
        seen: list[float] = []

        def on_link(is_up: bool, _why: str) -> None:
            if is_up:
                up.set()
            else:
                seen.append(time.perf_counter())
                down.set()

        async with (
            Simulator(links=links, control_port=0) as sim,
            RSeriesLink(links["a"], on_link=on_link, reconnect_max=0.1) as link,  # type: ignore[arg-type]
        ):
            out = []
            for _ in range(n):
                await asyncio.wait_for(up.wait(), 5)
                await link.status()
                up.clear()
                down.clear()
                t0 = time.perf_counter()
                await sim.control({"cmd": "drop", "link": "a"})
                await asyncio.wait_for(down.wait(), 5)
                out.append(seen[-1] - t0)
                await sim.control({"cmd": "restore", "link": "a"})
            return out


def row(name: str, xs: list[float]) -> str:
    ms = [x * 1000 for x in xs]
    return (
        f"{name:<44} {len(ms):>5} {statistics.median(ms):>9.3f} {pct(ms, 0.99):>9.3f} "
        f"{max(ms):>9.3f}"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--losses", type=int, default=20)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the losses are on purpose
    print(f"{'measurement (ms)':<44} {'n':>5} {'median':>9} {'p99':>9} {'max':>9}")
    print(row("route, same host (ROUTE + STATUS)", await round_trips(args.n, 0.02, False)))
    print(row("route, alternating, relay_time 0", await round_trips(args.n, 0.0, True)))
    print(row("route, alternating, relay_time 20ms (BUSY)", await round_trips(200, 0.02, True)))
    print(row("status", await status_trips(args.n)))
    print(row("link loss (pty hang-up) -> driver reports", await loss_times(args.losses)))


if __name__ == "__main__":
    asyncio.run(main())
