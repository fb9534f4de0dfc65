"""The fencer on the real fence sequence and the fake commands: complete, or still fencing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bot.actions.asterisk import AsteriskService
from bot.actions.drbd import Drbd
from bot.actions.takeover import StepTiming, Takeover, TakeoverReport
from bot.actions.vip import Vip
from bot.agent.fencer import Fencer
from bot.agent.jobs import Jobs
from bot.config import Config, parse_config
from bot.metrics import Metrics
from harness.fakes import FakeWorld, drbd_resource
from tests.actions.helpers import make_config, takeover_sections
from tests.helpers import node_config_text, wait_for

MOUNT = "/srv/pbx"
ESCALATION = """
[fence]
escalate_after = "300ms"
escalate_command = ["fake-service", "start", "reboot"]
"""


class Rig:
    def __init__(self, cfg: Config) -> None:
        assert cfg.drbd and cfg.vip
        self.events: list[tuple[str, str]] = []
        self.jobs = Jobs(on_done=lambda kind: None)
        self.takeover = Takeover(
            cfg,
            drbd=Drbd(cfg.drbd),
            vip=Vip(cfg.vip),
            asterisk=AsteriskService(cfg.asterisk),
            pstn=None,
            ami=None,
            lease_valid=lambda: True,
        )
        self.fencer = Fencer(
            self.takeover,
            cfg.fence,
            jobs=self.jobs,
            metrics=Metrics.for_config(cfg, registry=CollectorRegistry()),
            events=self.event,
            retry_interval=0.05,
        )

    def event(self, kind: str, message: str, **_: Any) -> None:
        self.events.append((kind, message))

    def kinds(self) -> list[str]:
        """The events, less ``fence_overrun`` (it says how fast this machine ran the fakes;
        the test of its own checks it)."""
        return [k for k, _ in self.events if k != "fence_overrun"]


async def primary_with_busy_mount(world: FakeWorld, cfg: Config) -> Rig:
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0")})
    rig = Rig(cfg)
    assert cfg.drbd is not None
    await Drbd(cfg.drbd).promote()
    world.set_busy(MOUNT)
    world.set_fault("fuser", exit=1, stderr="fuser: cannot end a process in D state")
    return rig


async def test_a_failed_step_is_retried_until_done_and_never_reported_done_before(
    tmp_path: Path, world: FakeWorld
) -> None:
    rig = await primary_with_busy_mount(world, make_config(tmp_path))
    task = asyncio.create_task(rig.fencer.fence("lease_expiring", "lease ran out"))
    await wait_for(lambda: rig.fencer.incomplete, 5, what="fence incomplete")
    await wait_for(lambda: len(world.calls("fuser")) >= 2, 5, what="escalated retries")
    assert not task.done()
    assert world.role("r0") == "Primary"
    assert "held open" in rig.fencer.failing or "busy" in rig.fencer.failing
    assert rig.kinds() == ["fence_incomplete"]  # said once, and never "fenced"
    world.clear_faults()  # the users can be ended now
    assert await asyncio.wait_for(task, 10) is True
    assert world.role("r0") == "Secondary" and world.mounts == {}
    assert not rig.fencer.incomplete and rig.fencer.failing == ""
    assert rig.kinds() == ["fence_incomplete", "fence_complete", "self_fence"]


async def test_escalate_command_runs_once_after_escalate_after(
    tmp_path: Path, world: FakeWorld
) -> None:
    rig = await primary_with_busy_mount(world, make_config(tmp_path, extra=ESCALATION))
    task = asyncio.create_task(rig.fencer.fence("lease_taken", "lease taken by b"))
    try:
        await wait_for(lambda: rig.fencer.incomplete, 5, what="fence incomplete")
        assert not any(c["argv"] == ["start", "reboot"] for c in world.calls("fake-service"))
        await wait_for(lambda: world.running("reboot"), 5, what="escalate_command")
        since = rig.fencer.incomplete_since
        assert since is not None and rig.fencer.clock() - since >= 0.3
        await wait_for(lambda: len(world.calls("fuser")) >= 6, 10, what="more retries")
        starts = [c for c in world.calls("fake-service") if c["argv"] == ["start", "reboot"]]
        assert len(starts) == 1
        assert "fence_escalated" in rig.kinds() and "self_fence" not in rig.kinds()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_deadline_returns_false_while_incomplete(tmp_path: Path, world: FakeWorld) -> None:
    rig = await primary_with_busy_mount(world, make_config(tmp_path))
    deadline = rig.fencer.clock() + 0.3
    assert await rig.fencer.fence("stopped", "stopping", deadline=deadline) is False
    assert rig.fencer.incomplete and "self_fence" not in rig.kinds()


async def test_running_service_jobs_are_cancelled_before_the_first_step(
    tmp_path: Path, world: FakeWorld
) -> None:
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0")})
    rig = Rig(make_config(tmp_path))
    order: list[str] = []

    async def restart() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            order.append("restart cancelled")
            order.append(f"calls before: {len(world.calls('fake-service'))}")

    job = rig.jobs.start("restart_asterisk", restart())
    other = rig.jobs.start("set_failed", asyncio.sleep(60))
    await asyncio.sleep(0)
    assert await rig.fencer.fence("other", "test") is True
    assert job.cancelled() and order == ["restart cancelled", "calls before: 0"]
    assert not other.done()  # bus writes are not services: they go on
    await rig.jobs.cancel()
    assert other.cancelled()


async def test_every_step_runs_again_on_a_second_fence(tmp_path: Path, world: FakeWorld) -> None:
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0")})
    rig = Rig(make_config(tmp_path))
    assert await rig.fencer.fence("other", "first") is True
    before = len(world.calls("fake-service"))
    assert await rig.fencer.fence("other", "second") is True
    assert len(world.calls("fake-service")) > before, "the second fence skipped its steps"


def roomy_config(tmp_path: Path) -> Config:
    """A fence budget that a busy machine's fakes keep: the tests that use it are about
    what a fence announces, not how fast it runs."""
    sections = takeover_sections(tmp_path, fence_budget="1500ms")
    sections["cluster"]["lease_ttl"] = "6s"
    return parse_config(node_config_text(**sections), tmp_path)


def self_fences(rig: Rig, reason: str) -> float:
    return rig.fencer.metrics.self_fences.labels(reason=reason)._value.get()


async def test_a_second_fence_with_no_service_started_since_is_a_check(
    tmp_path: Path, world: FakeWorld
) -> None:
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0")})
    rig = Rig(roomy_config(tmp_path))
    # The renewal and the HA step both fence one lost lease: one self-fence.
    assert await rig.fencer.fence("lease_expiring", "renewal failed")
    assert await rig.fencer.fence("lease_expiring", "lease lost")
    assert rig.kinds() == ["self_fence", "fence_checked"]
    assert self_fences(rig, "lease_expiring") == 1
    # A service job started since: the next fence is a new self-fence.
    await rig.jobs.start("promote", asyncio.sleep(0))
    assert await rig.fencer.fence("lease_expiring", "lease lost again")
    assert rig.kinds() == ["self_fence", "fence_checked", "self_fence"]
    assert self_fences(rig, "lease_expiring") == 2


async def test_the_check_after_a_hand_over_is_not_announced(
    tmp_path: Path, world: FakeWorld
) -> None:
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0")})
    rig = Rig(roomy_config(tmp_path))
    assert await rig.fencer.fence("stopped", "the bot is stopping", announce=False)
    assert rig.kinds() == ["fence_checked"]
    assert self_fences(rig, "stopped") == 0


async def test_finish_lets_event_writes_end_and_cancels_the_hung_ones() -> None:
    jobs = Jobs(on_done=lambda kind: None)
    written: list[str] = []

    async def write(text: str, hang: bool) -> None:
        if hang:
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        written.append(text)

    quick = jobs.start("event-1", write("handed over", hang=False))
    hung = jobs.start("event-2", write("never", hang=True))
    other = jobs.start("promote", asyncio.Event().wait())
    await jobs.finish("event-", within=0.2)
    assert written == ["handed over"] and quick.done() and not quick.cancelled()
    assert hung.cancelled()
    assert not other.done()  # only the event writes
    other.cancel()
    await asyncio.gather(other, return_exceptions=True)


class TimedFence:
    """The fence sequence as the fencer sees it, taking ``took`` seconds of a fake clock."""

    def __init__(self, cfg: Config, clock: list[float], took: list[float]) -> None:
        self.cfg = cfg
        self.clock = clock
        self.took = took

    async def fence(self, *, escalate: bool = False) -> TakeoverReport:
        took = self.took.pop(0)
        start = self.clock[0]
        self.clock[0] += took
        step = StepTiming("fence_asterisk", start, took, took < 5, "killed")
        return TakeoverReport("succeeded" if step.ok else "failed", [step], "")


def timed_fencer(cfg: Config, took: list[float]) -> tuple[Fencer, list[tuple[str, str]]]:
    now = [100.0]
    events: list[tuple[str, str]] = []
    fencer = Fencer(
        TimedFence(cfg, now, took),  # type: ignore[arg-type]
        cfg.fence,
        jobs=Jobs(on_done=lambda kind: None),
        metrics=Metrics.for_config(cfg, registry=CollectorRegistry()),
        events=lambda kind, message, **_: events.append((kind, message)),
        clock=lambda: now[0],
        retry_interval=0.0,
    )
    return fencer, events


def overruns(fencer: Fencer, reason: str) -> float:
    return fencer.metrics.fence_overruns.labels(reason=reason)._value.get()


async def test_a_fence_that_outlasts_its_budget_is_counted_and_alerted(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)  # fence_budget 0.5 s
    fencer, events = timed_fencer(cfg, [0.4, 0.817])
    assert await fencer.fence("lease_expiring", "in time")
    assert [k for k, _ in events] == ["self_fence"]
    assert overruns(fencer, "lease_expiring") == 0
    await fencer.jobs.start("promote", asyncio.sleep(0))  # a new fence, not a check
    assert await fencer.fence("lease_expiring", "late")
    assert [k for k, _ in events] == ["self_fence", "fence_overrun", "self_fence"]
    message = events[1][1]
    assert "took 0.817 s against cluster.fence_budget 0.5 s" in message, message
    assert "slowest fence_asterisk 0.817 s" in message
    assert overruns(fencer, "lease_expiring") == 1


async def test_an_incomplete_fence_is_counted_as_an_overrun(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    fencer, events = timed_fencer(cfg, [9.0, 0.3])  # fails once, then done
    assert await fencer.fence("lease_taken", "taken")
    kinds = [k for k, _ in events]
    assert kinds == ["fence_incomplete", "fence_overrun", "fence_complete", "self_fence"], kinds
    assert "took 9.300 s" in events[1][1] and "after 1 retries" in events[1][1]
    assert overruns(fencer, "lease_taken") == 1


async def test_a_check_again_is_no_overrun(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    fencer, events = timed_fencer(cfg, [0.3, 0.9])
    assert await fencer.fence("lease_expiring", "renewal failed")
    assert await fencer.fence("lease_expiring", "lease lost")  # nothing started since
    assert [k for k, _ in events] == ["self_fence", "fence_checked"]
    assert overruns(fencer, "lease_expiring") == 0
