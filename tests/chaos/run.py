"""The chaos run: ``make chaos`` (``CHAOS_SECONDS``, ``CHAOS_SEED``).

The lab cluster (two bots under supervisors, real Redis, the simulators, the
floating IP in network namespaces, the DRBD stand-in with the shipped fencing
policies and the bot's handlers) runs while a client writes through the active
node's DRBD ten times a second and the nemesis injects a seeded schedule of
faults, each healed before the next. The independent checker then reports; the
exit status is 1 on any dual primary or lost acknowledged write, on an outage
beyond its bound after a fault healed, on no recovery at the end, on a recorder
that erred or went blind, and on a run that proved nothing (a fault drawn but not
applied, or healed with an error; no acknowledged write).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from bot.lab.cluster import RESOURCE, wait_until
from harness.cluster import Cluster, have_tools
from harness.replication import Writer
from harness.vip import Topology, netns_unavailable
from tests.chaos.checker import ChaosReport, FaultRecord, check_chaos
from tests.chaos.nemesis import Nemesis, schedule
from tests.e2e.writes import read_acks, read_final_data, read_promotions

RECOVERY = 60.0  # after the last fault: how long the cluster has to serve again


def log(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


def run(
    seconds: float,
    seed: int,
    workdir: Path,
    only: list[str] | None = None,
    recovery: float = RECOVERY,
) -> ChaosReport:
    faults = schedule(seed, seconds, only=only)
    log(f"CHAOS_SEED={seed} CHAOS_SECONDS={seconds:g}: {len(faults)} faults scheduled")
    records: list[FaultRecord] = []
    not_applied: list[tuple[str, str]] = []
    stop = threading.Event()
    with Topology() as topo:
        cluster = Cluster(workdir / "cluster", topo, proxied=True, replication=True, gates=True)
        try:
            cluster.start()
            cluster.wait_primary(within=60)
            writer = Writer(cluster, RESOURCE).start()
            nemesis = Nemesis(cluster, RESOURCE)
            t0 = time.monotonic()
            for fault in faults:
                stop.wait(max(0.0, t0 + fault.at - time.monotonic()))
                started = time.monotonic()
                try:
                    node, heal = nemesis.start(fault)
                except Exception as exc:  # a fault that could not be done fails the run
                    log(f"{fault.describe()}: NOT applied ({exc!r})")
                    not_applied.append((fault.describe(), repr(exc)))
                    continue
                note = f" ({nemesis.note})" if nemesis.note else ""
                log(f"+{started - t0:6.1f} s {fault.describe()} -> {node or 'cluster'}{note}")
                stop.wait(fault.hold)
                try:
                    heal()
                except Exception as exc:  # the fault may go on: not the fault drawn
                    log(f"healing {fault.kind} failed: {exc!r}")
                    traceback.print_exc()
                    not_applied.append((fault.describe(), f"its heal failed: {exc!r}"))
                    continue
                records.append(FaultRecord(started, time.monotonic(), fault.kind, node))
            stop.wait(max(0.0, t0 + seconds - time.monotonic()))
            nemesis.join()
            recovered = True
            try:
                wait_until(lambda: cluster.primary() is not None, recovery, "a primary")
            except TimeoutError:
                recovered = False
                log(f"no primary {recovery:g} s after the last fault")
            writer.stop()
            end = time.monotonic()
            obs = cluster.observations()
            log(
                f"writer: {writer.acked} acknowledged, {writer.frozen} waited on frozen I/O, "
                f"{writer.refused} refused, {writer.no_primary} rounds without a DRBD Primary"
            )
        finally:
            cluster.stop()
    return check_chaos(
        seed=seed,
        window=(t0, end),
        obs=obs,
        acks=read_acks(cluster.dir / "acks.jsonl"),
        promotions=read_promotions(cluster.drbd_dir),
        final_data=read_final_data(cluster.drbd_dir, cluster.nodes),
        faults=records,
        recovered=recovered,
        drawn=len(faults),
        not_applied=not_applied,
        client_problems=[f"the writer stopped: {writer.died}"] if writer.died else [],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("CHAOS_SECONDS") or 600)
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--recovery",
        type=float,
        default=RECOVERY,
        help="how long the cluster has to serve again after the last fault",
    )
    parser.add_argument(
        "--kinds",
        default=os.environ.get("CHAOS_KINDS", ""),
        help="comma-separated fault kinds to draw from (default: all)",
    )
    args = parser.parse_args(argv)
    seed = args.seed
    if seed is None:
        env_seed = os.environ.get("CHAOS_SEED", "")
        seed = int(env_seed) if env_seed else random.SystemRandom().randrange(1 << 31)
    reason = have_tools() or netns_unavailable()
    if reason:
        print(f"chaos: cannot run: {reason}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{seed}-"))
    only = [k for k in args.kinds.split(",") if k] or None
    report = run(args.seconds, seed, workdir, only, args.recovery)
    print(report.table(), flush=True)
    if report.ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"work directory kept: {workdir}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
