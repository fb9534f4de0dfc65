"""Promote, demote and fence against the fake commands (state kept, calls recorded)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bot.actions.asterisk import AsteriskService
from bot.actions.drbd import Drbd
from bot.actions.pstn import Pstn
from bot.actions.takeover import FENCE_OVERRUN_MAX, StepTiming, Takeover
from bot.actions.vip import Vip
from bot.config import Config
from harness.fakes import FakeWorld, drbd_resource
from tests.actions.helpers import AmiStandIn, Journal, LinkStandIn, TestCallStandIn, make_config
from tests.helpers import wait_for

ROUTE = "route A"
PRIMARY = "drbdadm primary r0"
MOUNT = "mount -t ext4 -o defaults /dev/drbd0 /srv/pbx"
IP_ADD = "ip addr add 192.0.2.10/24 dev eth0 label eth0:fo"
START = "fake-service start asterisk"
BOOTED = "fully_booted"
TEST_CALL = "test_call"
KILL = "fake-service kill asterisk"
STOP = "fake-service stop asterisk"
IP_DEL = "ip addr del 192.0.2.10/24 dev eth0"
UMOUNT = "umount /srv/pbx"
SECONDARY = "drbdadm secondary r0"

PROMOTE_ORDER = [ROUTE, PRIMARY, MOUNT, IP_ADD, START, BOOTED, TEST_CALL]


class Rig:
    def __init__(
        self,
        cfg: Config,
        world: FakeWorld,
        *,
        lease_valid: Callable[[], bool] = lambda: True,
        link: LinkStandIn | None = None,
        ami: AmiStandIn | None = None,
        test_outcome: str = "answered",
        spans_up: Callable[[], bool] = lambda: True,
    ) -> None:
        self.world = world
        self.journal = Journal()
        self.link = link or LinkStandIn(self.journal)
        self.link.journal = self.journal
        self.ami = ami or AmiStandIn(self.journal)
        self.ami.journal = self.journal
        self.steps: list[StepTiming] = []
        assert cfg.drbd and cfg.vip and cfg.rseries
        self.vip = Vip(cfg.vip)
        self.takeover = Takeover(
            cfg,
            drbd=Drbd(cfg.drbd),
            vip=self.vip,
            asterisk=AsteriskService(cfg.asterisk),
            pstn=Pstn(cfg.rseries, "A", self.link),
            ami=self.ami,
            lease_valid=lease_valid,
            on_step=self.steps.append,
            test_call=TestCallStandIn(self.journal, test_outcome),
            spans_up=spans_up,
        )

    def timeline(self, *, arping: bool = False) -> list[str]:
        """Everything that happened, in order; the background ARP burst left out."""
        entries = self.world.mutations() + self.journal.entries
        return [w for _, w in sorted(entries) if arping or not w.startswith("arping")]

    def state(self) -> dict[str, Any]:
        return {
            "drbd": self.world.drbd,
            "mounts": self.world.mounts,
            "services": self.world.services,
            "ip": self.world.addresses("eth0"),
        }


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path)


async def test_promote_runs_every_step_in_order(cfg: Config, world: FakeWorld) -> None:
    rig = Rig(cfg, world)
    report = await rig.takeover.promote(only_node_that_can_serve=False)
    await rig.vip.wait_announced()
    assert report.outcome == "succeeded", report
    assert rig.timeline() == PROMOTE_ORDER
    # The gratuitous ARP went out after the address was added.
    full = rig.timeline(arping=True)
    arping = [i for i, w in enumerate(full) if w.startswith("arping")]
    assert arping and arping[0] > full.index(IP_ADD)
    assert "-U" in full[arping[0]].split()
    assert [s.name for s in report.steps] == [
        "route",
        "drbd",
        "vip",
        "asterisk_start",
        "fully_booted",
        "test_call",
        "spans",
    ]
    assert rig.steps == report.steps
    assert all(s.ok and s.duration >= 0 for s in report.steps)
    assert world.role("r0") == "Primary"
    assert world.mounts == {"/srv/pbx": "/dev/drbd0"}
    assert world.addresses("eth0") == ["192.0.2.10/24"]
    assert world.running("asterisk")


async def test_second_promote_changes_nothing(cfg: Config, world: FakeWorld) -> None:
    rig = Rig(cfg, world)
    assert (await rig.takeover.promote(only_node_that_can_serve=False)).outcome == "succeeded"
    await rig.vip.wait_announced()
    before, calls_before = rig.state(), len(world.calls())
    report = await rig.takeover.promote(only_node_that_can_serve=False)
    assert report.outcome == "succeeded"
    assert rig.state() == before
    await rig.vip.wait_announced()
    again = [" ".join([c["cmd"], *c["argv"]]) for c in world.calls()[calls_before:]]
    assert not [w for w in again if w in (PRIMARY, MOUNT, START)]
    # The address is announced again at every takeover (routers may hold a stale entry).
    assert any(w.startswith("arping") for w in again)
    assert world.services["asterisk"]["starts"] == 1
    details = {s.name: s.detail for s in report.steps}
    assert details["drbd"] == "already primary and mounted"
    assert details["vip"] == "address already present, ARP sent"
    assert details["asterisk_start"] == "already running"


def _fail(world: FakeWorld, rig: Rig, step: str) -> None:
    if step == "route":
        rig.link.fail = True
    elif step == "drbd_primary":
        world.set_fault("drbdadm primary", exit=11, stderr="r0: State change failed")
    elif step == "mount":
        world.set_fault("mount", exit=32, stderr="mount: /srv/pbx: wrong fs type")
    elif step == "vip":
        world.set_fault("ip addr add", exit=2, stderr="RTNETLINK answers: Operation not permitted")
    elif step == "asterisk_start":
        world.set_fault("fake-service start", exit=1, stderr="Job for asterisk.service failed")
    elif step == "fully_booted":
        rig.ami.boots = False
    elif step == "test_call":
        assert rig.takeover.test_call is not None
        rig.takeover.test_call.outcome = "no_answer"  # type: ignore[attr-defined]


# step -> (the timeline up to and including the failing step, the undo that must follow)
FAILURES = {
    "route": ([ROUTE], []),
    "drbd_primary": ([ROUTE, PRIMARY], []),  # still secondary: nothing to undo
    "mount": ([ROUTE, PRIMARY, MOUNT], [SECONDARY]),
    "vip": ([ROUTE, PRIMARY, MOUNT, IP_ADD], [IP_DEL, UMOUNT, SECONDARY]),
    "asterisk_start": (
        [ROUTE, PRIMARY, MOUNT, IP_ADD, START],
        [KILL, IP_DEL, UMOUNT, SECONDARY],
    ),
    "fully_booted": (
        [ROUTE, PRIMARY, MOUNT, IP_ADD, START, BOOTED],
        [KILL, IP_DEL, UMOUNT, SECONDARY],
    ),
    "test_call": (
        [ROUTE, PRIMARY, MOUNT, IP_ADD, START, BOOTED, TEST_CALL],
        [KILL, IP_DEL, UMOUNT, SECONDARY],
    ),
}


@pytest.mark.parametrize("step", list(FAILURES))
async def test_failing_step_rolls_back_in_reverse(cfg: Config, world: FakeWorld, step: str) -> None:
    rig = Rig(cfg, world)
    _fail(world, rig, step)
    report = await rig.takeover.promote(only_node_that_can_serve=False)
    await rig.vip.wait_announced()
    assert report.outcome == "failed"
    done, undo = FAILURES[step]
    # Rolled back in reverse order; the spans are never routed back.
    assert rig.timeline() == done + undo
    assert "route B" not in rig.timeline()
    assert world.role("r0") == "Secondary"
    assert world.mounts == {}
    assert world.addresses("eth0") == []
    assert not world.running("asterisk")
    failed = [s for s in report.steps if not s.ok]
    assert failed and report.reason.startswith(failed[0].name)


async def test_failing_test_call_on_the_only_node_stays_up_degraded(
    cfg: Config, world: FakeWorld
) -> None:
    rig = Rig(cfg, world, test_outcome="no_answer")
    report = await rig.takeover.promote(only_node_that_can_serve=True)
    await rig.vip.wait_announced()
    assert report.outcome == "degraded"
    assert "test call" in report.reason
    assert rig.timeline() == PROMOTE_ORDER
    assert world.role("r0") == "Primary" and world.running("asterisk")
    assert world.addresses("eth0") == ["192.0.2.10/24"]


async def test_spans_not_up_within_grace_is_degraded_not_rolled_back(
    cfg: Config, world: FakeWorld
) -> None:
    rig = Rig(cfg, world, spans_up=lambda: False)
    started = time.monotonic()
    report = await rig.takeover.promote(only_node_that_can_serve=False)
    assert report.outcome == "degraded"
    assert "spans" in report.reason
    assert time.monotonic() - started >= cfg.spans.grace
    assert world.role("r0") == "Primary" and world.running("asterisk")


@pytest.mark.parametrize(
    # The route step asks twice: before the step, and right before ROUTE is written.
    ("valid_checks", "steps_done", "stopped_before"),
    [(0, 0, "route"), (2, 1, "drbd"), (3, 2, "vip"), (4, 3, "asterisk_start")],
)
async def test_lease_running_out_stops_before_the_next_primary_step(
    cfg: Config, world: FakeWorld, valid_checks: int, steps_done: int, stopped_before: str
) -> None:
    checks = 0

    def lease_valid() -> bool:
        nonlocal checks
        checks += 1
        return checks <= valid_checks

    rig = Rig(cfg, world, lease_valid=lease_valid)
    report = await rig.takeover.promote(only_node_that_can_serve=True)
    await rig.vip.wait_announced()
    assert report.outcome == "aborted"
    assert report.reason.startswith(f"{stopped_before}: lease no longer valid")
    timeline = rig.timeline()
    order = [ROUTE, PRIMARY + "|" + MOUNT, IP_ADD, START]
    done = [w for group in order[:steps_done] for w in group.split("|")]
    assert timeline[: len(done)] == done
    assert START not in timeline[len(done) :] and BOOTED not in timeline
    # What was done is undone; nothing after the stop.
    assert world.role("r0") == "Secondary"
    assert world.addresses("eth0") == [] and not world.running("asterisk")
    assert checks == valid_checks + 1


async def test_fence_runs_ip_kill_drbd_within_budget(cfg: Config, world: FakeWorld) -> None:
    rig = Rig(cfg, world)
    assert (await rig.takeover.promote(only_node_that_can_serve=False)).outcome == "succeeded"
    await rig.vip.wait_announced()
    mark = len(world.mutations())
    started = time.monotonic()
    report = await rig.takeover.fence()
    elapsed = time.monotonic() - started
    assert report.outcome == "succeeded", report
    assert [w for _, w in world.mutations()[mark:]] == [IP_DEL, KILL, UMOUNT, SECONDARY]
    assert [s.name for s in report.steps] == ["fence_vip", "fence_asterisk", "fence_drbd"]
    print(f"fence with fast fakes: {elapsed * 1000:.0f} ms (budget {cfg.cluster.fence_budget}s)")
    assert elapsed < cfg.cluster.fence_budget, elapsed
    assert world.role("r0") == "Secondary" and not world.running("asterisk")
    assert world.addresses("eth0") == []


async def test_fence_steps_and_what_they_report(cfg: Config, world: FakeWorld) -> None:
    """The fence's effects and details, apart from its deadline (checked above)."""
    rig = Rig(cfg, world)
    await rig.takeover.promote(only_node_that_can_serve=False)
    await rig.vip.wait_announced()
    report = await rig.takeover.fence()
    assert [(s.name, s.ok, s.detail) for s in report.steps] == [
        ("fence_vip", True, "address removed"),
        ("fence_asterisk", True, "killed"),
        ("fence_drbd", True, "secondary"),
    ]
    assert world.addresses("eth0") == [] and not world.running("asterisk")
    assert world.role("r0") == "Secondary"
    again = await rig.takeover.fence()  # nothing left to fence: said so, still succeeds
    assert (again.outcome, again.steps[0].detail) == ("succeeded", "address not present")


async def test_fence_tries_every_step_and_never_raises(cfg: Config, world: FakeWorld) -> None:
    rig = Rig(cfg, world)
    await rig.takeover.promote(only_node_that_can_serve=False)
    await rig.vip.wait_announced()
    world.set_fault("ip addr del", exit=2, stderr="RTNETLINK answers: Operation not permitted")
    world.set_fault("fake-service kill", sleep=5)
    report = await rig.takeover.fence()
    assert report.outcome == "failed"
    # DRBD Primary is given up last: not while the address or Asterisk may be up.
    assert [s.name for s in report.steps] == ["fence_vip", "fence_asterisk"]
    assert [s.ok for s in report.steps[:2]] == [False, False]
    assert world.role("r0") == "Primary" and "DRBD kept Primary" in report.reason
    # The hung kill runs past the spent budget (a kill given up at once costs a retry),
    # but not past the first attempt's bound.
    kill = report.steps[1]
    bound = cfg.cluster.fence_budget + FENCE_OVERRUN_MAX
    assert cfg.cluster.fence_budget - report.steps[0].duration < kill.duration < bound + 0.2
    assert "fence_vip" in report.reason and "fence_asterisk" in report.reason


@pytest.mark.parametrize("hung", [["fake-service kill"], ["ip addr del", "fake-service kill"]])
async def test_a_first_fence_never_runs_far_past_its_budget(
    cfg: Config, world: FakeWorld, hung: list[str]
) -> None:
    rig = Rig(cfg, world)
    await rig.takeover.promote(only_node_that_can_serve=False)
    await rig.vip.wait_announced()
    for command in hung:
        world.set_fault(command, sleep=30)
    started = time.monotonic()
    report = await rig.takeover.fence()
    took = time.monotonic() - started
    assert report.outcome == "failed"
    # The budget plus at most FENCE_OVERRUN_MAX, and the slack of a cut-off command.
    assert took < cfg.cluster.fence_budget + FENCE_OVERRUN_MAX + 0.3, (took, report.steps)
    assert world.role("r0") == "Primary"  # held: the retry finishes the fence
    world.clear_faults()
    assert (await rig.takeover.fence(escalate=True)).outcome == "succeeded"


@pytest.mark.parametrize("fault", ["ip addr del", "fake-service kill"])
async def test_fence_keeps_drbd_primary_until_address_and_asterisk_are_gone(
    cfg: Config, world: FakeWorld, fault: str
) -> None:
    rig = Rig(cfg, world)
    await rig.takeover.promote(only_node_that_can_serve=False)
    await rig.vip.wait_announced()
    world.set_fault(fault, exit=2, stderr="RTNETLINK answers: Operation not permitted")
    report = await rig.takeover.fence()
    assert report.outcome == "failed"
    assert "fence_drbd" not in [s.name for s in report.steps]
    assert world.role("r0") == "Primary", "DRBD demoted while a fence step failed"
    assert "DRBD kept Primary" in report.reason
    world.clear_faults()
    again = await rig.takeover.fence(escalate=True)
    assert again.outcome == "succeeded", again
    assert world.role("r0") == "Secondary"


async def test_demote_keeps_drbd_primary_while_the_address_is_up(
    cfg: Config, world: FakeWorld
) -> None:
    rig = Rig(cfg, world)
    await rig.takeover.promote(only_node_that_can_serve=False)
    await rig.vip.wait_announced()
    world.set_fault("ip addr del", exit=2, stderr="RTNETLINK answers: Operation not permitted")
    report = await rig.takeover.demote(drain_timeout=None)
    assert report.outcome == "failed"
    assert [s.name for s in report.steps] == ["asterisk_stop", "vip_down"]
    assert world.addresses("eth0") and world.role("r0") == "Primary"
    assert report.reason.startswith("vip_down:") and "DRBD kept Primary" in report.reason


async def test_demote_drains_then_stops_then_ip_then_drbd(cfg: Config, world: FakeWorld) -> None:
    rig = Rig(cfg, world, ami=AmiStandIn(Journal(), channels=[2, 1, 0]))
    await rig.takeover.promote(only_node_that_can_serve=False)
    await rig.vip.wait_announced()
    mark = len(rig.timeline())
    report = await rig.takeover.demote(drain_timeout=5.0)
    assert report.outcome == "succeeded", report
    after = [w for w in rig.timeline()[mark:] if not w.startswith("channels")]
    assert after == [STOP, IP_DEL, UMOUNT, SECONDARY]
    assert [s.name for s in report.steps] == ["drain", "asterisk_stop", "vip_down", "drbd_down"]
    assert report.steps[0].detail == "no calls left"
    channels = [w for w in rig.timeline()[mark:] if w.startswith("channels")]
    assert channels == ["channels 2", "channels 1", "channels 0"]


async def test_readiness_reasons(cfg: Config, world: FakeWorld) -> None:
    rig = Rig(cfg, world)
    assert await rig.takeover.readiness(outdated=False) == (True, [])
    ready, reasons = await rig.takeover.readiness(outdated=True)
    assert not ready and any("outdated" in r for r in reasons)
    world.set_drbd({"r0": drbd_resource(disk="Outdated")})
    rig.link.connected = False
    ready, reasons = await rig.takeover.readiness(outdated=False)
    assert not ready
    assert "drbd r0: disk Outdated" in reasons and "R-Series link down" in reasons


async def test_local_services(cfg: Config, world: FakeWorld) -> None:
    rig = Rig(cfg, world)
    before = await rig.takeover.local_services()
    assert (before.vip_present, before.asterisk_running, before.drbd_primary) == (
        False,
        False,
        False,
    )
    assert not before.any_primary
    await rig.takeover.promote(only_node_that_can_serve=False)
    after = await rig.takeover.local_services()
    assert after.vip_present and after.asterisk_running and after.drbd_primary


def _exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_cancelled_takeover_leaves_no_child_behind(cfg: Config, world: FakeWorld) -> None:
    rig = Rig(cfg, world)
    world.set_fault("fake-service start", sleep=60, child=True)
    task = asyncio.create_task(rig.takeover.promote(only_node_that_can_serve=False))

    def hanging_start() -> list[dict[str, Any]]:
        path = world.dir / "calls.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [c for c in map(json.loads, lines) if "child_pid" in c]

    await wait_for(lambda: bool(hanging_start()), within=10, what="the start command to hang")
    record = hanging_start()[0]
    pids = [record["pid"], record["child_pid"]]
    assert all(_alive(p) for p in pids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: not any(_alive(p) for p in pids), within=5, what="children gone")
    # The direct child was reaped, not left as a zombie.
    assert not _exists(record["pid"])
    assert rig.steps[-1].name == "asterisk_start" and rig.steps[-1].detail == "cancelled"


async def test_promote_waits_for_the_old_primary_to_finish_fencing(
    cfg: Config, world: FakeWorld
) -> None:
    """DRBD refuses while the old primary is still primary and connected; the takeover
    waits (up to a lease time, by which the old primary must have fenced) and then goes on."""
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0", peer_role="Primary")})
    rig = Rig(cfg, world)
    promote = asyncio.create_task(rig.takeover.promote(only_node_that_can_serve=False))
    await wait_for(lambda: len(world.calls("drbdsetup", "drbdadm")) >= 2, 5, what="a refusal")
    assert not promote.done()
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0", peer_role="Secondary")})
    report = await asyncio.wait_for(promote, 10)
    assert report.outcome == "succeeded", report
    assert world.role("r0") == "Primary"


async def test_short_lease_still_waits_for_a_watchdog_fenced_old_primary(
    cfg: Config, world: FakeWorld
) -> None:
    """With a 0.5 s lease the old primary, killed by its watchdog and fenced by a new
    fence-local process, may demote DRBD well after a lease time: still wait for it."""
    short = replace(cfg, cluster=replace(cfg.cluster, lease_ttl=0.5, renew_interval=0.1))
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0", peer_role="Primary")})
    rig = Rig(short, world)
    promote = asyncio.create_task(rig.takeover.promote(only_node_that_can_serve=False))
    await asyncio.sleep(1.5)  # the old primary's fence-local, longer than the lease
    assert not promote.done(), "gave up before the old primary could have fenced"
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0", peer_role="Secondary")})
    report = await asyncio.wait_for(promote, 10)
    assert report.outcome == "succeeded", report
    assert world.role("r0") == "Primary"


async def test_promote_gives_up_when_the_peer_stays_primary(cfg: Config, world: FakeWorld) -> None:
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0", peer_role="Primary")})
    rig = Rig(cfg, world)
    report = await rig.takeover.promote(only_node_that_can_serve=False)
    # "refused", not "failed": the peer did not demote, this node did nothing wrong.
    assert report.outcome == "refused"
    assert "peer is primary" in report.reason
    drbd = next(s for s in report.steps if s.name == "drbd")
    assert drbd.duration >= cfg.cluster.lease_ttl


async def test_promote_fences_the_peer_that_stays_primary_then_goes_on(
    cfg: Config, world: FakeWorld
) -> None:
    """With cluster.fence_command: after a lease time the peer is fenced, and the
    promotion goes on once its DRBD is Secondary."""
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0", peer_role="Primary")})
    rig = Rig(cfg, world)
    fenced: list[float] = []

    async def fence_peer() -> None:
        fenced.append(time.monotonic())
        world.set_drbd({"r0": drbd_resource(device="/dev/drbd0", peer_role="Secondary")})

    rig.takeover.fence_peer = fence_peer
    started = time.monotonic()
    report = await rig.takeover.promote(only_node_that_can_serve=False)
    assert report.outcome == "succeeded", report
    assert len(fenced) == 1 and fenced[0] - started >= cfg.cluster.lease_ttl
    assert world.role("r0") == "Primary"


async def test_a_rollback_keeps_drbd_primary_while_the_address_is_up(
    cfg: Config, world: FakeWorld
) -> None:
    rig = Rig(cfg, world)
    world.set_fault("fake-service start", exit=1, stderr="Job for asterisk.service failed")
    world.set_fault("ip addr del", exit=2, stderr="RTNETLINK answers: Operation not permitted")
    report = await rig.takeover.promote(only_node_that_can_serve=False)
    await rig.vip.wait_announced()
    assert report.outcome == "failed"
    assert world.addresses("eth0") and world.role("r0") == "Primary"
    assert report.undo_failed == ("vip_down", "drbd_down"), report
    assert "drbdadm secondary r0" not in world.mutating_calls()
