"""`failover-bot demo --once` plays the whole script and cleans up after itself."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from harness.cluster import have_tools

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def test_demo_once_prints_the_timeline_and_cleans_up() -> None:
    reason = have_tools()
    if reason:
        pytest.skip(reason)
    before = _namespaces()
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--once"],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    match = re.match(r"failover time: ([0-9.]+) s from the primary's death", lines[-1])
    assert match, lines[-5:]
    assert 0 < float(match.group(1)) < 15
    assert any("step fully_booted ok" in line for line in lines)
    assert any("took the lease" in line for line in lines)
    assert "cleaned up." in lines
    assert _namespaces() <= before, "the demo left network namespaces behind"
    leftovers = subprocess.run(
        ["pgrep", "-f", "failover-demo-"], capture_output=True, text=True, timeout=10
    )
    assert leftovers.stdout.strip() == "", "the demo left processes behind"
