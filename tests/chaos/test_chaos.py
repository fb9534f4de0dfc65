"""The short chaos run ``make test`` includes: fixed seed, the table printed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.cluster import have_tools
from harness.vip import netns_unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

SEED = int(os.environ.get("CHAOS_SEED") or 14)
SECONDS = float(os.environ.get("CHAOS_TEST_SECONDS") or 120)


def test_short_chaos_run_loses_nothing_and_never_has_two_primaries(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reason = have_tools() or netns_unavailable()
    if reason:
        pytest.skip(reason)
    result = subprocess.run(
        [sys.executable, "-m", "tests.chaos.run", "--seconds", str(SECONDS), "--seed", str(SEED)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    with capsys.disabled():
        print(f"\nchaos run, CHAOS_SEED={SEED}, {SECONDS:g} s:")
        print(
            "\n".join(line for line in result.stdout.splitlines() if line.startswith(("|", "  ")))
        )
    assert f"CHAOS_SEED={SEED}" in result.stdout
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "| verdict" in result.stdout and "PASS" in result.stdout
