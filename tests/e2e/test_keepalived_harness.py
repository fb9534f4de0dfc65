"""The benchmark's keepalived harness really moves the floating address (bench/keepalived.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.keepalived import KeepalivedPair, keepalived_missing, master_down_interval
from bench.probe import ClientProbe
from harness.vip import Topology

pytestmark = pytest.mark.netns


def test_master_down_interval_follows_the_rfcs() -> None:
    assert master_down_interval(1.0, 2) == pytest.approx(3 + 156 / 256)
    assert master_down_interval(0.1, 3) == pytest.approx(0.3 + 15.6 / 256)


def test_keepalived_moves_the_vip_once_and_the_client_sees_it(
    topology: Topology, tmp_path: Path
) -> None:
    reason = keepalived_missing()
    if reason:
        pytest.skip(reason)
    topo = topology
    with (
        KeepalivedPair(topo, tmp_path, version=3, advert=0.1) as pair,
        ClientProbe(topo.ns("client"), topo.vip_address) as probe,
    ):
        master = pair.wait_master(within=15)
        backup = "b" if master == "a" else "a"
        probe.wait("moved", time.monotonic() - 60, 10, mac=topo.mac(master))
        t0 = time.monotonic()
        pair.kill_host(master)
        assert pair.wait_master(within=10, exclude=master) == backup
        moved = probe.wait("moved", t0, 10, mac=topo.mac(backup))
        answered = probe.wait("answered", t0, 10, mac=topo.mac(backup))
        assert moved < 5 and answered < 5
        assert pair.holders() == {backup}
