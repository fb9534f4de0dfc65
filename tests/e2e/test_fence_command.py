"""End to end: ``cluster.fence_command`` (in production ``fence_ipmilan ... --action=off``
against the peer's BMC) runs only after this node took the key, and only against a peer
that did not give the lease up (design §3 rule 10).

Here the command records the peer it was run against. Both bots start together: at
most one of them may fence the other (with IPMI, fencing both powers both hosts off).
A node that takes a lease its peer released (a failed takeover rolls back and
releases) fences nobody. And a standby's stop is no self-fence.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import Cluster
from harness.fakes import FakeWorld
from tests.e2e.test_graceful_stop import bus_events
from tests.e2e.test_scenarios import SAFE, settle
from tests.helpers import running_cluster, wait_for_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RECORD = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + chr(10))"


@pytest.fixture
def fenced_file(tmp_path: Path) -> Path:
    return tmp_path / "fenced.txt"


@pytest.fixture
def cluster(tmp_path: Path, fenced_file: Path) -> Iterator[Cluster]:
    command = [sys.executable, "-c", RECORD, str(fenced_file), "{peer}"]
    with running_cluster(tmp_path / "cluster", extra={"cluster": {"fence_command": command}}) as c:
        yield c


def _fenced(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_cold_start_fences_at_most_once_and_a_release_is_never_fenced(
    cluster: Cluster, fenced_file: Path
) -> None:
    primary, standby = settle(cluster)
    at_start = _fenced(fenced_file)
    assert len(at_start) <= 1, f"both nodes fenced each other at a cold start: {at_start}"
    assert at_start in ([], [standby]), at_start
    # A standby's stop (nothing primary ran there) only checks that nothing runs: no
    # self_fence alert, no self-fence counted.
    node = cluster.nodes[standby]
    old_bot = node.bot_pid()
    cluster.kill_bot(standby, signal.SIGTERM)
    wait_for_sync(lambda: node.bot_pid() not in (None, old_bot), 30, f"{standby}'s bot restarted")
    cluster.wait_role(standby, "standby", within=20)
    said = [json.loads(e) for e in bus_events(cluster)]
    fences = [e for e in said if e.get("node") == standby and e.get("kind") == "self_fence"]
    # Unless its probe could not tell (a status command timed out on a busy machine):
    # then the fence counts, as rule 7 says, and the bot's log says why.
    could_not_tell = "local services before the stop's fence" in node.bot_log.read_text()
    assert not fences or could_not_tell, fences
    # The standby's promotion fails: it rolls back and releases the lease (to nobody);
    # the old primary takes it again and must not fence the node that gave it up.
    FakeWorld(cluster.nodes[standby].dir).set_fault(
        "drbdadm primary", exit=11, stderr=f"{standby}: State change failed: (-2) Need access"
    )
    assert cluster.nodes[primary].post("/switchover", {"to": standby}) == 202
    wait_for_sync(lambda: cluster.nodes[standby].role() == "failed", 20, f"{standby} failed")
    cluster.wait_serving(primary, within=20)
    assert _fenced(fenced_file) == at_start, "a node that released the lease was fenced"
    cluster.assert_safe(SAFE)
