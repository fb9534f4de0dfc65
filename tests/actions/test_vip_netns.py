"""The floating IP moving between two nodes in real network namespaces.

Client, node A and node B each get a namespace, cabled by veth pairs to a
bridge in a fourth one; all addresses are from 192.0.2.0/24 and exist only
inside these namespaces. Names carry a random suffix; everything is removed
afterwards, also when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from bot.actions.runner import run_command
from bot.actions.vip import Vip
from bot.config import VipConfig
from tests.helpers import free_port, require_root, wait_for

pytestmark = pytest.mark.netns

VIP = "192.0.2.10"
HOSTS = {"c": "192.0.2.100", "a": "192.0.2.1", "b": "192.0.2.2"}

LISTENER = """
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(8)
print("ready", flush=True)
while True:
    conn, _ = s.accept()
    conn.sendall(name.encode())
    conn.close()
"""

CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
    print(s.recv(16).decode())
"""


def ip(*args: str) -> str:
    return subprocess.run(
        ["ip", *args], check=True, capture_output=True, text=True, timeout=10
    ).stdout


@dataclass
class Lab:
    ns: dict[str, str] = field(default_factory=dict)  # role -> namespace name

    def mac(self, role: str) -> str:
        info = json.loads(ip("-n", self.ns[role], "-j", "link", "show", "eth0"))
        return str(info[0]["address"])

    def neighbour(self, role: str, address: str) -> str | None:
        entries = json.loads(ip("-n", self.ns[role], "-j", "neigh", "show", address, "dev", "eth0"))
        return entries[0].get("lladdr") if entries else None


@pytest.fixture
def lab() -> Iterator[Lab]:
    if not require_root():
        pytest.skip("needs root for network namespaces")
    tag = secrets.token_hex(3)
    lab = Lab({role: f"fo-{tag}-{role}" for role in ("br", "c", "a", "b")})
    try:
        for name in lab.ns.values():
            ip("netns", "add", name)
        br = lab.ns["br"]
        ip("-n", br, "link", "add", "br0", "type", "bridge")
        ip("-n", br, "link", "set", "br0", "up")
        for role, address in HOSTS.items():
            ns, port = lab.ns[role], f"p-{role}"
            ip(
                "link",
                "add",
                "eth0",
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                br,
            )
            ip("-n", br, "link", "set", port, "master", "br0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        yield lab
    finally:
        for name in lab.ns.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert tag not in left


@pytest.fixture
async def listeners(lab: Lab) -> AsyncIterator[int]:
    port = free_port()
    procs = []
    try:
        for role in ("a", "b"):
            argv = ["ip", "netns", "exec", lab.ns[role], sys.executable, "-c", LISTENER]
            proc = await asyncio.create_subprocess_exec(
                *argv, role, str(port), stdout=asyncio.subprocess.PIPE
            )
            procs.append(proc)
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            assert line.strip() == b"ready"
        yield port
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def connect(lab: Lab, port: int) -> str:
    result = await run_command(
        ["ip", "netns", "exec", lab.ns["c"], sys.executable, "-c", CLIENT, VIP, str(port)],
        timeout=10,
    )
    return result.stdout.strip()


def vip_for(lab: Lab, role: str) -> Vip:
    cfg = VipConfig(
        address=f"{VIP}/24", interface="eth0", arp_count=3, arp_interval=0.2, netns=lab.ns[role]
    )
    return Vip(cfg)


async def test_floating_ip_moves_to_b(lab: Lab, listeners: int) -> None:
    vip_a, vip_b = vip_for(lab, "a"), vip_for(lab, "b")
    try:
        assert await vip_a.up()
        assert await vip_a.present() and not await vip_b.present()
        assert await connect(lab, listeners) == "a"
        assert lab.neighbour("c", VIP) == lab.mac("a")
        b_mac = lab.mac("b")

        started = time.monotonic()
        assert await vip_a.down()
        assert await vip_b.up()
        await wait_for(
            lambda: lab.neighbour("c", VIP) == b_mac,
            within=5,
            interval=0.005,
            what="the client's neighbour entry to name B",
        )
        moved = time.monotonic() - started
        assert await connect(lab, listeners) == "b"
        print(f"floating IP moved A -> B in {moved * 1000:.1f} ms")
        assert moved < 2.0
        assert not await vip_a.present() and await vip_b.present()
    finally:
        await vip_a.aclose()
        await vip_b.aclose()


async def test_vip_steps_are_idempotent_and_labelled(lab: Lab) -> None:
    vip = vip_for(lab, "a")
    try:
        assert await vip.up() is True
        assert await vip.up() is False
        shown = ip("-n", lab.ns["a"], "-o", "-4", "addr", "show", "dev", "eth0")
        assert f"{VIP}/24" in shown and "eth0:fo" in shown
        assert shown.count(f"{VIP}/24") == 1
        assert await vip.down() is True
        assert await vip.down() is False
        assert not await vip.present()
    finally:
        await vip.aclose()


async def test_missing_interface_is_a_clear_error(lab: Lab) -> None:
    cfg = VipConfig(address=f"{VIP}/24", interface="eth9", netns=lab.ns["a"])
    problems = await Vip(cfg).check()
    assert problems and "eth9" in problems[0]
