"""A two-node cluster on this machine: the demo, the end-to-end tests, the benchmark.

Real parts: redis-server, the R-Series simulator on two pseudo-terminals, two
``failover-bot run`` processes each under ``bot.lab.supervisor`` (what systemd
does in production), the AMI simulator as each node's "Asterisk" (started and
stopped by the bots' own ``asterisk.*`` commands), and the floating IP inside
network namespaces when a ``Topology`` is given. With ``asterisk="real"``
each node runs a real Asterisk instead (``bot.lab.asterisk``: own directories,
ports and entityid), started and stopped by the same ``asterisk.*`` commands.
DRBD is a stand-in command (``drbd_fake``) when one is given, and left out otherwise. The node
configurations are derived from ``deploy/examples/lab-a.toml`` / ``lab-b.toml``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import IO, Any

from bot.lab import asterisk as real_asterisk
from bot.lab.netns import Topology
from bot.lab.supervisor import child_pid, read_log

PY = sys.executable
NODES = ("a", "b")
HOSTS = {"a": "A", "b": "B"}
RESOURCE = "pbx"
SIP_PORT = 5060
EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
# The nodes' Asterisk status command: a bare script, as cheap as `systemctl is-active`.
PIDSTATUS = [PY, "-IS", str(Path(__file__).resolve().with_name("pidstatus.py"))]


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_LAB_PORT = 20000
# "LOW-HIGH": the band this process and its children take lab ports from; parallel test
# workers each get their own, so two labs never race for one port.
PORT_BAND_ENV = "FAILOVER_LAB_PORTS"
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port free now and outside the kernel's ephemeral range.

    A port the kernel handed out for ``bind(0)`` can be taken by any outgoing connection
    (the lab's own pollers open hundreds a minute) before the part it is meant for binds
    it, seconds later. Ports below the ephemeral range are never used for that.
    """
    low, high = _port_band()
    for _ in range(200):
        port = random.randrange(low, high) if high > low + 100 else 0
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            found = int(s.getsockname()[1])
        _handed_out.add(found)
        return found
    raise RuntimeError("no free loopback port below the ephemeral range")


def _port_band() -> tuple[int, int]:
    band = os.environ.get(PORT_BAND_ENV, "")
    try:
        low, high = (int(part) for part in band.split("-"))
    except ValueError:
        return _LOWEST_LAB_PORT, _ephemeral_low()
    return low, high


def port_bands(count: int) -> list[str]:
    """``count`` disjoint port bands below the ephemeral range, as PORT_BAND_ENV values."""
    low, high = _LOWEST_LAB_PORT, _ephemeral_low()
    width = (high - low) // max(count, 1)
    return [f"{low + i * width}-{low + (i + 1) * width}" for i in range(count)]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class WaitTimeout(AssertionError, TimeoutError):
    """A bounded wait ran out: a timeout to the lab's callers, a failure to a test."""


def end_process(proc: subprocess.Popen[Any] | None, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaped."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


def wait_until(
    predicate: Callable[[], bool], within: float, what: str = "condition", interval: float = 0.02
) -> None:
    """Poll ``predicate`` until true; raise WaitTimeout after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {within:g} s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie no longer serves anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X")


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


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


class RedisProcess:
    """redis-server on a free loopback port, without persistence."""

    def __init__(self, workdir: Path, port: int | None = None, extra: list[str] | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: port_open(self.port), 10, "redis-server to listen")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        end_process(self.proc)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


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
        self.http_port = free_port()
        self.asterisk_dir = self.dir / "asterisk"
        self.ari_port = free_port()
        self.pidfile = self.dir / "asterisk.pid"
        if cluster.asterisk == "real":
            self.pidfile = self.asterisk_dir / "run" / "asterisk.pid"
        self.asterisk_record = self.dir / "asterisk.jsonl"
        self.sup_log = self.dir / "supervisor.jsonl"
        self.bot_log = self.dir / "bot.log"
        # First on this node's PATH (empty unless a test puts a broken command there).
        self.bin = self.dir / "bin"
        self.bin.mkdir(exist_ok=True)
        self.supervisor: subprocess.Popen[bytes] | None = None
        self.runtime: real_asterisk.Runtime | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def get(self, path: str, timeout: float = 1.0) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.api + path, timeout=timeout) as resp:
                return int(resp.status), json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            return int(exc.code), json.loads(body) if body.startswith(b"{") else body.decode()
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

    def status(self) -> dict[str, Any] | None:
        code, body = self.get("/status")
        return body if code == 200 and isinstance(body, dict) else None

    def role(self) -> str | None:
        body = self.status()
        for node in (body or {}).get("nodes", []):
            if node.get("id") == self.id:
                return str(node.get("role"))
        return None

    def bot_pid(self) -> int | None:
        return child_pid(self.sup_log) if self.sup_log.exists() else None

    def asterisk_pid(self) -> int | None:
        return read_pidfile(self.pidfile)

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
        drbd_fake: Path | None = None,
        log_level: str = "info",
        extra: dict[str, dict[str, Any]] | None = None,
        asterisk: str = "sim",
        asterisk_binary: str | None = None,
        stop_graceful: float = 5.0,
        timeout_stop_sec: float = 30.0,
        nice: int = 0,
        sim_stop_delay: float = 0.0,
    ) -> None:
        if asterisk not in ("sim", "real"):
            raise ValueError(f"asterisk must be 'sim' or 'real', not {asterisk!r}")
        self.asterisk = asterisk
        self.asterisk_binary = asterisk_binary or real_asterisk.find_binary()
        if asterisk == "real" and self.asterisk_binary is None:
            raise RuntimeError(real_asterisk.HOW_TO_GET)
        self.stop_graceful = stop_graceful
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.topology = topology
        self.lease_ttl = lease_ttl
        self.renew_interval = renew_interval
        self.boot_delay = boot_delay
        self.test_call_interval = test_call_interval
        self.sim_stop_delay = sim_stop_delay  # the simulated Asterisk's graceful stop
        self.spans_grace = spans_grace
        self.watchdog_sec = watchdog_sec
        self.drbd_fake = drbd_fake
        self.log_level = log_level
        self.extra = extra or {}
        self.timeout_stop_sec = timeout_stop_sec
        # The unit's Nice= for each node's supervisor and what it starts (the fast profile
        # asks for -10, so that its timings hold beside a busy machine's other work).
        self.nice = nice
        self.redis = RedisProcess(self.dir / "redis")
        self.rseries_control = free_port()
        self.rseries_log = self.dir / "rseries.jsonl"
        # The simulated nodes' shared dialplan overrides (ami.simulator): absent = built-in.
        self.dialplan_file = self.dir / "dialplan.json"
        self.rseries: subprocess.Popen[bytes] | None = None
        self.drbd_dir = self.dir / "drbd"
        self.bin = self.dir / "bin"
        self.token = "lab-token-" + os.urandom(4).hex()
        self.nodes = {n: Node(self, n) for n in NODES}
        self.t0 = time.monotonic()
        self._files: list[IO[bytes]] = []

    # ------------------------------------------------------------------ set-up

    def _secrets(self) -> None:
        (self.dir / "cluster.secret").write_text(os.urandom(16).hex() + "\n")
        (self.dir / "ami.secret").write_text("ami-" + os.urandom(8).hex() + "\n")
        (self.dir / "api.token").write_text(self.token + "\n")
        (self.dir / "ari.password").write_text("ari-" + os.urandom(8).hex() + "\n")
        for path in ("cluster.secret", "ami.secret", "api.token", "ari.password"):
            os.chmod(self.dir / path, 0o600)

    def _drbd(self) -> None:
        if self.drbd_fake is None:
            return
        # Only the commands that cannot run here; `ip` and `arping` are the real ones.
        self.bin.mkdir(exist_ok=True)
        for name in ("drbdadm", "drbdsetup", "mount", "umount", "mountpoint", "fuser"):
            link = self.bin / name
            if not link.exists():
                link.symlink_to(self.drbd_fake)
        self.drbd_dir.mkdir(exist_ok=True)
        nodes = {n: {"role": "Secondary", "disk": "UpToDate"} for n in NODES}
        resource: dict[str, Any] = {"connected": True, "nodes": nodes}
        mounts = self.extra.get("drbd", {}).get("mount", [])
        if mounts:  # the fake refuses "secondary" while this device is mounted or held
            resource["device"] = mounts[0]["device"]
        state = {"module": True, "version": 9, "resources": {RESOURCE: resource}}
        (self.drbd_dir / "drbd.json").write_text(json.dumps(state))

    def renice(self, pid: int) -> None:
        """Give a process of the cluster's own (Redis, a proxy) the nodes' priority: in
        production Redis has a host of its own, with none of this machine's other work."""
        if self.nice:
            with suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, pid, self.nice)

    def peer_of(self, node: Node) -> Node:
        return self.nodes["b" if node.id == "a" else "a"]

    def node_config(self, node: Node) -> dict[str, Any]:
        base = tomllib.loads((EXAMPLES / f"lab-{node.id}.toml").read_text())
        peer = self.peer_of(node)
        d = self.dir
        sim = [PY, "-m", "bot", "simulate"]
        secret = str(d / "ami.secret")
        base["node"].update(state_dir=str(node.dir / "state"))
        base["cluster"].update(
            peers=[{"id": peer.id, "api": peer.api}],
            secret_file=str(d / "cluster.secret"),
            lease_ttl=self.lease_ttl,
            renew_interval=self.renew_interval,
        )
        base["redis"].update(url=self.redis.url)
        base["ami"].update(port=node.ami_port, secret_file=secret)
        ari_password = str(d / "ari.password")
        base["ari"].update(url=f"http://127.0.0.1:{node.ari_port}/ari", password_file=ari_password)
        base["rseries"].update(port=str(d / f"rseries-{node.id}"))
        pidfile = str(node.pidfile)
        base["asterisk"] = {
            "start": [*sim, "asterisk", "--port", str(node.ami_port), "--boot-delay",
                      str(self.boot_delay), "--spans", "2", "--username", "failover",
                      "--secret-file", secret, "--control-port", str(node.ami_control),
                      "--ari-port", str(node.ari_port), "--ari-password-file", ari_password,
                      "--daemon", "--pidfile", pidfile, "--record", str(node.asterisk_record),
                      "--dialplan-file", str(self.dialplan_file),
                      "--stop-delay", f"{self.sim_stop_delay:g}"],
            "stop": [*sim, "asterisk-stop", "--pidfile", pidfile],
            "kill": [*sim, "asterisk-stop", "--pidfile", pidfile, "--kill"],
            "status": [*PIDSTATUS, pidfile, "simulate"],
            "boot_timeout": "10s",
            "command_timeout": "5s",
        }  # fmt: skip
        if self.asterisk == "real":
            base["asterisk"] = self._real_asterisk(node)
            # No DAHDI hardware here: span alarms are the simulator's alone.
            base["spans"].update(critical=[])
            if "ari" in base:
                base["ari"].update(
                    url=f"http://127.0.0.1:{node.http_port}/ari",
                    password_file=ari_password,
                )
        if self.drbd_fake is not None:
            base["drbd"] = {"resources": [RESOURCE]}
        if self.topology is not None:
            # The simulated Asterisk answers TCP on VIP:5060 in the node's namespace from
            # FullyBooted until it stops, as a real one's SIP listener does; the lab's
            # real Asterisk stays in the host's namespace, and a companion answers for it
            # while its HTTP server does (bot.lab.sipanswer).
            if self.asterisk != "real":
                sip = ["--sip-port", str(SIP_PORT), "--sip-netns", self.topology.ns(node.id)]
                base["asterisk"]["start"] = [*base["asterisk"]["start"], *sip]
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

    def _real_asterisk(self, node: Node) -> dict[str, Any]:
        """The [asterisk] commands of a node that runs a real Asterisk."""
        lab = [PY, "-m", "bot.lab.asterisk"]
        where = ["--dir", str(node.asterisk_dir)]
        return {
            "start": [*lab, "start", *where],
            "stop": [*lab, "stop", *where, "--graceful", str(self.stop_graceful)],
            "kill": [*lab, "kill", *where],
            "status": [*PIDSTATUS, str(node.pidfile), "asterisk"],
            "boot_timeout": "20s",
            "command_timeout": f"{self.stop_graceful + real_asterisk.STOP_NOW_WAIT + 5:g}s",
        }

    def _runtimes(self) -> None:
        if self.asterisk != "real":
            return
        assert self.asterisk_binary is not None
        for i, node in enumerate(self.nodes.values(), start=1):
            node.runtime = real_asterisk.Runtime(
                node.asterisk_dir,
                self.asterisk_binary,
                node.ami_port,
                node.http_port,
                entityid=f"02:00:00:00:01:{i:02x}",
                ami_secret=(self.dir / "ami.secret").read_text().strip(),
                ari_password=(self.dir / "ari.password").read_text().strip(),
                sip_netns=self.topology.ns(node.id) if self.topology is not None else None,
            )
            node.runtime.write()

    def env(self, node: Node) -> dict[str, str]:
        env = dict(os.environ)
        path = [str(Path(PY).parent), env.get("PATH", "")]
        if self.drbd_fake is not None:
            path.insert(0, str(self.bin))
        path.insert(0, str(node.bin))
        env.update(
            PATH=os.pathsep.join(path),
            FAKE_STATE_DIR=str(node.dir),
            FAKE_DRBD_DIR=str(self.drbd_dir),
            FAKE_NODE=node.id,
        )
        return env

    def _log(self, path: Path) -> IO[bytes]:
        fh = path.open("ab")
        self._files.append(fh)
        return fh

    def start(self) -> Cluster:
        self._secrets()
        self._runtimes()
        self._drbd()
        self.redis.start()
        if self.redis.proc is not None:
            self.renice(self.redis.proc.pid)
        self.rseries = subprocess.Popen(
            [PY, "-m", "bot", "simulate", "rseries", "--link-a", str(self.dir / "rseries-a"),
             "--link-b", str(self.dir / "rseries-b"), "--control-port", str(self.rseries_control),
             "--log", str(self.rseries_log), "--relay-time", "0.02"],
            stdout=subprocess.DEVNULL,
            stderr=self._log(self.dir / "rseries.log"),
            start_new_session=True,
        )  # fmt: skip
        wait_until(
            lambda: (self.dir / "rseries-a").exists() and (self.dir / "rseries-b").exists(),
            10,
            "the R-Series simulator's links",
        )
        self.before_bots()
        for node in self.nodes.values():
            node.config_path.write_text(toml_dumps(self.node_config(node)))
        self.t0 = time.monotonic()
        for node in self.nodes.values():
            self.start_bot(node.id)
        return self

    def before_bots(self) -> None:
        """Hook for subclasses: recorders, proxies."""

    def start_bot(self, node_id: str) -> None:
        node = self.nodes[node_id]
        cfg = str(node.config_path)
        node.supervisor = subprocess.Popen(
            [PY, "-m", "bot.lab.supervisor", "--watchdog-sec", str(self.watchdog_sec),
             "--restart", "always", "--restart-sec", "0.5",
             # Like the unit's TimeoutStopSec: room for a stop's hand-over and drain.
             "--timeout-stop-sec", str(self.timeout_stop_sec),
             "--stop-post", f"{PY} -m bot fence-local --config {cfg}",
             "--log", str(node.sup_log), "--",
             PY, "-m", "bot", "--log-level", self.log_level, "run", "--config", cfg],
            env=self.env(node),
            stdout=subprocess.DEVNULL,
            stderr=self._log(node.bot_log),
            start_new_session=True,
            preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None,
        )  # fmt: skip

    # ------------------------------------------------------------------ faults

    def kill_bot(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        pid = self.nodes[node_id].bot_pid()
        if pid is None:
            raise RuntimeError(f"no running bot on {node_id}")
        os.kill(pid, sig)

    def kill_host(self, node_id: str) -> None:
        """Host death: supervisor, bot and Asterisk killed at once, its network gone."""
        node = self.nodes[node_id]
        self._kill_processes(node)
        if self.topology is not None:
            self.topology.exec(node_id, ["ip", "link", "set", "dev", "eth0", "down"], check=False)
            self.topology.exec(node_id, ["ip", "addr", "flush", "dev", "eth0"], check=False)
        if self.drbd_fake is not None:
            # The dead host is gone from the replication link.
            self.set_drbd(connected=False, node=node_id, role="Secondary")

    def _kill_processes(self, node: Node) -> None:
        pids = (
            node.supervisor.pid if node.supervisor else None,
            node.bot_pid(),
            node.asterisk_pid(),
        )
        for pid in pids:
            if pid:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if node.supervisor is not None:
            node.supervisor.wait(5)

    def revive_host(self, node_id: str) -> None:
        """The dead host comes back: link up, replication reconnected, bot started."""
        if self.topology is not None:
            self.topology.exec(node_id, ["ip", "link", "set", "dev", "eth0", "up"], check=False)
            addr = f"{self.topology.address(node_id)}/24"
            self.topology.exec(node_id, ["ip", "addr", "add", addr, "dev", "eth0"], check=False)
        if self.drbd_fake is not None:
            self.set_drbd(connected=True)
        self.start_bot(node_id)

    def set_drbd(self, *, node: str | None = None, **fields: Any) -> None:
        path = self.drbd_dir / "drbd.json"
        state = json.loads(path.read_text())
        res = state["resources"][RESOURCE]
        if "connected" in fields:
            res["connected"] = fields.pop("connected")
        if node is not None:
            res["nodes"][node].update(fields)
        path.write_text(json.dumps(state))

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

        wait_until(ready, within, f"primary {node_id or '(any)'}")
        return found[-1]

    def wait_role(self, node_id: str, role: str, within: float = 30.0) -> None:
        seen: list[str | None] = [None]

        def has_role() -> bool:
            seen[0] = self.nodes[node_id].role()
            return seen[0] == role

        try:
            wait_until(has_role, within, f"{node_id} {role}")
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc} (last seen: {seen[0]})") from None

    def holds_vip(self, node_id: str) -> bool:
        if self.topology is None:
            return False
        vip = self.topology.vip_address
        return any(a.split("/")[0] == vip for a in self.topology.addresses(node_id))

    def wait_serving(self, node_id: str, within: float = 30.0) -> float:
        """Until the node is primary (with the floating IP, if any); returns the time."""
        node = self.nodes[node_id]

        def serving() -> bool:
            vip_ok = self.topology is None or self.holds_vip(node_id)
            return vip_ok and node.role() == "primary"

        wait_until(serving, within, f"{node_id} serving")
        return time.monotonic()

    def logs_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of each bot's log, without the AMI link's reconnect chatter."""
        out = []
        for node in self.nodes.values():
            if node.bot_log.exists():
                text = node.bot_log.read_text(errors="replace").splitlines()
                tail = [line for line in text if " ami.client: " not in line][-lines:]
                out.append(f"\n--- {node.id} bot log ---\n" + "\n".join(tail))
        return "".join(out)

    # ------------------------------------------------------------------ teardown

    def stop(self, hand_over: bool = True) -> None:
        """End everything. ``hand_over``: each bot stops as systemd would stop it (drain,
        hand over, fence); without, every node is ended at once, as a test's teardown
        that is not about stopping wants (the state is thrown away)."""
        for node in self.nodes.values():
            if node.supervisor is not None and node.supervisor.poll() is None:
                if hand_over:
                    node.supervisor.send_signal(signal.SIGTERM)
                else:
                    self._kill_processes(node)
        for node in self.nodes.values():
            if node.supervisor is not None:
                try:
                    node.supervisor.wait(15)
                except subprocess.TimeoutExpired:
                    with suppress(ProcessLookupError):
                        os.killpg(node.supervisor.pid, signal.SIGKILL)
        for node in self.nodes.values():
            for pid in (node.asterisk_pid(), node.bot_pid()):
                if pid and pid_alive(pid):
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if self.rseries is not None and self.rseries.poll() is None:
            self.rseries.terminate()
            try:
                self.rseries.wait(5)
            except subprocess.TimeoutExpired:
                self.rseries.kill()
        self.redis.stop()
        self._end_leftovers()
        for fh in self._files:
            fh.close()

    def _end_leftovers(self) -> None:
        """Kill any process that still names this cluster's directory: an Asterisk a bot
        was starting as it was killed writes its pidfile after the last look at it."""
        marker = str(self.dir.resolve()).encode()
        for _ in range(3):
            found = [pid for pid in pids_naming(marker) if pid != os.getpid()]
            if not found:
                return
            for pid in found:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with suppress(WaitTimeout):
                wait_until(partial(_none_alive, found), 5, "leftovers to end")


def _none_alive(pids: list[int]) -> bool:
    return not any(pid_alive(p) for p in pids)


def pids_naming(marker: bytes) -> list[int]:
    """The processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def supervisor_records(node: Node) -> list[dict[str, Any]]:
    return read_log(node.sup_log) if node.sup_log.exists() else []
