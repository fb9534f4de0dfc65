"""The CLI verbs against the simulator run as `failover-bot simulate rseries`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rseries.simulator import control
from tests.helpers import free_port, wait_for_sync

pytestmark = pytest.mark.timeout(60)
BOT = [sys.executable, "-m", "bot"]


@pytest.fixture
def simproc(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    cport = free_port()
    proc = subprocess.Popen(
        [
            *BOT,
            "simulate",
            "rseries",
            "--link-a",
            str(tmp_path / "a"),
            "--link-b",
            str(tmp_path / "b"),
            "--control-port",
            str(cport),
            "--log-file",
            str(tmp_path / "log"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_sync(lambda: (tmp_path / "b").exists() or proc.poll() is not None, 10, "links")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        yield tmp_path, cport
    finally:
        proc.terminate()
        proc.wait(5)
    assert not (tmp_path / "a").exists()  # links removed on exit


def bot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BOT, *args], capture_output=True, text=True, timeout=20)


def test_status_route_mode_and_errors(simproc: tuple[Path, int]) -> None:
    d, cport = simproc
    port = str(d / "a")
    r = bot("rseries", "status", "--port", port, "--json")
    assert r.returncode == 0, r.stderr
    state = json.loads(r.stdout)
    assert {"active", "mode", "watchdog", "hb_a", "hb_b", "lock"} <= state.keys()
    assert state["active"] == "A" and state["lock"] is False
    r = bot("rseries", "route", "B", "--port", port)
    assert r.returncode == 0 and "active B" in r.stdout
    r = bot("rseries", "mode", "auto", "--port", str(d / "b"), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["mode"] == "auto"
    asyncio.run(control(cport, {"cmd": "lock"}))
    r = bot("rseries", "route", "A", "--port", port)
    assert r.returncode == 1
    assert "ERR 4 LOCKED" in r.stdout and "lock" in r.stderr
    asyncio.run(control(cport, {"cmd": "stall", "link": "a"}))
    r = bot("rseries", "status", "--port", port, "--timeout", "0.2")
    assert r.returncode == 2 and "no answer" in r.stderr
    log = [json.loads(x) for x in (d / "log").read_text().splitlines()]
    assert [x["active"] for x in log if x["event"] == "route"] == ["B"]


def test_link_problems_exit_2(tmp_path: Path) -> None:
    r = bot("rseries", "status", "--port", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "cannot open" in r.stderr
    r = bot("rseries", "status", "--port", f"socket://127.0.0.1:{free_port()}")
    assert r.returncode == 2
