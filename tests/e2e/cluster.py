"""A whole two-node cluster on this machine, for the end-to-end tests, the demo and the bench.

Real parts: redis-server, the R-Series simulator on two pseudo-terminals, two
``failover-bot run`` processes each under the systemd-like supervisor, the AMI
simulator as each node's "Asterisk" (started and stopped by the bots' own
``asterisk.*`` commands), the floating IP in network namespaces. DRBD is the
fake ``drbdadm`` (one shared state file for both nodes). The node
configurations are derived from ``deploy/examples/lab-a.toml`` / ``lab-b.toml``.

Recorders that do not depend on the bots watch what the outside world sees:
the R-Series log, Asterisk pids and lifetimes, who holds the floating IP, the
fake DRBD's roles, and (for the checker) the lease key on Redis.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tests.e2e import recorders
from tests.e2e.checker import Allowance, Interval, Observations, Verdict, check, merge
from tests.e2e.netns import Topology, VipSampler
from tests.e2e.proxy import ProxyProcess
from tests.fakes import FAKES_BIN
from tests.helpers import RedisServer, free_port, wait_for_sync

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
NODES = ("a", "b")
HOSTS = {"a": "A", "b": "B"}
RESOURCE = "pbx"


def toml_dumps(data: dict[str, Any]) -> str:
    """A small TOML writer for the shapes node configurations use."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(i) for i in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(i)}" for k, i in v.items()) + " }"
        raise TypeError(type(v))

    out = []
    for section, table in data.items():
        out.append(f"[{section}]")
        out += [f"{k} = {value(v)}" for k, v in table.items()]
        out.append("")
    return "\n".join(out)


class Node:
    def __init__(self, cluster: Cluster, node_id: str) -> None:
        self.cluster = cluster
        self.id = node_id
        self.dir = cluster.dir / node_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "node.toml"
        self.api_port = free_port()
        self.ami_port = free_port()
        self.ami_control = free_port()
        self.pidfile = self.dir / "asterisk.pid"
        self.asterisk_record = self.dir / "asterisk.jsonl"
        self.sup_log = self.dir / "supervisor.jsonl"
        self.bot_log = self.dir / "bot.log"
        self.supervisor: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def get(self, path: str, timeout: float = 1.0) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.api + path, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            return exc.code, json.loads(body) if body.startswith(b"{") else body.decode()
        except (OSError, ValueError):
            return 0, None

    def post(self, path: str, body: dict[str, Any]) -> int:
        req = urllib.request.Request(
            self.api + path,
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {self.cluster.token}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def role(self) -> str | None:
        status, body = self.get("/status")
        if status != 200 or not isinstance(body, dict):
            return None
        for node in body.get("nodes", []):
            if node.get("id") == self.id:
                return str(node.get("role"))
        return None

    def bot_pid(self) -> int | None:
        for record in reversed(recorders.read_jsonl(self.sup_log) if self.sup_log.exists() else []):
            if record.get("event") in ("started", "start", "spawned") and "pid" in record:
                return int(record["pid"])
        return None

    def asterisk_pid(self) -> int | None:
        return recorders.read_pidfile(self.pidfile)

    def ami_control_cmd(self, cmd: dict[str, Any]) -> dict[str, Any]:
        import asyncio

        from ami.simulator import control

        return asyncio.run(control(self.ami_control, cmd))


class Cluster:
    def __init__(
        self,
        workdir: Path,
        topology: Topology | None,
        *,
        lease_ttl: str = "3s",
        renew_interval: str = "1s",
        boot_delay: float = 0.5,
        test_call_interval: str = "1s",
        spans_grace: str = "2s",
        watchdog_sec: float = 1.5,
        proxied: bool = False,
        extra: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.topology = topology
        self.lease_ttl = lease_ttl
        self.renew_interval = renew_interval
        self.boot_delay = boot_delay
        self.test_call_interval = test_call_interval
        self.spans_grace = spans_grace
        self.watchdog_sec = watchdog_sec
        self.extra = extra or {}
        # With ``proxied``, each bot reaches Redis and its peer through a TCP proxy that a
        # test can cut: a partition that is real at the socket level.
        self.proxied = proxied
        self.proxies: dict[str, dict[str, ProxyProcess]] = {}
        self.redis = RedisServer(self.dir / "redis")
        self.rseries_control = free_port()
        self.rseries_log = self.dir / "rseries.jsonl"
        self.rseries: subprocess.Popen[bytes] | None = None
        self.drbd_dir = self.dir / "drbd"
        self.bin = self.dir / "bin"
        self.token = "e2e-token-" + os.urandom(4).hex()
        self.nodes = {n: Node(self, n) for n in NODES}
        self.vip_sampler: VipSampler | None = None
        self.pid_sampler: recorders.PidSampler | None = None
        self.drbd_sampler: _DrbdSampler | None = None
        self.lease_sampler: recorders.RedisKeySampler | None = None
        self.t0 = time.monotonic()

    # ------------------------------------------------------------------ set-up

    def _secrets(self) -> None:
        (self.dir / "cluster.secret").write_text(os.urandom(16).hex() + "\n")
        (self.dir / "ami.secret").write_text("ami-" + os.urandom(8).hex() + "\n")
        (self.dir / "api.token").write_text(self.token + "\n")
        for path in ("cluster.secret", "ami.secret", "api.token"):
            os.chmod(self.dir / path, 0o600)

    def _fake_bin(self) -> None:
        # Only the commands that cannot run here; `ip` and `arping` are the real ones.
        self.bin.mkdir(exist_ok=True)
        for name in ("drbdadm", "drbdsetup", "mount", "umount", "mountpoint"):
            link = self.bin / name
            if not link.exists():
                link.symlink_to(FAKES_BIN.parent / "fakecmd.py")
        self.drbd_dir.mkdir(exist_ok=True)
        nodes = {n: {"role": "Secondary", "disk": "UpToDate"} for n in NODES}
        state = {
            "module": True,
            "version": 9,
            "resources": {RESOURCE: {"connected": True, "nodes": nodes}},
        }
        (self.drbd_dir / "drbd.json").write_text(json.dumps(state))

    def node_config(self, node: Node) -> dict[str, Any]:
        base = tomllib.loads((REPO / "deploy" / "examples" / f"lab-{node.id}.toml").read_text())
        peer = self.nodes["b" if node.id == "a" else "a"]
        d = self.dir
        sim = [PY, "-m", "bot", "simulate"]
        base["node"].update(state_dir=str(node.dir / "state"))
        base["cluster"].update(
            peers=[{"id": peer.id, "api": peer.api}],
            secret_file=str(d / "cluster.secret"),
            lease_ttl=self.lease_ttl,
            renew_interval=self.renew_interval,
        )
        base["redis"].update(url=self.redis.url)
        if node.id in self.proxies:
            redis_proxy, peer_proxy = self.proxies[node.id]["redis"], self.proxies[node.id]["peer"]
            base["redis"].update(url=f"redis://127.0.0.1:{redis_proxy.port}/0")
            base["cluster"].update(
                peers=[{"id": peer.id, "api": f"http://127.0.0.1:{peer_proxy.port}"}]
            )
        base["ami"].update(port=node.ami_port, secret_file=str(d / "ami.secret"))
        base["rseries"].update(port=str(d / f"rseries-{node.id}"))
        base["asterisk"] = {
            "start": [
                *sim,
                "asterisk",
                "--port",
                str(node.ami_port),
                "--boot-delay",
                str(self.boot_delay),
                "--spans",
                "2",
                "--username",
                "failover",
                "--secret-file",
                str(d / "ami.secret"),
                "--control-port",
                str(node.ami_control),
                "--daemon",
                "--pidfile",
                str(node.pidfile),
                "--record",
                str(node.asterisk_record),
            ],
            "stop": [*sim, "asterisk-stop", "--pidfile", str(node.pidfile)],
            "kill": [*sim, "asterisk-stop", "--pidfile", str(node.pidfile), "--kill"],
            "status": [*sim, "asterisk-status", "--pidfile", str(node.pidfile)],
            "boot_timeout": "10s",
            "command_timeout": "5s",
        }
        base["drbd"] = {"resources": [RESOURCE]}
        if self.topology is not None:
            base["vip"] = {
                **self.topology.vip_settings(node.id),
                "arp_count": 1,
                "arp_interval": "100ms",
            }
        base["spans"].update(grace=self.spans_grace, poll_interval="1s")
        base["test_call"].update(interval=self.test_call_interval, timeout="2s")
        base["api"] = {"listen": f"127.0.0.1:{node.api_port}", "token_file": str(d / "api.token")}
        for section, values in self.extra.items():
            base.setdefault(section, {}).update(values)
        return base

    def env(self, node: Node) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PATH=f"{self.bin}{os.pathsep}{Path(PY).parent}{os.pathsep}{env.get('PATH', '')}",
            FAKE_STATE_DIR=str(node.dir),
            FAKE_DRBD_DIR=str(self.drbd_dir),
            FAKE_NODE=node.id,
            PYTHONPATH=str(REPO),
        )
        return env

    def start(self) -> Cluster:
        self._secrets()
        self._fake_bin()
        self.redis.start()
        self.rseries = subprocess.Popen(
            [
                PY,
                "-m",
                "bot",
                "simulate",
                "rseries",
                "--link-a",
                str(self.dir / "rseries-a"),
                "--link-b",
                str(self.dir / "rseries-b"),
                "--control-port",
                str(self.rseries_control),
                "--log",
                str(self.rseries_log),
                "--relay-time",
                "0.02",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "rseries.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        wait_for_sync(
            lambda: (self.dir / "rseries-a").exists() and (self.dir / "rseries-b").exists(),
            10,
            "the R-Series simulator's links",
        )
        if self.proxied:
            for node in self.nodes.values():
                peer = self.nodes["b" if node.id == "a" else "a"]
                self.proxies[node.id] = {
                    "redis": ProxyProcess(self.redis.port).start(),
                    "peer": ProxyProcess(peer.api_port).start(),
                }
        for node in self.nodes.values():
            node.config_path.write_text(toml_dumps(self.node_config(node)))
        self._start_recorders()
        self.t0 = time.monotonic()
        for node in self.nodes.values():
            self.start_bot(node.id)
        return self

    def start_bot(self, node_id: str) -> None:
        node = self.nodes[node_id]
        cfg = str(node.config_path)
        node.supervisor = subprocess.Popen(
            [
                PY,
                "-m",
                "tests.e2e.supervisor",
                "--watchdog-sec",
                str(self.watchdog_sec),
                "--restart",
                "always",
                "--restart-sec",
                "0.5",
                "--stop-post",
                f"{PY} -m bot fence-local --config {cfg}",
                "--log",
                str(node.sup_log),
                "--",
                PY,
                "-m",
                "bot",
                "--log-level",
                "info",
                "run",
                "--config",
                cfg,
            ],
            cwd=REPO,
            env=self.env(node),
            stdout=subprocess.DEVNULL,
            stderr=open(node.bot_log, "ab"),  # noqa: SIM115
            start_new_session=True,
        )

    def _start_recorders(self) -> None:
        if self.topology is not None:
            self.vip_sampler = VipSampler(self.topology).start()
        self.pid_sampler = recorders.PidSampler(
            {n.id: n.pidfile for n in self.nodes.values()}
        ).start()
        self.drbd_sampler = _DrbdSampler(self.drbd_dir / "drbd.json").start()
        self.lease_sampler = recorders.RedisKeySampler(
            self.redis.url, "failover:{lab}:leader", _lease_holder
        ).start()

    # ------------------------------------------------------------------ faults

    def kill_bot(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        pid = self.nodes[node_id].bot_pid()
        assert pid is not None, "bot pid unknown"
        os.kill(pid, sig)

    def kill_host(self, node_id: str) -> None:
        """Host death: supervisor, bot and Asterisk killed at once, its network gone."""
        node = self.nodes[node_id]
        for pid in (
            node.supervisor.pid if node.supervisor else None,
            node.bot_pid(),
            node.asterisk_pid(),
        ):
            if pid:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if node.supervisor is not None:
            node.supervisor.wait(5)
        if self.topology is not None:
            self.topology.exec(node_id, ["ip", "link", "set", "dev", "eth0", "down"], check=False)
            self.topology.exec(node_id, ["ip", "addr", "flush", "dev", "eth0"], check=False)
        # The dead host's DRBD is gone from the replication link.
        self.set_drbd(connected=False, node=node_id, role="Secondary")

    def cut(self, node_id: str, *links: str) -> None:
        """Cut ``node_id`` off from "redis" and/or "peer": new connections hang, old ones reset."""
        for link in links:
            self.proxies[node_id][link].cut("blackhole", "reset")

    def heal(self, node_id: str, *links: str) -> None:
        for link in links:
            self.proxies[node_id][link].heal()

    def set_drbd(self, *, node: str | None = None, **fields: Any) -> None:
        path = self.drbd_dir / "drbd.json"
        state = json.loads(path.read_text())
        res = state["resources"][RESOURCE]
        if "connected" in fields:
            res["connected"] = fields.pop("connected")
        if node is not None:
            res["nodes"][node].update(fields)
        path.write_text(json.dumps(state))

    def rseries_active(self) -> str | None:
        records = recorders.read_jsonl(self.rseries_log) if self.rseries_log.exists() else []
        for record in reversed(records):
            if record.get("active") in ("A", "B"):
                return str(record["active"])
        return None

    # ------------------------------------------------------------------ waiting

    def primary(self) -> str | None:
        """The node whose API says it is primary (None if none or two)."""
        primaries = [n for n, node in self.nodes.items() if node.role() == "primary"]
        return primaries[0] if len(primaries) == 1 else None

    def wait_primary(self, node_id: str | None = None, within: float = 30.0) -> str:
        found: list[str] = []

        def ready() -> bool:
            p = self.primary()
            if p is not None and (node_id is None or p == node_id):
                found.append(p)
                return True
            return False

        wait_for_sync(ready, within, f"primary {node_id or '(any)'}")
        return found[-1]

    def wait_role(self, node_id: str, role: str, within: float = 30.0) -> None:
        wait_for_sync(lambda: self.nodes[node_id].role() == role, within, f"{node_id} {role}")

    def holds_vip(self, node_id: str) -> bool:
        assert self.topology is not None
        vip = self.topology.vip_address
        return any(a.split("/")[0] == vip for a in self.topology.addresses(node_id))

    def wait_serving(self, node_id: str, within: float = 30.0) -> float:
        """Until the node holds the floating IP and its Asterisk is up; returns the time."""
        node = self.nodes[node_id]

        def serving() -> bool:
            vip_ok = self.topology is None or self.holds_vip(node_id)
            return vip_ok and node.role() == "primary"

        wait_for_sync(serving, within, f"{node_id} serving")
        return time.monotonic()

    # ------------------------------------------------------------------ verdict

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
        )

    def verdict(self, allowance: Allowance) -> Verdict:
        return check(self.observations(), allowance)

    def assert_safe(self, allowance: Allowance) -> Observations:
        obs = self.observations()
        verdict = check(obs, allowance)
        assert verdict.ok, verdict.report() + "\n" + obs.timeline(self.t0) + self.logs_tail()
        return obs

    def logs_tail(self, lines: int = 40) -> str:
        out = []
        for node in self.nodes.values():
            if node.bot_log.exists():
                tail = node.bot_log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"\n--- {node.id} bot log ---\n" + "\n".join(tail))
        return "".join(out)

    # ------------------------------------------------------------------ teardown

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.supervisor is not None and node.supervisor.poll() is None:
                node.supervisor.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            if node.supervisor is not None:
                try:
                    node.supervisor.wait(15)
                except subprocess.TimeoutExpired:
                    with suppress(ProcessLookupError):
                        os.killpg(node.supervisor.pid, signal.SIGKILL)
        for node in self.nodes.values():
            pid = node.asterisk_pid()
            if pid and recorders.pid_alive(pid):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with suppress(ProcessLookupError, TypeError):
                bot = node.bot_pid()
                if bot and recorders.pid_alive(bot):
                    os.kill(bot, signal.SIGKILL)
        for sampler in (self.vip_sampler, self.pid_sampler, self.drbd_sampler, self.lease_sampler):
            if sampler is not None:
                with suppress(Exception):
                    sampler.stop()
        for proxies in self.proxies.values():
            for proxy in proxies.values():
                proxy.stop()
        if self.rseries is not None and self.rseries.poll() is None:
            self.rseries.terminate()
            try:
                self.rseries.wait(5)
            except subprocess.TimeoutExpired:
                self.rseries.kill()
        self.redis.stop()


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


@contextmanager
def running_cluster(workdir: Path, topology: Topology | None, **kwargs: Any) -> Iterator[Cluster]:
    cluster = Cluster(workdir, topology, **kwargs)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def have_tools() -> str | None:
    for tool in ("redis-server", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    return None
