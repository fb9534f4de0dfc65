"""``failover-bot demo``: a whole cluster on this machine, a failover you can watch.

Starts Redis, the R-Series simulator and two bots (each with its Asterisk: a
real one when ``make asterisk`` found or built one, else the simulator), waits
until one is primary and the other a ready standby, then kills the primary's
"host" (bot, supervisor, Asterisk, network) and prints the failover's timeline.
With ``--once`` it exits after the timeline; otherwise it keeps showing the
cluster until Ctrl-C. Everything it started is removed on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from bot.lab.asterisk import HOW_TO_GET, find_binary
from bot.lab.cluster import Cluster
from bot.lab.netns import Topology, netns_unavailable

SETTLE_SECONDS = 3.0  # the "few seconds" the healthy cluster is shown before the fault
# Each of these ends the demo, and everything it started, cleanly: Ctrl-C, `kill`, the
# terminal closed.
ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class OutputClosed(Exception):
    """Whoever read the demo's output went away (`| head`, a `tee` ended by Ctrl-C)."""


class Demo:
    def __init__(
        self, out: TextIO = sys.stdout, *, once: bool = False, asterisk: str | None = None
    ) -> None:
        self.out = out
        self.once = once
        self.asterisk = asterisk
        self.last_line = ""
        self.out_closed = False

    def say(self, text: str = "") -> None:
        """Print a line; the first write to a closed output ends the demo (OutputClosed),
        and from then on nothing is written, so the clean-up runs to its end."""
        if self.out_closed:
            return
        try:
            print(text, file=self.out, flush=True)
        except (BrokenPipeError, ValueError):  # ValueError: the stream itself was closed
            self.out_closed = True
            _silence(self.out)
            raise OutputClosed from None

    def run(self) -> int:
        missing = [t for t in ("redis-server",) if shutil.which(t) is None]
        if missing:
            self.say(f"demo: {', '.join(missing)} not installed (`make demo` installs it)")
            return 2
        kind = self.asterisk or ("real" if find_binary() else "sim")
        if kind == "real" and find_binary() is None:
            self.say(f"demo: --asterisk real, but {HOW_TO_GET}")
            return 2
        if self.asterisk is None and kind == "sim":
            self.say(f"(Asterisk simulator in this demo: {HOW_TO_GET})")
        workdir = Path(tempfile.mkdtemp(prefix="failover-demo-"))
        try:
            with _endings_as_interrupt(), self._topology() as topology:
                cluster = Cluster(workdir / "cluster", topology, asterisk=kind)
                try:
                    return self._play(cluster)
                finally:
                    # Nothing may cut the clean-up short: not a second Ctrl-C, not the
                    # output going away (say() is quiet then).
                    with _endings_ignored():
                        with contextlib.suppress(OutputClosed):
                            self.say("\nstopping the cluster and cleaning up ...")
                        cluster.stop()
        except (KeyboardInterrupt, OutputClosed):
            return 0
        finally:
            with _endings_ignored():
                shutil.rmtree(workdir, ignore_errors=True)
                with contextlib.suppress(OutputClosed):
                    self.say("cleaned up.")
                    if self.last_line:
                        self.say(self.last_line)

    @contextlib.contextmanager
    def _topology(self) -> Iterator[Topology | None]:
        reason = netns_unavailable()
        if reason:
            self.say(f"(no floating IP in this demo: {reason})")
            yield None
            return
        with Topology() as topology:
            yield topology

    def _play(self, c: Cluster) -> int:
        what = "a real Asterisk" if c.asterisk == "real" else "the Asterisk simulator"
        self.say(
            f"starting Redis, the R-Series simulator and two bots (a and b), each with {what} ..."
        )
        c.start()
        for node in c.nodes.values():
            self.say(f"  node {node.id}: status page {node.api}/   (API, metrics at /metrics)")
        if c.topology is not None:
            names = ", ".join(c.topology.ns(m) for m in ("switch", *c.topology.members))
            self.say(f"  floating IP {c.topology.vip} inside network namespaces {names}")
        primary = c.wait_primary(within=60)
        standby = "b" if primary == "a" else "a"
        c.wait_role(standby, "standby", within=30)
        self._until(lambda: _ready(c, standby), 30)
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            self._show(c)
            time.sleep(1.0)
        self.say(f"\n*** killing the primary's host: node {primary} (bot, Asterisk, network) ***\n")
        fault_wall = time.time()
        c.kill_host(primary)
        self._until(lambda: c.primary() == standby, 60)
        c.wait_serving(standby, within=30)
        timeline = self._timeline(c, standby, fault_wall)
        pid = c.nodes[standby].asterisk_pid()
        kind = "a real Asterisk" if c.asterisk == "real" else "the Asterisk simulator"
        self.say(f"node {standby} now runs {kind}, pid {pid if pid else '-'}")
        if self.once:
            return 0 if timeline is not None else 1
        self.say("\nthe cluster keeps running; Ctrl-C ends the demo and cleans up.")
        while True:
            self._show(c)
            time.sleep(1.0)

    def _until(self, predicate: Any, within: float) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not get there in time")
            time.sleep(0.1)

    def _show(self, c: Cluster) -> None:
        parts = []
        status: dict[str, Any] | None = None
        for node in c.nodes.values():
            status = node.status() or status
            role = node.role() or "down"
            vip = " +VIP" if c.topology is not None and c.holds_vip(node.id) else ""
            parts.append(f"{node.id}: {role:9}{vip}")
        lease = ""
        if status is not None:
            left = status.get("lease_remaining_seconds")
            left_text = f"{left:.1f} s left" if isinstance(left, (int, float)) else "-"
            lease = f"lease {status.get('holder') or '-'} epoch {status.get('epoch')} {left_text}"
            lease += f" | spans on {status.get('rseries_active') or '-'}"
        self.say(f"{time.strftime('%H:%M:%S')}  " + "  ".join(parts) + f"  | {lease}")

    def _timeline(self, c: Cluster, node: str, fault_wall: float) -> float | None:
        status = c.nodes[node].status() or {}
        events = [e for e in status.get("events", []) if e.get("time", 0) >= fault_wall]
        self.say(f"failover timeline (t = 0 when node {'a' if node == 'b' else 'b'} died):")
        self.say(f"  {0.0:7.3f} s  primary host killed")
        done: float | None = None
        for event in events:
            t = float(event["time"]) - fault_wall
            kind = event.get("kind")
            if kind == "lease":
                self.say(f"  {t:7.3f} s  {event.get('message')}")
            elif kind == "step":
                self.say(f"  {t:7.3f} s  step {event.get('message')}")
                if event.get("step") == "test_call" and event.get("ok"):
                    done = t
            elif kind in ("failover_completed", "failover_degraded", "failover_failed"):
                self.say(f"  {t:7.3f} s  {event.get('message')}")
        if done is None:
            self.say("failover did not complete with an answered test call")
            return None
        self.last_line = (
            f"failover time: {done:.2f} s from the primary's death "
            f"to an answered test call on node {node}"
        )
        self.say(self.last_line)
        return done


def _ready(c: Cluster, node: str) -> bool:
    status = c.nodes[node].status() or {}
    return any(n.get("id") == node and n.get("ready") for n in status.get("nodes", []))


@contextlib.contextmanager
def _endings_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = {s: signal.signal(s, handler) for s in ENDING_SIGNALS}
    try:
        yield
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)


@contextlib.contextmanager
def _endings_ignored() -> Iterator[None]:
    old = {s: signal.signal(s, signal.SIG_IGN) for s in ENDING_SIGNALS}
    try:
        yield
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)


def _silence(out: TextIO) -> None:
    # Point the closed output at /dev/null, so the interpreter's own flush at exit does
    # not fail on it either.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
