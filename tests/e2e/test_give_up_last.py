"""End to end: DRBD Primary and the lease are the last things a node gives up (design §3
rule 10).

A switchover while the old primary cannot remove the floating IP (``ip addr del``
answers "RTNETLINK answers: Operation not permitted", as on a host whose
capabilities were dropped): the old primary must stay ``fencing`` with the address,
its DRBD Primary role and the lease, so that the new primary never adds an address
that is still up on the other host; once the fault clears the fence completes and
the target serves.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.lab.cluster import RESOURCE
from harness.cluster import Cluster, Node
from tests.e2e.test_scenarios import SAFE, settle
from tests.helpers import running_cluster, wait_for_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

LEASE = 3.0
FAULT_FOR = 3 * LEASE  # long past the lease: a lease left to expire would show


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path / "cluster") as c:
        yield c


def break_addr_del(node: Node, flag: Path) -> None:
    """An ``ip`` first on the node's PATH that refuses ``addr del`` while ``flag`` exists
    (the bot's ``ip netns exec NS ip ...`` finds it both times through the PATH)."""
    real = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    assert real is not None
    script = node.bin / "ip"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ -e "{flag}" ] && [ "$1" = addr ] && [ "$2" = del ]; then\n'
        '    echo "RTNETLINK answers: Operation not permitted" >&2\n'
        "    exit 2\n"
        "fi\n"
        f'exec {real} "$@"\n'
    )
    script.chmod(0o755)
    flag.touch()


def drbd_role(c: Cluster, node: str) -> str:
    state = json.loads((c.drbd_dir / "drbd.json").read_text())
    return str(state["resources"][RESOURCE]["nodes"][node]["role"])


def test_switchover_while_the_address_cannot_be_removed(cluster: Cluster, tmp_path: Path) -> None:
    primary, standby = settle(cluster)
    old = cluster.nodes[primary]
    flag = tmp_path / "ip-addr-del-fails"
    break_addr_del(old, flag)
    assert old.post("/switchover", {"to": standby}) == 202
    wait_for_sync(lambda: old.role() == "fencing", 15, f"{primary} reports fencing")
    until = time.monotonic() + FAULT_FOR
    while time.monotonic() < until:
        assert not (cluster.holds_vip(standby) and cluster.holds_vip(primary)), (
            "both hosts hold the floating IP"
        )
        assert cluster.nodes[standby].role() != "primary", f"{standby} took over"
        time.sleep(0.1)
    # Still holding everything it could not yet give up, and saying so.
    assert cluster.holds_vip(primary)
    assert drbd_role(cluster, primary) == "Primary", "DRBD given up before the address"
    assert old.role() == "fencing"
    assert (old.status() or {}).get("holder") == primary, "the lease given up first"

    flag.unlink()
    cluster.wait_serving(standby, within=LEASE + 20)
    assert not cluster.holds_vip(primary)
    assert drbd_role(cluster, primary) == "Secondary"
    cluster.assert_safe(SAFE)
