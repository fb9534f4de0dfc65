"""End to end: a self-fence that fails is never reported done (design §3, role ``fencing``).

The primary is cut off from Redis and from its peer while its DRBD file system is
busy: ``umount`` says "target is busy" and ``drbdadm secondary`` exits 11 ("Device
is held open by someone"), and the processes using it cannot be ended yet. The
node must keep saying ``fencing`` (status, ``/health`` 503) and never ``standby``
while its DRBD is Primary, escalate after ``fence.escalate_after``, and complete
the fence by itself once the users can be ended. (The watchdog may kill the
cut-off bot as its fence is due; the restarted bot finds the services running
and fences just the same.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.lab.cluster import RESOURCE, supervisor_records
from harness.checker import Allowance
from harness.cluster import Cluster
from tests.e2e.test_scenarios import SAMPLE, settle
from tests.helpers import running_cluster, wait_for_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

MOUNT = {"device": "/dev/drbd0", "path": "/srv/pbx", "fstype": "ext4"}
ESCALATE_AFTER = 1.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    extra = {
        "drbd": {"mount": [MOUNT]},
        "fence": {
            "escalate_after": f"{ESCALATE_AFTER:g}s",
            "escalate_command": ["touch", str(tmp_path / "escalated")],
        },
    }
    with running_cluster(tmp_path / "cluster", proxied=True, extra=extra) as c:
        yield c


def drbd_role(c: Cluster, node: str) -> str:
    state = json.loads((c.drbd_dir / "drbd.json").read_text())
    return str(state["resources"][RESOURCE]["nodes"][node]["role"])


def events(c: Cluster, node: str) -> list[str]:
    body = c.nodes[node].status() or {}
    return [str(e.get("kind")) for e in body.get("events", [])]


def test_failed_fence_step_is_retried_and_reported_as_fencing(
    cluster: Cluster, tmp_path: Path
) -> None:
    primary, _standby = settle(cluster)
    old = cluster.nodes[primary]
    wait_for_sync(lambda: drbd_role(cluster, primary) == "Primary", 10, "DRBD Primary")
    assert MOUNT["path"] in json.loads((old.dir / "mounts.json").read_text())
    # The file system is in use, and its users cannot be ended (yet).
    (old.dir / "busy.json").write_text(json.dumps({MOUNT["path"]: 1}))
    (old.dir / "faults.json").write_text(
        json.dumps({"fuser": {"exit": 1, "stderr": "Cannot stat file /proc/1/fd/3"}})
    )
    cluster.cut(primary, "redis", "peer")

    def no_lie() -> str | None:
        role = old.role()
        if drbd_role(cluster, primary) == "Primary":
            assert role != "standby", "reports standby while its DRBD is still Primary"
        return role

    # Generous limits: the watchdog may restart the bot (a slow start under load).
    wait_for_sync(
        lambda: no_lie() == "fencing" and bool((old.status() or {}).get("fence")),
        45,
        f"{primary} reports fencing, and its status shows the incomplete fence",
    )
    code, health = old.get("/health")
    assert code == 503 and any("fence incomplete" in r for r in health["reasons"]), health
    # The step that keeps failing is DRBD's (a slow kill may fail a first attempt too,
    # and DRBD is then not tried: it is given up last).
    wait_for_sync(
        lambda: "held open" in (((old.status() or {}).get("fence") or {}).get("failing") or ""),
        20,
        "the status to name DRBD's held-open device",
    )
    # It stays "fencing" past the escalation, and never says it fenced itself.
    wait_for_sync(lambda: (tmp_path / "escalated").exists(), 20, "escalate_command ran")
    hold = time.monotonic() + ESCALATE_AFTER
    while time.monotonic() < hold:
        assert no_lie() in ("fencing", None)
        time.sleep(0.1)
    assert drbd_role(cluster, primary) == "Primary"
    wait_for_sync(
        lambda: {"fence_incomplete", "fence_escalated"} <= set(events(cluster, primary)),
        20,
        "fence_incomplete and fence_escalated events",
    )
    assert "self_fence" not in events(cluster, primary)

    # The users can be ended now: the next retry completes the fence.
    (old.dir / "faults.json").write_text("{}")
    wait_for_sync(
        lambda: drbd_role(cluster, primary) == "Secondary" and no_lie() == "standby",
        30,
        f"{primary} fenced and standby",
    )
    assert old.get("/health")[0] in (200, 503)  # healthy again or for its own reasons
    # Completed by the bot's fencer, or (if the watchdog restarted the bot meanwhile)
    # by ExecStopPost's fence-local, which retries the same way.
    by_stop_post = any(
        r.get("event") == "stop_post" and r.get("ok") for r in supervisor_records(old)
    )
    assert "fence_complete" in events(cluster, primary) or by_stop_post
    # Safety only: nobody may serve while the old primary cannot finish its fence.
    cluster.assert_safe(Allowance(sample_tolerance=SAMPLE, route_tolerance=1.0))
