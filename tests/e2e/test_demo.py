"""`failover-bot demo` plays the whole script and cleans up after itself, however it ends:
``--once``, Ctrl-C, SIGTERM, SIGHUP (the terminal closed) or its output going away
(`make demo | head`, a `tee` ended by Ctrl-C)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import have_tools
from tests.helpers import wait_for_sync

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

NAMESPACES = re.compile(r"inside network namespaces (.+)$")


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """The demo's TMPDIR: its working directory, and so every process it starts, names
    this path, which no other demo on the machine does."""
    reason = have_tools()
    if reason:
        pytest.skip(reason)
    yield tmp_path
    leftover = _processes_under(tmp_path)
    for pid in leftover:  # never leave them to the next test, whatever this one found
        os.kill(pid, signal.SIGKILL)


def _processes_under(marker: Path) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", str(marker)], capture_output=True, text=True, timeout=10
    ).stdout
    return [int(pid) for pid in out.split()]


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _demo(run_dir: Path, *args: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "demo", *args],
        env={**os.environ, "TMPDIR": str(run_dir)},
        text=True,
        **popen,  # type: ignore[call-overload]
    )


def _assert_cleaned_up(run_dir: Path, namespaces: set[str]) -> None:
    assert _processes_under(run_dir) == [], "the demo left processes behind"
    assert not namespaces & _namespaces(), "the demo left network namespaces behind"
    assert not list(run_dir.glob("failover-demo-*")), "the demo left its directory behind"


def test_demo_once_prints_the_timeline_and_cleans_up(run_dir: Path) -> None:
    proc = _demo(run_dir, "--once", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = proc.communicate(timeout=150)
    assert proc.returncode == 0, stdout + stderr
    lines = stdout.strip().splitlines()
    match = re.match(r"failover time: ([0-9.]+) s from the primary's death", lines[-1])
    assert match, lines[-5:]
    assert 0 < float(match.group(1)) < 15
    assert any("step fully_booted ok" in line for line in lines)
    assert any("took the lease" in line for line in lines)
    assert "cleaned up." in lines
    names = {n for line in lines if (m := NAMESPACES.search(line)) for n in m.group(1).split(", ")}
    assert len(names) == 4, lines[:8]
    _assert_cleaned_up(run_dir, names)


def _started(proc: subprocess.Popen[str]) -> set[str]:
    """Read the demo's output until its cluster is up; the namespaces it named."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := NAMESPACES.search(line):
            return set(m.group(1).strip().split(", "))
    pytest.fail(f"the demo ended before its cluster was up (exit {proc.wait(30)})")


@pytest.mark.parametrize(
    "ending", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name
)
def test_a_signal_ends_the_demo_and_everything_it_started(
    run_dir: Path, ending: signal.Signals
) -> None:
    proc = _demo(run_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    names = _started(proc)
    wait_for_sync(lambda: len(_processes_under(run_dir)) >= 5, 30, "the cluster's processes")
    proc.send_signal(ending)
    rest, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, rest
    assert "cleaned up." in rest
    _assert_cleaned_up(run_dir, names)


def test_a_closed_output_ends_the_demo_and_everything_it_started(run_dir: Path) -> None:
    proc = _demo(run_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    names = _started(proc)
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone: the demo's next line meets a broken pipe
    assert proc.wait(timeout=90) == 0
    assert proc.stderr is not None
    assert "Traceback" not in proc.stderr.read()
    _assert_cleaned_up(run_dir, names)
