"""A certain death needs no grace: the health monitor checks Asterisk's process (the
configured status command) as soon as the AMI link closes, and a process found gone
makes the verdict unhealthy at once, although ``health.ami_grace`` is a minute here.
The link lost while the process still runs is ambiguous: the grace is waited.

Real parts: the simulated Asterisk as a daemon (its own process, pidfile and AMI
port), the status command the lab configures for it, the AMI client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ami.client import AmiClient
from ami.simulator import AsteriskSimulator, control
from bot.actions.asterisk import AsteriskService
from bot.config import Config, parse_config
from bot.health import STATUS_DISAGREES
from bot.healthmon import HealthMonitor
from bot.lab.cluster import read_pidfile
from bot.metrics import Metrics
from tests.ami.conftest import SECRET
from tests.helpers import free_port, node_config_text, wait_for

BOT = [sys.executable, "-m", "bot", "simulate"]
GONE = "Asterisk process gone (status check) and the AMI link closed"


@dataclass
class SimAsterisk:
    pid: int
    control_port: int
    cfg: Config


@pytest.fixture
def asterisk(tmp_path: Path) -> Iterator[SimAsterisk]:
    port, cport = free_port(), free_port()
    secret = tmp_path / "ami.secret"
    secret.write_text(SECRET + "\n")
    pidfile = tmp_path / "asterisk.pid"
    start = [*BOT, "asterisk", "--port", str(port), "--secret-file", str(secret)]
    start += ["--control-port", str(cport), "--daemon", "--pidfile", str(pidfile)]
    cfg = parse_config(
        node_config_text(
            cluster={"name": "lab"},
            ami={
                "port": port,
                "secret_file": str(secret),
                "ping_interval": "200ms",
                "ping_timeout": "200ms",
                "connect_timeout": "500ms",
            },
            health={"ami_grace": "60s"},
            asterisk={"status": [*BOT, "asterisk-status", "--pidfile", str(pidfile)]},
        )
    )
    stop = [*BOT, "asterisk-stop", "--pidfile", str(pidfile), "--kill"]
    try:
        subprocess.run(start, check=True, timeout=30)
        pid = read_pidfile(pidfile)
        assert pid is not None
        yield SimAsterisk(pid, cport, cfg)
    finally:
        subprocess.run(stop, timeout=30, check=False)


@contextlib.asynccontextmanager
async def monitoring(
    cfg: Config, checks: list[bool]
) -> AsyncIterator[tuple[HealthMonitor, AmiClient]]:
    """A primary's health monitor on a live AMI link, its process checks recorded."""
    service = AsteriskService(cfg.asterisk)

    async def process_check() -> bool:
        running = await service.running()
        checks.append(running)
        return running

    ami = AmiClient.from_config(cfg.ami)
    mon = HealthMonitor(cfg, ami, Metrics(CollectorRegistry()), process_check=process_check)
    await ami.start()
    task = asyncio.create_task(mon.run(lambda: None))
    try:
        await ami.wait_fully_booted(10)
        assert mon.verdict("primary", None).healthy
        # The observer's probe sees it run.
        began = mon.clock()
        mon.note_process(await service.running(), began)
        yield mon, ami
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ami.close()


async def test_a_killed_asterisk_is_unhealthy_at_once_not_after_the_grace(
    asterisk: SimAsterisk,
) -> None:
    checks: list[bool] = []
    async with monitoring(asterisk.cfg, checks) as (mon, _):
        os.kill(asterisk.pid, signal.SIGKILL)
        # ami_grace is 60 s: only the process rule can make it unhealthy within this wait.
        await wait_for(
            lambda: not mon.verdict("primary", None).healthy, 10, what="an unhealthy verdict"
        )
        assert mon.last.reasons == (GONE,)
        assert checks[-1] is False


async def test_the_link_lost_while_asterisk_runs_waits_the_grace(asterisk: SimAsterisk) -> None:
    checks: list[bool] = []
    async with monitoring(asterisk.cfg, checks) as (mon, ami):
        # Nothing answers any more and the sessions are cut: the process still runs.
        await control(asterisk.control_port, {"cmd": "stall"})
        await control(asterisk.control_port, {"cmd": "drop"})
        await wait_for(lambda: not ami.connected, 5, what="the AMI link to close")
        await wait_for(lambda: len(checks) >= 2, 10, what="the process checks after the loss")
        assert set(checks) == {True}
        verdict = mon.verdict("primary", None)
        assert verdict.healthy and verdict.reasons == ()
        assert not ami.connected


async def test_a_restart_in_flight_is_no_death() -> None:
    """The agent's own restart stops the process on purpose: a check begun before the
    new process was started does not count; one begun after it does."""
    sim = AsteriskSimulator(port=0, secret=SECRET, control_port=0)
    await sim.start()
    cfg = parse_config(
        node_config_text(
            cluster={"name": "lab"},
            ami={"port": sim.port, "ping_interval": "200ms", "ping_timeout": "200ms"},
            health={"ami_grace": "60s"},
        )
    )
    now = [1000.0]
    ami = AmiClient("127.0.0.1", sim.port, "failover", SECRET, clock=lambda: now[0])
    mon = HealthMonitor(cfg, ami, Metrics(CollectorRegistry()), clock=lambda: now[0])
    await ami.start()
    task = asyncio.create_task(mon.run(lambda: None))
    try:
        await ami.wait_fully_booted(10)
        assert mon.verdict("primary", None).healthy
        mon.note_process(True, now[0])  # the observer's probe sees it run
        now[0] += 10
        with mon.restarting():
            await sim.stop()  # the restart's stop
            await wait_for(lambda: not ami.connected, 5, what="the AMI link to close")
            now[0] += 0.1
            mon.note_process(False, now[0])
            assert mon.verdict("primary", None).healthy
            now[0] += 0.1
        assert mon.verdict("primary", None).healthy  # that check predates the new start
        now[0] += 0.1
        mon.note_process(True, now[0])  # the new one runs ...
        now[0] += 0.1
        mon.note_process(False, now[0])  # ... and is gone too
        assert mon.verdict("primary", None).reasons == (GONE,)
        mon.note_process(False, now[0] - 0.05)  # an older check's late answer changes nothing
        assert mon.verdict("primary", None).reasons == (GONE,)
        mon.note_process(True, now[0] + 0.05)  # a later check finds one running
        assert mon.verdict("primary", None).healthy
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ami.close()
        await sim.stop()


async def test_a_status_command_that_denies_a_live_asterisk_is_not_believed() -> None:
    """A status command that names the wrong unit says "not running" all along: said
    while the AMI link answers, it is not believed (and alerted) until it says
    "running"; a closed link then waits for the grace, as before."""
    sim = AsteriskSimulator(port=0, secret=SECRET, control_port=0)
    await sim.start()
    cfg = parse_config(
        node_config_text(
            cluster={"name": "lab"},
            ami={"port": sim.port, "ping_interval": "200ms", "ping_timeout": "200ms"},
        )
    )
    now = [1000.0]
    ami = AmiClient("127.0.0.1", sim.port, "failover", SECRET, clock=lambda: now[0])
    mon = HealthMonitor(cfg, ami, Metrics(CollectorRegistry()), clock=lambda: now[0])
    await ami.start()
    task = asyncio.create_task(mon.run(lambda: None))
    try:
        await ami.wait_fully_booted(10)
        assert mon.verdict("primary", None).healthy
        now[0] += 1
        mon.note_process(False, now[0])  # the link was up all through this check
        assert mon.verdict("primary", None).alerts == (STATUS_DISAGREES,)
        now[0] += 1
        await sim.stop()
        await wait_for(lambda: not ami.connected, 5, what="the AMI link to close")
        now[0] += 0.1
        mon.note_process(False, now[0])
        verdict = mon.verdict("primary", None)
        assert verdict.healthy and verdict.alerts == (STATUS_DISAGREES,)
        now[0] += 3.0  # health.ami_grace (3 s) since the link closed
        assert mon.verdict("primary", None).reasons == ("AMI link down for 3.1 s",)
        mon.note_process(True, now[0])  # fixed: it sees Asterisk run again
        now[0] += 0.1
        mon.note_process(False, now[0])
        assert mon.verdict("primary", None).reasons == (GONE,)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ami.close()
        await sim.stop()


async def test_a_crash_right_after_the_takeover_is_a_death_too() -> None:
    """The Asterisk dies right after serving began, while a probe's check is under way:
    no grace all the same (no earlier "running" is needed)."""
    sim = AsteriskSimulator(port=0, secret=SECRET, control_port=0)
    await sim.start()
    cfg = parse_config(
        node_config_text(
            cluster={"name": "lab"},
            ami={"port": sim.port, "ping_interval": "200ms", "ping_timeout": "200ms"},
            health={"ami_grace": "60s"},
        )
    )
    now = [1000.0]
    ami = AmiClient("127.0.0.1", sim.port, "failover", SECRET, clock=lambda: now[0])
    mon = HealthMonitor(cfg, ami, Metrics(CollectorRegistry()), clock=lambda: now[0])
    await ami.start()
    task = asyncio.create_task(mon.run(lambda: None))
    try:
        await ami.wait_fully_booted(10)
        assert mon.verdict("promoting", None).healthy
        now[0] += 0.1
        assert mon.verdict("primary", None).healthy  # serving begins
        now[0] += 0.1
        began = now[0]  # a probe's check begins while the link is up ...
        now[0] += 0.05
        await sim.stop()
        await wait_for(lambda: not ami.connected, 5, what="the AMI link to close")
        now[0] += 0.1
        mon.note_process(False, began)  # ... and answers once it has closed
        verdict = mon.verdict("primary", None)
        assert verdict.healthy and verdict.alerts == ()  # neither a death nor a denial
        now[0] += 0.1
        mon.note_process(False, now[0])  # the check begun after the loss
        assert mon.verdict("primary", None).reasons == (GONE,)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ami.close()
        await sim.stop()


async def test_the_shutdown_of_the_agents_own_restart_is_no_fault() -> None:
    """The agent's restart stops Asterisk cleanly: its Shutdown (Restart: False) is what
    was asked for, not "Asterisk shut down", during the restart or after it (it was said
    by the Asterisk the restart stopped); the new one then has its boot timeout."""
    sim = AsteriskSimulator(port=0, secret=SECRET, control_port=0)
    await sim.start()
    cfg = parse_config(
        node_config_text(
            cluster={"name": "lab"},
            ami={"port": sim.port, "ping_interval": "200ms", "ping_timeout": "200ms"},
        )
    )
    now = [1000.0]
    ami = AmiClient("127.0.0.1", sim.port, "failover", SECRET, clock=lambda: now[0])
    mon = HealthMonitor(cfg, ami, Metrics(CollectorRegistry()), clock=lambda: now[0])
    await ami.start()
    task = asyncio.create_task(mon.run(lambda: None))
    try:
        await ami.wait_fully_booted(10)
        assert mon.verdict("primary", None).healthy
        now[0] += 10
        with mon.restarting():
            now[0] += 0.1
            await sim.shutdown(restart=False)  # the restart's stop
            await wait_for(lambda: ami.last_shutdown is not None, 5, what="the Shutdown event")
            verdict = mon.verdict("primary", None)
            assert verdict.healthy, verdict.reasons
            now[0] += 0.1
        assert mon.verdict("primary", None).healthy  # the new Asterisk boots
        now[0] += 61.0  # asterisk.boot_timeout (60 s) since the restart began
        assert mon.verdict("primary", None).reasons == (
            "AMI link down for 61.1 s",
            "Asterisk not FullyBooted 61.2 s after start",
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await ami.close()
        await sim.stop()
