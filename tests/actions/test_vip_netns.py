"""The floating IP moving between two nodes in real network namespaces.

The lab's topology (bot.lab.netns): client, node a and node b each in a namespace,
cabled to a bridge; all addresses are from 192.0.2.0/24 and exist only inside these
namespaces, and everything is removed afterwards, also when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator

import pytest

from bot.actions.runner import run_command
from bot.actions.vip import Vip
from bot.config import VipConfig
from bot.lab.netns import IFACE, Topology
from bot.lab.netns import run as ip_run
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.netns

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
    return ip_run(["ip", *args])


def neighbour(topo: Topology, member: str, address: str) -> str | None:
    entries = json.loads(ip("-n", topo.ns(member), "-j", "neigh", "show", address, "dev", IFACE))
    return entries[0].get("lladdr") if entries else None


@pytest.fixture
async def listeners(topology: Topology) -> AsyncIterator[int]:
    port = free_port()
    procs = []
    try:
        for role in ("a", "b"):
            argv = ["ip", "netns", "exec", topology.ns(role), sys.executable, "-c", LISTENER]
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


async def connect(topology: Topology, port: int) -> str:
    argv = [sys.executable, "-c", CLIENT, topology.vip_address, str(port)]
    result = await run_command(["ip", "netns", "exec", topology.ns("client"), *argv], timeout=10)
    return result.stdout.strip()


def vip_for(topology: Topology, role: str) -> Vip:
    settings = topology.vip_settings(role)
    cfg = VipConfig(
        address=settings["address"],
        interface=settings["interface"],
        arp_count=3,
        arp_interval=0.2,
        netns=settings["netns"],
    )
    return Vip(cfg)


async def test_floating_ip_moves_to_b(topology: Topology, listeners: int) -> None:
    vip_a, vip_b = vip_for(topology, "a"), vip_for(topology, "b")
    try:
        assert await vip_a.up()
        assert await vip_a.present() and not await vip_b.present()
        assert await connect(topology, listeners) == "a"
        assert neighbour(topology, "client", topology.vip_address) == topology.mac("a")
        b_mac = topology.mac("b")

        started = time.monotonic()
        assert await vip_a.down()
        assert await vip_b.up()
        await wait_for(
            lambda: neighbour(topology, "client", topology.vip_address) == b_mac,
            within=5,
            interval=0.005,
            what="the client's neighbour entry to name B",
        )
        moved = time.monotonic() - started
        assert await connect(topology, listeners) == "b"
        print(f"floating IP moved A -> B in {moved * 1000:.1f} ms")
        assert moved < 2.0
        assert not await vip_a.present() and await vip_b.present()
    finally:
        await vip_a.aclose()
        await vip_b.aclose()


async def test_vip_steps_are_idempotent_and_labelled(topology: Topology) -> None:
    vip = vip_for(topology, "a")
    try:
        assert await vip.up() is True
        assert await vip.up() is False
        shown = ip("-n", topology.ns("a"), "-o", "-4", "addr", "show", "dev", IFACE)
        assert topology.vip in shown and f"{IFACE}:fo" in shown
        assert shown.count(topology.vip) == 1
        assert await vip.down() is True
        assert await vip.down() is False
        assert not await vip.present()
    finally:
        await vip.aclose()


async def test_missing_interface_is_a_clear_error(topology: Topology) -> None:
    cfg = VipConfig(address=topology.vip, interface="eth9", netns=topology.ns("a"))
    problems = await Vip(cfg).check()
    assert problems and "eth9" in problems[0]
