"""keepalived (the Debian package) moving the same floating address on the same lab LAN.

Two node namespaces of a ``Topology`` each run ``keepalived --vrrp`` with one VRRP
instance for the floating address (both ``state BACKUP``, equal priority,
``nopreempt``: like the bot, no failback) and a TCP answerer on port 5060 that
stands for the service (always running, since keepalived moves only the address).
``kill_host`` is the same host death the bot benchmark injects: every process
of the node killed at once and its link down.

    with Topology() as topo, KeepalivedPair(topo, workdir, version=3, advert=0.1) as pair:
        master = pair.wait_master(within=10)
        pair.kill_host(master)
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

from bot.lab.netns import IFACE, Topology, socket_in
from harness import tools

SETTINGS = {"VRRPv2 1s": (2, 1.0), "VRRPv3 0.1s": (3, 0.1)}
PRIORITY = 100
ROUTER_ID = 51


def keepalived_missing() -> str | None:
    """Why keepalived cannot run here, or None."""
    return tools.missing("keepalived")


def master_down_interval(advert: float, version: int, priority: int = PRIORITY) -> float:
    """3 adverts plus the skew time, after which a backup takes over: the skew is
    (256 - priority) / 256 seconds in VRRPv2 (RFC 3768), times the advert in v3 (RFC 5798)."""
    skew = (256 - priority) / 256 * (advert if version == 3 else 1.0)
    return 3 * advert + skew


def render_config(node: str, vip: str, *, version: int, advert: float) -> str:
    defs = [f"router_id fb_{node}", f"vrrp_version {version}"]
    return "\n".join(
        [
            "global_defs {",
            *(f"  {d}" for d in defs),
            "}",
            "vrrp_instance VI_FB {",
            "  state BACKUP",
            f"  interface {IFACE}",
            f"  virtual_router_id {ROUTER_ID}",
            f"  priority {PRIORITY}",
            f"  advert_int {advert:g}",
            "  nopreempt",
            "  virtual_ipaddress {",
            f"    {vip} dev {IFACE}",
            "  }",
            "}",
            "",
        ]
    )


class Answerer:
    """Accepts and closes TCP connections on ``port`` inside a namespace (a thread)."""

    def __init__(self, ns: str, port: int = 5060):
        self.sock = socket_in(ns)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.listen(128)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"answer-{ns}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if ready:
                with contextlib.suppress(OSError):
                    conn, _ = self.sock.accept()
                    conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class KeepalivedPair:
    def __init__(self, topo: Topology, workdir: Path, *, version: int, advert: float):
        self.topo = topo
        self.dir = workdir
        self.version = version
        self.advert = advert
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.answerers: dict[str, Answerer] = {}
        self._logs: list[IO[bytes]] = []
        self._starts = 0

    def __enter__(self) -> KeepalivedPair:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            for node in self.topo.nodes:
                self.start_node(node)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def master_down(self) -> float:
        return master_down_interval(self.advert, self.version)

    def start_node(self, node: str) -> None:
        conf = self.dir / f"keepalived-{node}.conf"
        conf.write_text(
            render_config(node, self.topo.vip, version=self.version, advert=self.advert)
        )
        log = (self.dir / f"keepalived-{node}.log").open("ab")
        self._logs.append(log)
        # A fresh run directory per start, as a rebooted host has an empty /run: a pid
        # file left by the killed daemon (its VRRP child may linger as a zombie for a
        # moment) would make keepalived refuse to start ("daemon is already running").
        self._starts += 1
        run = self.dir / f"{node}-{self._starts}"
        run.mkdir(exist_ok=True)
        argv = ["keepalived", "--dont-fork", "--log-console", "--no-syslog", "--vrrp",
                "--use-file", str(conf), "--pid", str(run / "keepalived.pid"),
                "--vrrp_pid", str(run / "vrrp.pid"), "--checkers_pid", str(run / "chk.pid"),
                "--bfd_pid", str(run / "bfd.pid")]  # fmt: skip
        self.procs[node] = subprocess.Popen(
            ["ip", "netns", "exec", self.topo.ns(node), *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.answerers[node] = Answerer(self.topo.ns(node))

    def holders(self) -> set[str]:
        vip = self.topo.vip_address
        return {
            n
            for n in self.topo.nodes
            if any(a.split("/")[0] == vip for a in self.topo.addresses(n))
        }

    def wait_master(self, within: float, exclude: str | None = None) -> str:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            held = self.holders()
            if len(held) == 1 and exclude not in held:
                return next(iter(held))
            time.sleep(0.02)
        raise TimeoutError(f"keepalived: no single master within {within:g} s")

    def kill_host(self, node: str) -> None:
        """Host death: every process of the node killed at once, its network gone."""
        proc = self.procs.pop(node, None)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        answerer = self.answerers.pop(node, None)
        if answerer is not None:
            answerer.close()
        self.topo.exec(node, ["ip", "link", "set", "dev", IFACE, "down"], check=False)
        self.topo.exec(node, ["ip", "addr", "flush", "dev", IFACE], check=False)

    def revive_host(self, node: str) -> None:
        self.topo.exec(node, ["ip", "link", "set", "dev", IFACE, "up"], check=False)
        addr = f"{self.topo.address(node)}/24"
        self.topo.exec(node, ["ip", "addr", "add", addr, "dev", IFACE], check=False)
        self.start_node(node)

    def close(self) -> None:
        for node in list(self.procs):
            proc = self.procs.pop(node)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        for answerer in self.answerers.values():
            answerer.close()
        self.answerers.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
