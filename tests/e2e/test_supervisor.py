"""The supervisor does what systemd does: notify socket, watchdog kill, stop-post, restart."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.lab.supervisor import child_pid, notify, parse_notify, read_log, supervisor_argv
from tests.helpers import wait_for_sync

ROOT = Path(__file__).resolve().parents[2]
# Scheduling slack on a loaded 2-core machine; still far below any watchdog period used.
MARGIN = 0.3

# A supervised program. It notes each start (pid and the environment it got) in
# starts.jsonl, then behaves as its mode says.
CHILD = r"""
import json, os, signal, socket, sys, time

mode, arg = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
here = os.path.dirname(os.path.abspath(__file__))

def notify(msg):
    path = os.environ["NOTIFY_SOCKET"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(msg.encode(), path)

def on_term(signum, frame):
    with open(os.path.join(here, "terminated"), "a") as f:
        f.write(f"{os.getpid()}\n")
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
with open(os.path.join(here, "starts.jsonl"), "a") as f:
    keys = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
    f.write(json.dumps({"pid": os.getpid(), **{k: os.environ.get(k) for k in keys}}) + "\n")
notify("READY=1\nSTATUS=serving")
started = time.monotonic()
while True:
    elapsed = time.monotonic() - started
    if mode == "exit" and elapsed >= arg:
        sys.exit(3)
    if mode == "exit0" and elapsed >= arg:
        sys.exit(0)
    if not (mode == "silent" and elapsed >= arg):
        notify("WATCHDOG=1")
    time.sleep(0.05)
"""

# Stop-post: record what the supervisor told it about the exit.
STOP_POST = r"""
import json, os, sys
with open(sys.argv[1], "a") as f:
    keys = ("SERVICE_RESULT", "EXIT_CODE", "EXIT_STATUS", "NOTIFY_SOCKET")
    f.write(json.dumps({k: os.environ.get(k) for k in keys}) + "\n")
"""


class Run:
    def __init__(self, tmp: Path, proc: subprocess.Popen[bytes], log: Path):
        self.tmp, self.proc, self.log = tmp, proc, log

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [r for r in read_log(self.log) if name is None or r["event"] == name]

    def wait_event(self, name: str, count: int = 1, within: float = 5.0) -> list[dict[str, Any]]:
        wait_for_sync(lambda: len(self.events(name)) >= count, within, f"{count} x {name}")
        return self.events(name)

    def lines(self, name: str) -> list[dict[str, Any]]:
        path = self.tmp / name
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "stop_post.py").write_text(STOP_POST)
    runs: list[Run] = []

    def start(mode: str, arg: float = 0.0, **kw: Any) -> Run:
        log = tmp_path / "supervisor.jsonl"
        kw.setdefault(
            "stop_post",
            [sys.executable, str(tmp_path / "stop_post.py"), str(tmp_path / "stop_post.jsonl")],
        )
        argv = supervisor_argv(
            [sys.executable, str(tmp_path / "child.py"), mode, str(arg)], log=log, **kw
        )
        proc = subprocess.Popen(argv, cwd=ROOT)
        run = Run(tmp_path, proc, log)
        runs.append(run)
        return run

    yield start
    for run in runs:
        pid = child_pid(run.log)
        if run.proc.poll() is None:
            run.proc.terminate()
            try:
                run.proc.wait(10)
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_child_gets_notify_socket_watchdog_usec_and_its_own_pid(supervise: Any) -> None:
    run = supervise("ping", watchdog_sec=1.0)
    run.wait_event("ready")
    run.wait_event("status")
    (start,) = run.lines("starts.jsonl")
    assert start["NOTIFY_SOCKET"] and Path(start["NOTIFY_SOCKET"]).is_socket()
    assert start["WATCHDOG_USEC"] == "1000000"
    assert start["WATCHDOG_PID"] == str(start["pid"])
    assert run.events("started")[0]["pid"] == start["pid"]
    assert run.events("status")[0]["status"] == "serving"
    run.wait_event("watchdog_ping", 3)
    assert child_pid(run.log) == start["pid"]


def test_failed_exit_runs_stop_post_then_restarts(supervise: Any) -> None:
    run = supervise("exit", 0.2, restart="on-failure", restart_sec=0.1, max_starts=2)
    run.proc.wait(10)
    exits = run.events("exited")
    assert [e["returncode"] for e in exits] == [3, 3]
    assert [e["result"] for e in exits] == ["exit-code", "exit-code"]
    posts = run.lines("stop_post.jsonl")
    assert (
        posts
        == [
            {
                "SERVICE_RESULT": "exit-code",
                "EXIT_CODE": "exited",
                "EXIT_STATUS": "3",
                "NOTIFY_SOCKET": None,
            }
        ]
        * 2
    )
    order = [
        r["event"]
        for r in run.events()
        if r["event"] in ("started", "exited", "stop_post", "restart")
    ]
    assert order == ["started", "exited", "stop_post", "restart", "started", "exited", "stop_post"]
    # Stop-post ran after the exit, and the restart only after stop-post.
    events = run.events()
    first_exit = next(r for r in events if r["event"] == "exited")
    first_post = next(r for r in events if r["event"] == "stop_post")
    restart = next(r for r in events if r["event"] == "restart")
    assert first_exit["mono"] <= first_post["mono"] <= restart["mono"]
    assert restart["mono"] - first_post["mono"] >= 0.1
    pids = [s["pid"] for s in run.lines("starts.jsonl")]
    assert len(set(pids)) == 2


def test_clean_exit_is_not_restarted_on_failure_but_is_with_always(supervise: Any) -> None:
    run = supervise("exit0", 0.1, restart="on-failure")
    assert run.proc.wait(10) == 0
    assert len(run.events("started")) == 1
    assert run.lines("stop_post.jsonl")[0]["SERVICE_RESULT"] == "success"


def test_silent_child_is_killed_within_watchdog_sec(supervise: Any) -> None:
    run = supervise("silent", 0.3, watchdog_sec=0.5, restart="on-failure", restart_sec=0.2)
    (timeout,) = run.wait_event("watchdog_timeout", within=5)
    last_ping = run.events("watchdog_ping")[-1]
    # systemd's rule: fire once WatchdogSec passed without a ping (a little scheduling slack).
    assert 0.5 <= timeout["mono"] - last_ping["mono"] < 0.5 + MARGIN
    exited = run.wait_event("exited")[0]
    assert exited.get("signal") == "SIGABRT" and exited["result"] == "watchdog", exited
    assert exited["mono"] - timeout["mono"] < 0.5
    run.wait_event("stop_post")
    assert run.lines("stop_post.jsonl")[0]["SERVICE_RESULT"] == "watchdog"
    run.wait_event("started", 2)


def test_sigstopped_child_is_killed_too(supervise: Any) -> None:
    run = supervise("ping", watchdog_sec=0.5, restart="no", timeout_abort_sec=2.0)
    run.wait_event("watchdog_ping", 2)
    pid = run.events("started")[0]["pid"]
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    assert run.proc.wait(10) == 0
    (exited,) = run.events("exited")
    # SIGCONT after SIGABRT delivers it: no need to wait for the SIGKILL 2 s later.
    assert exited["signal"] == "SIGABRT"
    assert exited["mono"] - stopped < 0.5 + MARGIN
    assert run.events("stop_post")[0]["ok"] is True
    assert run.events("kill") == []


def test_sigterm_stops_child_runs_stop_post_and_exits(supervise: Any) -> None:
    run = supervise("ping", watchdog_sec=1.0, restart="always")
    run.wait_event("ready")
    pid = run.events("started")[0]["pid"]
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(10) == 0
    assert (run.tmp / "terminated").read_text().split() == [str(pid)]
    names = [r["event"] for r in run.events()]
    assert names.index("stop_requested") < names.index("exited") < names.index("stop_post")
    assert "restart" not in names and names[-1] == "supervisor_exit"
    # The child handled SIGTERM and exited 0: a clean stop.
    assert run.events("exited")[0]["returncode"] == 0
    assert run.events("exited")[0]["result"] == "success"


def test_stuck_stop_post_is_killed_after_its_timeout(supervise: Any, tmp_path: Path) -> None:
    run = supervise(
        "exit0",
        0.0,
        restart="no",
        stop_post=[sys.executable, "-c", "import time; time.sleep(30)"],
        stop_post_timeout=0.3,
    )
    assert run.proc.wait(10) == 0
    (post,) = run.events("stop_post")
    assert post["timed_out"] is True and post["ok"] is False
    assert 0.3 <= post["duration"] < 2.0


def test_notifications_from_other_processes_are_ignored(supervise: Any) -> None:
    run = supervise("silent", 0.0, watchdog_sec=0.6, restart="no")
    (ready,) = run.wait_event("ready")
    sock = run.lines("starts.jsonl")[0]["NOTIFY_SOCKET"]
    # Sent by this test process, not the main pid: must not keep a silent child alive.
    for _ in range(3):
        notify("WATCHDOG=1", sock)
    (timeout,) = run.wait_event("watchdog_timeout")
    assert timeout["mono"] - ready["mono"] < 0.6 + MARGIN
    assert len(run.events("notify_ignored")) == 3
    assert run.events("watchdog_ping") == []


def test_parse_notify() -> None:
    assert parse_notify(b"READY=1\nSTATUS=a=b\ngarbage\n=x\n") == {"READY": "1", "STATUS": "a=b"}


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for bad in ([], ["--watchdog-sec", "-1", "--", "true"]):
        result = subprocess.run(
            [sys.executable, "-m", "bot.lab.supervisor", *bad],
            cwd=ROOT,
            capture_output=True,
        )
        assert result.returncode == 2, result
