"""Namespaces: the LAN works, cuts are real, the VIP sampler sees who held the address."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness.checker import check_exclusive
from harness.vip import VIP, Topology, VipSampler, netns_unavailable, parse_addr_dump
from tests.helpers import wait_for_sync

pytestmark = pytest.mark.netns


def test_lan_is_up_and_addresses_are_test_net_only(topology: Topology) -> None:
    # An answer returns at once; the long limit is for a first ARP on a busy machine
    # (0.5 s was too short beside `make test-loaded`'s burners).
    up = 5.0
    assert topology.reachable("client", "a", timeout=up)
    assert topology.reachable("client", "b", timeout=up)
    assert topology.reachable("a", "b", timeout=up)
    assert topology.addresses("a") == {"192.0.2.11/24"}
    assert topology.addresses("b") == {"192.0.2.12/24"}
    assert topology.vip_settings("b") == {
        "address": VIP,
        "interface": "eth0",
        "netns": topology.ns("b"),
    }


def test_cut_drops_packets_and_heal_restores(topology: Topology) -> None:
    topology.cut("a", "client")
    assert not topology.reachable("client", "a")
    assert topology.reachable("client", "b")
    assert topology.reachable("a", "b")
    topology.heal("a")
    assert topology.reachable("client", "a")
    topology.cut("b")
    assert not topology.reachable("a", "b") and not topology.reachable("client", "b")
    topology.heal()
    assert topology.reachable("a", "b")


def test_process_runs_inside_a_namespace(topology: Topology) -> None:
    # A TCP server in node a's namespace is reachable from the client, not from the root ns.
    server = topology.popen(
        "a",
        [
            sys.executable,
            "-c",
            "import socket; s = socket.create_server(('192.0.2.11', 7000)); "
            "c, _ = s.accept(); c.sendall(b'hi from a'); c.close()",
        ],
    )
    fetch = (
        "import socket, time\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        print(socket.create_connection(('192.0.2.11', 7000), 1).recv(100).decode())\n"
        "        break\n"
        "    except ConnectionRefusedError:\n"
        "        time.sleep(0.02)\n"
    )
    assert topology.exec("client", [sys.executable, "-c", fetch]).strip() == "hi from a"
    server.wait(5)


def test_vip_sampler_records_who_held_the_address(topology: Topology) -> None:
    with VipSampler(topology) as sampler:
        assert sampler.fast, "netlink sampling should work as root"
        topology.add_vip("a")
        wait_for_sync(lambda: sampler.holders() == {"a"}, 2, "a to hold the VIP")
        assert topology.who_answers() == {"a"}
        topology.del_vip("a")
        topology.add_vip("b")
        wait_for_sync(lambda: sampler.holders() == {"b"}, 2, "b to hold the VIP")
        # A deliberate split brain: both hold it for a while.
        topology.add_vip("a")
        wait_for_sync(lambda: sampler.holders() == {"a", "b"}, 2, "both to hold the VIP")
        t_both = time.monotonic()
        wait_for_sync(lambda: time.monotonic() - t_both > 0.1, 1, "100 ms of overlap")
        topology.del_vip("a")
        wait_for_sync(lambda: sampler.holders() == {"b"}, 2, "only b again")
        intervals = sampler.intervals()
    assert [i.node for i in intervals] == ["a", "b", "a"]
    assert sampler.max_gap < 0.1 and not sampler.errors
    verdict = check_exclusive("floating IP", intervals, tolerance=sampler.max_gap)
    assert [v.nodes for v in verdict.violations] == [("a", "b")]
    assert verdict.violations[0].duration >= 0.1


def test_everything_is_removed_even_when_the_test_fails() -> None:
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    topo = Topology(nodes=("a",))
    with pytest.raises(RuntimeError, match="boom"), topo:
        assert topo.exists()
        sleeper = topo.popen("a", [sys.executable, "-c", "import time; time.sleep(60)"])
        raise RuntimeError("boom")
    assert not topo.exists()
    assert sleeper.poll() is not None
    listed = subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert topo.suffix not in listed


def test_netlink_dump_parser_rejects_errors() -> None:
    import struct

    error = struct.pack("=IHHII", 20, 2, 0, 1, 0) + struct.pack("=i", -1)
    with pytest.raises(OSError, match="netlink error"):
        parse_addr_dump(error)
    done = struct.pack("=IHHII", 16, 3, 0, 1, 0)
    assert parse_addr_dump(done) == (set(), True)
