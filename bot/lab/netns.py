"""Network namespaces for the end-to-end tests: a small LAN, a VIP sampler, real cuts.

    with Topology() as topo:            # root only; see netns_unavailable()
        topo.ns("a")                    # the namespace name of node a
        topo.vip_settings("a")          # {"address", "interface", "netns"} for [vip]
        with VipSampler(topo) as vip:   # who held the floating address when
            ...
        topo.cut("a", "client"); topo.heal("a")

Layout: a namespace "switch" holds a bridge; "client" and one namespace per
node hang off it through veth pairs, each seeing its side as ``eth0``.
Addresses are from 192.0.2.0/24 (TEST-NET-1) only: client .1, node i .11+i,
floating address .100/24. Names carry a random suffix, so runs never collide,
and everything is deleted on exit, also when the test failed.

The bots themselves run in the root namespace on loopback and only put the
floating address into their node's namespace (``vip.netns``); partitions
between a bot and Redis or its peer go through ``harness.proxy``. ``cut``
here separates namespaces, e.g. the clients from a node.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

SUBNET = ipaddress.ip_network("192.0.2.0/24")
CLIENT_ADDRESS = "192.0.2.1"
FIRST_NODE_HOST = 11
VIP = "192.0.2.100/24"
IFACE = "eth0"
CMD_TIMEOUT = 10.0

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


def run(argv: Sequence[str], timeout: float = CMD_TIMEOUT, check: bool = True) -> str:
    """Run a command (argument list, no shell); its error output is in the exception."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout


def netns_unavailable() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    name = f"fb-probe-{secrets.token_hex(3)}"
    try:
        run(["ip", "netns", "add", name])
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"ip netns does not work: {exc}"
    try:
        run(["ip", "netns", "exec", name, "iptables", "-S"])
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"iptables does not work in a namespace: {exc}"
    finally:
        run(["ip", "netns", "del", name], check=False)
    return None


class Topology:
    def __init__(self, nodes: Sequence[str] = ("a", "b"), vip: str = VIP):
        if len(nodes) > 80:
            raise ValueError("too many nodes for 192.0.2.0/24")
        self.nodes = tuple(nodes)
        self.vip = vip
        self.suffix = secrets.token_hex(3)
        self._names = {
            "switch": f"fb-sw-{self.suffix}",
            "client": f"fb-client-{self.suffix}",
            **{n: f"fb-{n}-{self.suffix}" for n in self.nodes},
        }
        self._addresses = {"client": CLIENT_ADDRESS}
        for i, n in enumerate(self.nodes):
            self._addresses[n] = str(SUBNET.network_address + FIRST_NODE_HOST + i)
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._rules: list[tuple[str, list[str]]] = []

    # --- names and addresses ---

    @property
    def members(self) -> tuple[str, ...]:
        return ("client", *self.nodes)

    def ns(self, member: str) -> str:
        return self._names[member]

    def address(self, member: str) -> str:
        return self._addresses[member]

    @property
    def vip_address(self) -> str:
        return self.vip.split("/")[0]

    def vip_settings(self, node: str) -> dict[str, str]:
        """The ``[vip]`` keys that make node ``node`` act inside its namespace."""
        return {"address": self.vip, "interface": IFACE, "netns": self.ns(node)}

    # --- life cycle ---

    def __enter__(self) -> Self:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _build(self) -> None:
        for name in self._names.values():
            run(["ip", "netns", "add", name])
            self._created.append(name)
            run(["ip", "-n", name, "link", "set", "lo", "up"])
        sw = self.ns("switch")
        run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge", "stp_state", "0"])
        run(["ip", "-n", sw, "link", "set", "br0", "up"])
        for i, member in enumerate(self.members):
            ns, inner, outer = self.ns(member), f"v{self.suffix}{i}", f"p{self.suffix}{i}"
            run(
                [
                    "ip",
                    "link",
                    "add",
                    inner,
                    "netns",
                    ns,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    outer,
                    "netns",
                    sw,
                ]
            )
            run(["ip", "-n", ns, "link", "set", inner, "name", IFACE])
            run(["ip", "-n", ns, "addr", "add", f"{self.address(member)}/24", "dev", IFACE])
            run(["ip", "-n", ns, "link", "set", IFACE, "up"])
            run(["ip", "-n", sw, "link", "set", outer, "master", "br0"])
            run(["ip", "-n", sw, "link", "set", outer, "up"])

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self._procs.clear()
        for name in reversed(self._created):
            run(["ip", "netns", "del", name], check=False)
        self._created.clear()

    def exists(self) -> bool:
        listed = run(["ip", "netns", "list"])
        return any(name in listed for name in self._names.values())

    # --- processes inside a namespace ---

    def exec(
        self, member: str, argv: Sequence[str], timeout: float = CMD_TIMEOUT, check: bool = True
    ) -> str:
        return run(["ip", "netns", "exec", self.ns(member), *argv], timeout=timeout, check=check)

    def popen(self, member: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a process inside ``member``'s namespace; it is killed on ``close()``."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(member), *argv], **kwargs
        )
        self._procs.append(proc)
        return proc

    def reachable(self, src: str, dst: str, port: int = 9, timeout: float = 0.5) -> bool:
        """Whether a TCP SYN from ``src`` gets any answer from ``dst`` (a member or an address).

        A refusal (RST) counts as reachable, so nothing needs to listen; a DROP
        rule shows as a timeout. (The image has no ``ping``.)
        """
        target = self._addresses.get(dst, dst)
        with socket_in(self.ns(src)) as s:
            s.settimeout(timeout)
            try:
                s.connect((target, port))
            except ConnectionRefusedError:
                return True
            except OSError:
                return False
            return True

    def addresses(self, member: str) -> set[str]:
        """IPv4 addresses (with prefix) on ``eth0`` of ``member``, via ``ip``."""
        out = run(["ip", "-n", self.ns(member), "-o", "-4", "addr", "show", "dev", IFACE])
        return set(re.findall(r"inet (\S+)", out))

    def add_vip(self, node: str) -> None:
        run(["ip", "-n", self.ns(node), "addr", "replace", self.vip, "dev", IFACE])

    def del_vip(self, node: str) -> None:
        run(["ip", "-n", self.ns(node), "addr", "del", self.vip, "dev", IFACE], check=False)

    def mac(self, member: str) -> str:
        out = run(["ip", "-n", self.ns(member), "-o", "link", "show", IFACE])
        found = re.search(r"link/ether (\S+)", out)
        if not found:
            raise RuntimeError(f"no MAC address on {IFACE} in {self.ns(member)}")
        return found.group(1).lower()

    # --- cuts, real at the packet level ---

    def _iptables(self, member: str, action: str, rule: list[str]) -> None:
        run(["ip", "netns", "exec", self.ns(member), "iptables", action, *rule])

    def cut(self, node: str, peer: str | None = None) -> None:
        """Drop every packet between ``node`` and ``peer`` (or anyone, with no peer) in
        ``node``'s namespace. Established connections stall; nothing is reset."""
        if peer is None:
            rules = [["INPUT", "-i", IFACE, "-j", "DROP"], ["OUTPUT", "-o", IFACE, "-j", "DROP"]]
        else:
            addr = self._addresses.get(peer, peer)
            rules = [["INPUT", "-s", addr, "-j", "DROP"], ["OUTPUT", "-d", addr, "-j", "DROP"]]
        for rule in rules:
            self._iptables(node, "-A", rule)
            self._rules.append((node, rule))

    def heal(self, node: str | None = None) -> None:
        """Remove the cuts made in ``node``'s namespace (all namespaces with no node)."""
        keep = []
        for member, rule in self._rules:
            if node is None or member == node:
                self._iptables(member, "-D", rule)
            else:
                keep.append((member, rule))
        self._rules = keep

    def who_answers(self, address: str | None = None, count: int = 2) -> set[str]:
        """Which members answer ARP for ``address`` (the VIP by default), seen from the client.

        Two answers mean clients can reach two holders: a split brain visible outside.
        """
        target = address or self.vip_address
        out = run(
            [
                "ip",
                "netns",
                "exec",
                self.ns("client"),
                "arping",
                "-c",
                str(count),
                "-w",
                str(count),
                "-I",
                IFACE,
                target,
            ],
            check=False,
        )
        macs = {m.lower() for m in re.findall(r"\[([0-9A-Fa-f:]{17})\]", out)}
        by_mac = {self.mac(n): n for n in self.nodes}
        return {by_mac.get(m, m) for m in macs}


# --- the VIP sampler ------------------------------------------------------------------

NLMSG_HDR = struct.Struct("=IHHII")
IFADDRMSG = struct.Struct("=BBBBI")
RTATTR = struct.Struct("=HH")
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2


def _align(n: int) -> int:
    return (n + 3) & ~3


def parse_addr_dump(data: bytes) -> tuple[set[str], bool]:
    """IPv4 ``addr/prefix`` strings in a netlink RTM_NEWADDR dump part; True when done."""
    found: set[str] = set()
    offset = 0
    while offset + NLMSG_HDR.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size:
            break
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, offset + NLMSG_HDR.size)
            raise OSError(-code, f"netlink error {os.strerror(-code)}")
        if kind == RTM_NEWADDR:
            body = offset + NLMSG_HDR.size
            family, prefix, _f, _scope, _index = IFADDRMSG.unpack_from(data, body)
            attr = body + IFADDRMSG.size
            addrs: dict[int, str] = {}
            while attr + RTATTR.size <= offset + length:
                alen, atype = RTATTR.unpack_from(data, attr)
                if alen < RTATTR.size:
                    break
                if family == socket.AF_INET and atype in (IFA_ADDRESS, IFA_LOCAL) and alen == 8:
                    addrs[atype] = socket.inet_ntoa(data[attr + 4 : attr + 8])
                attr += _align(alen)
            addr = addrs.get(IFA_LOCAL) or addrs.get(IFA_ADDRESS)
            if addr:
                found.add(f"{addr}/{prefix}")
        offset += _align(length)
    return found, False


def socket_in(
    ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    """A socket that lives in namespace ``ns`` (a socket keeps the namespace it was made in;
    setns runs in a throwaway thread so no other thread ever changes namespace)."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open("/proc/thread-self/ns/net") as own, open(NETNS_DIR / ns) as target:
                if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {ns}: {os.strerror(err)}")
                try:
                    box["sock"] = socket.socket(family, kind, proto)
                finally:
                    libc.setns(own.fileno(), CLONE_NEWNET)
        except Exception as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, name=f"setns-{ns}")
    thread.start()
    thread.join(CMD_TIMEOUT)
    if "error" in box:
        raise box["error"]
    sock: socket.socket = box["sock"]
    return sock


def netlink_socket_in(ns: str) -> socket.socket:
    sock = socket_in(ns, socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    sock.settimeout(1.0)
    return sock


class AddressReader:
    """Lists IPv4 addresses in one namespace, fast (netlink), or via ``ip`` as a fallback."""

    def __init__(self, ns: str):
        self.ns = ns
        self._seq = 0
        self._sock: socket.socket | None
        try:
            self._sock = netlink_socket_in(ns)
        except OSError:
            self._sock = None

    def addresses(self) -> set[str]:
        if self._sock is None:
            out = run(["ip", "-n", self.ns, "-o", "-4", "addr", "show"], timeout=2.0)
            return set(re.findall(r"inet (\S+)", out))
        self._seq += 1
        header = NLMSG_HDR.pack(
            NLMSG_HDR.size + IFADDRMSG.size, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0
        )
        self._sock.send(header + IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0))
        found: set[str] = set()
        while True:
            part, done = parse_addr_dump(self._sock.recv(65536))
            found |= part
            if done:
                return found

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
