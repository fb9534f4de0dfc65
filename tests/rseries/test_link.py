"""The driver against the simulator over real pseudo-terminals (and TCP)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import serial

from rseries.driver import RSeriesLink
from rseries.errors import ApplianceError, RSeriesLinkError, RSeriesTimeout, WriteRefused
from rseries.protocol import Notification
from rseries.simulator import Simulator, control
from tests.helpers import free_port, wait_for

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Simulator]:
    s = Simulator(
        links={"a": str(tmp_path / "a"), "b": str(tmp_path / "b")},
        control_port=0,
        log_path=str(tmp_path / "log.jsonl"),
    )
    await s.start()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def link_a(sim: Simulator, tmp_path: Path) -> AsyncIterator[RSeriesLink]:
    async with RSeriesLink(str(tmp_path / "a"), command_timeout=0.3) as link:
        assert link.connected
        await wait_for(lambda: link.state is not None, 2, what="the first STATUS")
        yield link


@pytest.fixture
async def link_b(sim: Simulator, tmp_path: Path) -> AsyncIterator[RSeriesLink]:
    async with RSeriesLink(str(tmp_path / "b"), command_timeout=0.3) as link:
        await wait_for(lambda: link.state is not None, 2, what="the first STATUS")
        yield link


async def ctl(sim: Simulator, **cmd: object) -> dict[str, object]:
    assert sim.control_port is not None
    answer = await control(sim.control_port, cmd)
    assert answer["ok"], answer
    return answer


def collect(link: RSeriesLink, into: list[Notification]) -> object:
    async def run() -> None:
        async for n in link.notifications():
            into.append(n)

    return asyncio.create_task(run())


async def test_every_command(link_a: RSeriesLink, sim: Simulator) -> None:
    await link_a.ping()
    st = await link_a.status()
    assert (st.active, st.mode, st.watchdog, st.lock, st.spans) == ("A", "manual", None, False, 8)
    st = await link_a.route("B")
    assert st.active == "B" and sim.appliance.active == "B"
    await link_a.set_mode("auto")
    await link_a.set_watchdog(5)
    await link_a.heartbeat()
    assert link_a.state is not None
    assert (link_a.state.mode, link_a.state.watchdog, link_a.state.hb_a) == ("auto", 5, "OK")
    await link_a.set_watchdog(None)
    await link_a.set_mode("manual")
    st = await link_a.status()
    assert (st.mode, st.watchdog, st.hb_a, st.hb_b) == ("manual", None, "OFF", "OFF")


async def test_simulator_error_codes_on_the_wire(sim: Simulator, tmp_path: Path) -> None:
    def talk() -> list[bytes]:
        port = serial.serial_for_url(str(tmp_path / "b"), timeout=2)
        try:
            port.write(b"JUMP\r\nROUTE C\r\nroute a\r\n" + b"P" * 300 + b"\r\nping\n")
            return [port.readline() for _ in range(5)]
        finally:
            port.close()

    lines = await asyncio.to_thread(talk)  # blocking pyserial: off the loop the simulator uses
    assert lines == [
        b"ERR 1 UNKNOWN COMMAND\r\n",
        b"ERR 2 BAD ARGUMENT\r\n",
        b"OK ACTIVE=A\r\n",
        b"ERR 5 LINE TOO LONG\r\n",
        b"OK PONG\r\n",
    ]


async def test_busy_is_retried_then_reported(link_a: RSeriesLink, link_b: RSeriesLink) -> None:
    link_b.busy_retry_for = 0.0
    await link_a.route("B")
    with pytest.raises(ApplianceError) as err:
        await link_b.route("A")  # within the 20 ms the relays take
    assert err.value.code == 3
    link_b.busy_retry_for = 2.0
    await link_a.route("A")
    assert (await link_b.route("B")).active == "B"


async def test_route_asks_right_before_each_write(link_a: RSeriesLink, link_b: RSeriesLink) -> None:
    """The lease is checked after the lock and between BUSY retries, not once before."""
    await link_a.route("B")
    asked: list[float] = []

    def lease_valid() -> bool:
        asked.append(time.monotonic())
        return len(asked) == 1  # valid for the first try only (it meets BUSY)

    with pytest.raises(WriteRefused):
        await link_b.route("A", may_write=lease_valid)  # within the 20 ms the relays take
    assert len(asked) == 2, "asked once per line about to be written"
    assert (await link_a.status()).active == "B", "the retry was written anyway"


async def test_front_panel_lock(link_a: RSeriesLink, sim: Simulator) -> None:
    await link_a.status()
    await ctl(sim, cmd="lock")
    await wait_for(
        lambda: link_a.state is not None and link_a.state.lock is True, 2, what="LOCK=ON"
    )
    with pytest.raises(ApplianceError, match="ERR 4 LOCKED") as err:
        await link_a.route("B")
    assert err.value.code == 4
    with pytest.raises(ApplianceError):
        await link_a.set_mode("auto")
    await ctl(sim, cmd="unlock")
    assert (await link_a.route("B")).active == "B"


async def test_notification_between_command_and_answer(
    link_a: RSeriesLink, link_b: RSeriesLink, sim: Simulator
) -> None:
    order: list[str] = []

    async def watch() -> None:
        async for n in link_a.notifications():
            order.append(f"note {n.active} {n.cause}")

    task = asyncio.create_task(watch())
    await ctl(sim, cmd="delay", link="a", seconds=0.15)
    seen = sim.commands["a"]
    status = asyncio.create_task(link_a.status())
    await wait_for(lambda: sim.commands["a"] > seen, 1, what="STATUS at the appliance")
    await link_b.route("B")  # its notification reaches link A while STATUS waits
    st = await status
    order.append(f"answer {st.active}")
    task.cancel()
    assert order == ["note B COMMAND", "answer A"]
    # The answer was taken before the ROUTE; the notification is newer and must win.
    assert sim.appliance.active == "B"
    assert link_a.state is not None and link_a.state.active == "B"


async def test_stall_timeout_resync_then_next_command(link_a: RSeriesLink, sim: Simulator) -> None:
    await ctl(sim, cmd="stall", link="a")
    with pytest.raises(RSeriesTimeout):
        await link_a.ping()
    assert not link_a.connected
    await ctl(sim, cmd="unstall", link="a")
    await ctl(sim, cmd="garbage", link="a", bytes="\x00\xffjunk OK ACT")  # half line of noise
    st = await link_a.status()
    assert st.active == "A" and link_a.connected


async def test_link_loss_is_noticed_at_once_and_reopened(sim: Simulator, tmp_path: Path) -> None:
    events: list[tuple[bool, str]] = []
    async with RSeriesLink(
        str(tmp_path / "a"), command_timeout=0.3, on_link=lambda up, why: events.append((up, why))
    ) as link:
        await wait_for(lambda: link.state is not None, 2, what="first STATUS")
        await ctl(sim, cmd="drop", link="a")
        await wait_for(lambda: not link.connected, 0.5, what="loss noticed")
        assert events[-1][0] is False
        with pytest.raises(RSeriesLinkError):
            await link.ping()
        await ctl(sim, cmd="restore", link="a")
        await wait_for(lambda: link.connected, 3, what="reopened")
        await link.ping()
        assert [up for up, _ in events] == [True, False, True]


async def test_tcp_link_loss_and_reconnect() -> None:
    pa, pb = free_port(), free_port()
    async with (
        Simulator(links={"a": pa, "b": pb}, control_port=0) as s,
        RSeriesLink(f"socket://127.0.0.1:{pa}", command_timeout=0.3) as link,
    ):
        assert (await link.route("B")).active == "B"
        await ctl(s, cmd="drop", link="a", seconds=0.2)
        await wait_for(lambda: not link.connected, 0.5, what="loss noticed")
        await wait_for(lambda: link.connected, 3, what="reopened")
        assert (await link.status()).active == "B"


async def test_port_is_exclusive(link_a: RSeriesLink, tmp_path: Path) -> None:
    second = RSeriesLink(str(tmp_path / "a"))
    await second.start()
    try:
        assert not second.connected
        assert second.last_error is not None and "in use by another process" in second.last_error
    finally:
        await second.close()
    await link_a.ping()  # the owner is undisturbed


async def test_auto_mode_watchdog_moves_spans(
    link_a: RSeriesLink, link_b: RSeriesLink, sim: Simulator, tmp_path: Path
) -> None:
    await link_a.set_mode("auto")
    await link_a.set_watchdog(1)
    a_alive = True
    notes: list[Notification] = []
    watcher = collect(link_b, notes)
    hb_a = asyncio.create_task(link_a.run_heartbeat(0.2, lambda: a_alive))
    hb_b = asyncio.create_task(link_b.run_heartbeat(0.2, lambda: True))
    try:
        await wait_for(lambda: sim.appliance.hb == {"A": "OK", "B": "OK"}, 2, what="both OK")
        assert sim.appliance.active == "A"
        a_alive = False
        await wait_for(lambda: any(n.cause == "WATCHDOG" for n in notes), 3, what="WATCHDOG")
    finally:
        for t in (hb_a, hb_b, watcher):
            t.cancel()
    moved = next(n for n in notes if n.cause == "WATCHDOG")
    assert moved.active == "B"
    assert link_b.state is not None and link_b.state.active == "B"
    logged = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    switch = [r for r in logged if r["event"] == "route" and r["cause"] == "WATCHDOG"]
    assert switch and switch[0]["active"] == "B"
    hb_lost = [r for r in logged if r["event"] == "hb" and r["host"] == "A" and r["hb"] == "LOST"]
    assert hb_lost[-1]["mono"] == switch[0]["mono"]


async def test_power_cycle_is_reported(link_a: RSeriesLink, sim: Simulator) -> None:
    await link_a.route("B")
    notes: list[Notification] = []
    watcher = collect(link_a, notes)
    await ctl(sim, cmd="power_cycle", off=0.1)
    await wait_for(lambda: any(n.cause == "POWERON" for n in notes), 2, what="POWERON")
    watcher.cancel()
    assert link_a.state is not None and link_a.state.active == "A"
    assert (await link_a.status()).active == "A"


async def test_a_route_sent_by_the_other_host_is_a_command_notification(
    link_a: RSeriesLink, sim: Simulator
) -> None:
    await link_a.status()
    notes: list[Notification] = []
    watcher = collect(link_a, notes)
    answer = await ctl(sim, cmd="route", link="b", host="B")
    assert answer["active"] == "B"
    await wait_for(lambda: any(n.cause == "COMMAND" for n in notes), 2, what="CAUSE=COMMAND")
    watcher.cancel()
    assert [(n.active, n.cause) for n in notes] == [("B", "COMMAND")]
    assert sim.control_port is not None
    refused = await control(sim.control_port, {"cmd": "route", "link": "b", "host": "C"})
    assert refused["ok"] is False and "A or B" in str(refused["error"])


async def test_a_close_that_lands_as_the_port_opens_still_ends(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The close cancels the link just after the port's open completed in its thread and
    before the link's task resumed: that cancellation must not be swallowed (it was, by
    ``asyncio.wait_for``, and the link then waited forever: the agent's stop and the
    benchmark hung)."""
    loop = asyncio.get_running_loop()
    link = RSeriesLink(str(tmp_path / "a"), command_timeout=0.3)
    real_run_in_executor = loop.run_in_executor

    def run_in_executor(executor: Any, func: Any, *args: Any) -> asyncio.Future[Any]:
        opening = real_run_in_executor(executor, func, *args)

        def cancel_two_turns_later(_: object) -> None:
            # Two loop turns: the open's result has reached the link's waiter, and the
            # link's task has not run yet.
            assert link._supervisor is not None
            loop.call_soon(loop.call_soon, link._supervisor.cancel)

        opening.add_done_callback(cancel_two_turns_later)
        return opening

    monkeypatch.setattr(loop, "run_in_executor", run_in_executor)
    starting = asyncio.ensure_future(link.start())
    await wait_for(lambda: link._supervisor is not None and link._supervisor.done(), 3, what="end")
    monkeypatch.undo()
    async with asyncio.timeout(3):
        await link.close()
    assert not link.connected
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
