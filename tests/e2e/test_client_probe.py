"""The benchmark's client probe sees what a caller's device sees (bench/probe.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bench.probe import ClientProbe, parse_neigh_dump
from bot.lab.netns import socket_in
from harness.vip import Topology

pytestmark = pytest.mark.netns


@contextmanager
def listener(topo: Topology, node: str, port: int = 5060) -> Iterator[socket.socket]:
    sock = socket_in(topo.ns(node))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(64)
    try:
        yield sock
    finally:
        sock.close()


def garp(topo: Topology, node: str) -> None:
    topo.exec(node, ["arping", "-q", "-U", "-c", "1", "-I", "eth0", topo.vip_address], check=False)


def test_neigh_dump_parser_on_empty_input() -> None:
    assert parse_neigh_dump(b"") == ({}, False)


def test_probe_sees_a_synthetic_mac_change_and_the_answer(topology: Topology) -> None:
    topo = topology
    mac_a, mac_b = topo.mac("a"), topo.mac("b")
    assert mac_a != mac_b
    topo.add_vip("a")
    with listener(topo, "a"), ClientProbe(topo.ns("client"), topo.vip_address) as probe:
        t0 = time.monotonic()
        assert probe.wait("moved", t0, 10, mac=mac_a) >= 0
        assert probe.wait("answered", t0, 10) >= 0
        # The address moves to b (which answers nothing on 5060 yet), announced by a
        # gratuitous ARP, as a failover does; the client's entry must follow.
        topo.del_vip("a")
        topo.add_vip("b")
        t1 = time.monotonic()
        garp(topo, "b")
        assert probe.wait("moved", t1, 10, mac=mac_b) >= 0
        t2 = time.monotonic()
        refused = _wait_outcome(probe, t2, "refused")
        assert refused, "b holds the address but nothing listens: the probe must see RST"
        assert probe.answered(t2) is None
        with listener(topo, "b"):
            t3 = time.monotonic()
            assert probe.wait("answered", t3, 10) >= 0
    samples = probe.snapshot()
    assert len(samples) > 10
    assert {s.mac for s in samples if s.mac} <= {mac_a, mac_b}


def _wait_outcome(probe: ClientProbe, t0: float, outcome: str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if any(s.t >= t0 and s.outcome == outcome for s in probe.snapshot()):
            return True
        time.sleep(0.02)
    return False


def test_probe_reports_a_missing_namespace() -> None:
    with pytest.raises(OSError):
        ClientProbe("fb-no-such-namespace", "192.0.2.100").start()
