"""The lab cluster (bot.lab.cluster) with the independent recorders and the checker.

Recorders that do not depend on the bots watch what the outside world sees:
the R-Series log, Asterisk pids and lifetimes, who holds the floating IP, the
fake DRBD's roles, and the lease key on Redis. Optionally each bot reaches Redis
and its peer through a TCP proxy that a test can cut.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bot.config import ConfigError, load_config
from bot.lab.cluster import RESOURCE
from bot.lab.cluster import Cluster as LabCluster
from bot.lab.cluster import Node as Node
from bot.lab.netns import Topology
from harness import recorders, replication, tools
from harness.checker import (
    Allowance,
    Interval,
    Observations,
    RecorderHealth,
    Verdict,
    check,
    merge,
)
from harness.fakes import FAKES_BIN, write_gate
from harness.proxy import ProxyProcess
from harness.vip import VipSampler

SAMPLER_GAP_FLOOR = 0.2  # seconds: see Cluster.recorder_tolerance

__all__ = ["Cluster", "Node", "have_tools", "read_role"]

# Without a node config to read it from: the product's default fence budget.
DEFAULT_FENCE_BUDGET = 0.5


def read_role(node: Node) -> str:
    """The role ``node``'s API reports; an API that does not answer is an error, never a
    role: a "never primary" check on a dead API proves nothing."""
    status = node.status()
    if status is None:
        raise AssertionError(f"{node.id}: /status did not answer: its role is unknown")
    for entry in status.get("nodes", []):
        if entry.get("id") == node.id:
            return str(entry.get("role"))
    raise AssertionError(f"{node.id}: /status shows no entry for itself: {status!r}")


class Cluster(LabCluster):
    def __init__(
        self,
        workdir: Path,
        topology: Topology | None,
        *,
        proxied: bool = False,
        replication: bool = False,
        gates: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(workdir, topology, drbd_fake=FAKES_BIN.parent / "fake.py", **kw)
        # With ``replication``, the DRBD stand-in models the link, fencing with the
        # shipped policies and the bot's handlers, and the application's writes.
        self.replication = replication
        # With ``proxied``, each bot reaches Redis and its peer through a TCP proxy that
        # a test can cut: a partition that is real at the socket level.
        self.proxied = proxied
        # With ``gates``, each node's `ip` and Asterisk kill run through its faults.json
        # (a broken host's commands); off by default: each call costs a Python start.
        self.gates = gates
        self.proxies: dict[str, dict[str, ProxyProcess]] = {}
        self.vip_sampler: VipSampler | None = None
        self.pid_sampler: recorders.PidSampler | None = None
        self.drbd_sampler: _DrbdSampler | None = None
        self.lease_sampler: recorders.RedisKeySampler | None = None
        self.boot_recorders: dict[str, recorders.AmiBootRecorder] = {}

    def before_bots(self) -> None:
        if self.replication:
            replication.enable(self, RESOURCE)
        if self.proxied:
            for node in self.nodes.values():
                self.proxies[node.id] = {
                    "redis": ProxyProcess(self.redis.port).start(),
                    "peer": ProxyProcess(self.peer_of(node).api_port).start(),
                }
                for proxy in self.proxies[node.id].values():
                    if proxy.proc is not None:
                        self.renice(proxy.proc.pid)
        if self.topology is not None:
            self.vip_sampler = VipSampler(self.topology).start()
        if self.asterisk == "real":
            # A real Asterisk logs nothing for the checker: watch its AMI from outside.
            secret = (self.dir / "ami.secret").read_text().strip()
            for node in self.nodes.values():
                self.boot_recorders[node.id] = recorders.AmiBootRecorder(
                    node.ami_port, "failover", secret, node.pidfile, node.asterisk_record
                ).start()
        pidfiles = {n.id: n.pidfile for n in self.nodes.values()}
        self.pid_sampler = recorders.PidSampler(pidfiles).start()
        self.drbd_sampler = _DrbdSampler(self.drbd_dir / "drbd.json").start()
        self.lease_sampler = recorders.RedisKeySampler(
            self.redis.url, "failover:{lab}:leader", _lease_holder
        ).start()

    def gate_bin(self, node: Node) -> Path:
        """This node's own commands that faults.json can break (first on its PATH)."""
        return node.dir / "gate"

    def node_config(self, node: Node) -> dict[str, Any]:
        base = super().node_config(node)
        if self.gates:  # the Asterisk kill through faults.json ("asterisk kill")
            kill = base["asterisk"]["kill"]
            gate = write_gate(self.gate_bin(node) / "asterisk-kill", "asterisk kill", kill)
            base["asterisk"]["kill"] = [str(gate)]
        if node.id in self.proxies:
            redis_proxy = self.proxies[node.id]["redis"]
            peer_proxy = self.proxies[node.id]["peer"]
            base["redis"].update(url=f"redis://127.0.0.1:{redis_proxy.port}/0")
            peer = self.peer_of(node).id
            base["cluster"].update(
                peers=[{"id": peer, "api": f"http://127.0.0.1:{peer_proxy.port}"}]
            )
        return base

    def env(self, node: Node) -> dict[str, str]:
        env = super().env(node)
        gate = self.gate_bin(node) / "ip"
        if self.gates and not gate.exists():  # `ip` through faults.json ("ip addr del")
            real_ip = shutil.which("ip", path=env.get("PATH"))
            if real_ip is not None:
                write_gate(gate, "ip", [real_ip])
        if self.gates and gate.exists():
            env["PATH"] = os.pathsep.join([str(self.gate_bin(node)), env["PATH"]])
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        return env

    # ------------------------------------------------------------------ partitions

    def cut(self, node_id: str, *links: str, existing: str = "reset") -> None:
        """Cut ``node_id`` off from "redis" and/or "peer": new connections hang; old ones are
        reset, or with ``existing="freeze"`` stay open with nothing answered (a request in
        flight hangs, as over a link whose latency went to infinity)."""
        for link in links:
            self.proxies[node_id][link].cut("blackhole", existing)

    def heal(self, node_id: str, *links: str) -> None:
        for link in links:
            self.proxies[node_id][link].heal()

    # ------------------------------------------------------------------ replication

    def cut_replication(self) -> int:
        """The replication link breaks (returns when the Primary's handler has returned)."""
        return replication.fake_drbd(self, "a", "link-down", RESOURCE)

    def heal_replication(self) -> int:
        """The link comes back: resync from the newer side, or StandAlone on a split brain."""
        return replication.fake_drbd(self, "a", "link-up", RESOURCE)

    def kill_host(self, node_id: str) -> None:
        super().kill_host(node_id)
        if self.replication:
            replication.fake_drbd(self, node_id, "host-down", RESOURCE)

    def revive_host(self, node_id: str) -> None:
        if not self.replication:
            super().revive_host(node_id)
            return
        if self.topology is not None:
            self.topology.exec(node_id, ["ip", "link", "set", "dev", "eth0", "up"], check=False)
            addr = f"{self.topology.address(node_id)}/24"
            self.topology.exec(node_id, ["ip", "addr", "add", addr, "dev", "eth0"], check=False)
        replication.fake_drbd(self, node_id, "host-up", RESOURCE)
        self.heal_replication()
        self.start_bot(node_id)

    # ------------------------------------------------------------------ verdict

    def samplers(self) -> list[recorders.PollingSampler]:
        found = (self.vip_sampler, self.pid_sampler, self.drbd_sampler, self.lease_sampler)
        return [s for s in found if s is not None]

    def recorder_tolerance(self) -> float:
        """The longest gap a sampler may have: the configured fence budget, the time in
        which a fence must have stopped the old primary (a sampler blind for longer could
        miss an overlap that a fence overrunning its budget leaves), but not below what
        the samplers, threads of the test process, can promise: the whole process was
        seen to stall 101-117 ms at once while the fast profile's nodes took over. An
        overlap shorter than that is the model world's to find (it sees every instant)."""
        budgets = []
        for node in self.nodes.values():
            try:
                budgets.append(load_config(node.config_path).cluster.fence_budget)
            except (OSError, ValueError, ConfigError):
                continue
        return max(min(budgets, default=DEFAULT_FENCE_BUDGET), SAMPLER_GAP_FLOOR)

    def recorder_health(self, end: float | None = None) -> list[RecorderHealth]:
        tolerance = self.recorder_tolerance()
        return [s.health(tolerance, end) for s in self.samplers()]

    def observations(self) -> Observations:
        end = time.monotonic()
        deaths = self.pid_sampler.deaths if self.pid_sampler is not None else {}
        running: list[Interval] = []
        booted: list[Interval] = []
        for node in self.nodes.values():
            source: Any = node.asterisk_record if node.asterisk_record.exists() else []
            hist = recorders.asterisk_lifetimes(source, node.id, deaths=deaths, end=end)
            running += hist.running
            booted += hist.booted
        if self.pid_sampler is not None:
            running += self.pid_sampler.intervals(end)
        routes = (
            recorders.rseries_routes(self.rseries_log, hosts={"A": "a", "B": "b"}, end=end)
            if self.rseries_log.exists()
            else []
        )
        return Observations(
            vip=self.vip_sampler.intervals(end) if self.vip_sampler else [],
            asterisk_running=merge(running),
            asterisk_booted=merge(booted),
            drbd_primary=self.drbd_sampler.intervals(end) if self.drbd_sampler else [],
            routes=routes,
            lease=self.lease_sampler.intervals(end) if self.lease_sampler else None,
            recorders=self.recorder_health(end),
            sample_gaps={
                name: sampler.gap(end)
                for name, sampler in (
                    ("vip", self.vip_sampler),
                    ("asterisk_running", self.pid_sampler),
                )
                if sampler is not None
            },
        )

    def verdict(self, allowance: Allowance) -> Verdict:
        return check(self.observations(), allowance)

    def assert_safe(self, allowance: Allowance) -> Observations:
        obs = self.observations()
        verdict = check(obs, allowance)
        assert verdict.ok, verdict.report() + "\n" + obs.timeline(self.t0) + self.logs_tail()
        return obs

    def stop(self, hand_over: bool = True) -> None:
        try:
            super().stop(hand_over)
        finally:
            for proxies in self.proxies.values():
                for proxy in proxies.values():
                    proxy.stop()
            samplers = (self.vip_sampler, self.pid_sampler, self.drbd_sampler, self.lease_sampler)
            for sampler in samplers:
                if sampler is not None:
                    sampler.stop()
            for recorder in self.boot_recorders.values():
                recorder.stop()


class _DrbdSampler(recorders.PollingSampler):
    """Which nodes the shared fake DRBD state shows as Primary."""

    def __init__(self, path: Path, period: float = 0.01) -> None:
        self.path = path
        super().__init__(self._probe, period, name="drbd-sampler")

    def _probe(self) -> set[str]:
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return self.holders()
        nodes = state["resources"][RESOURCE]["nodes"]
        return {n for n, v in nodes.items() if v.get("role") == "Primary"}


def _lease_holder(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if value.get("next"):
        return None
    holder = value.get("holder")
    return holder if isinstance(holder, str) else None


def have_tools() -> str | None:
    if reason := tools.missing("redis-server", "ip"):
        return reason
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    return None
