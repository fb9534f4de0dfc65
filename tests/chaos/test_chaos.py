"""The short chaos runs ``make test`` includes: fixed seeds, the table printed.

The first (seed 76, 40 s) draws a switchover while the primary's ``drbdadm secondary``
fails, a replication link cut and an operator's clear-failed: faults today's product
survives (the full draw, ``make chaos``, also has the ones it does not yet); the
second is aimed at one fault, a switchover to a node whose DRBD promotion fails, and
its verdict must be PASS (someone serves within the liveness bound once the fault
has healed).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.cluster import have_tools
from harness.vip import netns_unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

SEED = int(os.environ.get("CHAOS_SEED") or 76)
SECONDS = float(os.environ.get("CHAOS_TEST_SECONDS") or 40)


def chaos(seed: int, seconds: float, *extra: str) -> subprocess.CompletedProcess[str]:
    reason = have_tools() or netns_unavailable()
    if reason:
        pytest.skip(reason)
    argv = ["--seconds", str(seconds), "--seed", str(seed), *extra]
    return subprocess.run(
        [sys.executable, "-m", "tests.chaos.run", *argv],
        capture_output=True,
        text=True,
        timeout=400,
    )


def table(result: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(line for line in result.stdout.splitlines() if line.startswith(("|", "  ")))


def test_short_chaos_run_loses_nothing_never_has_two_primaries_and_serves(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = chaos(SEED, SECONDS)
    with capsys.disabled():
        print(f"\nchaos run, CHAOS_SEED={SEED}, {SECONDS:g} s:\n{table(result)}")
    assert f"CHAOS_SEED={SEED}" in result.stdout
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "| verdict" in result.stdout and "PASS" in result.stdout


def test_a_switchover_to_a_failing_node_is_served_within_the_liveness_bound(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Seed 1 draws one switchover to the standby at +4.7 s, its `drbdadm primary`
    # failing for 6.6 s; 20 s after the run, a liveness breach is already visible.
    result = chaos(1, 20, "--kinds", "switchover_failing", "--recovery", "20")
    with capsys.disabled():
        print(f"\nchaos run, seed 1, switchover to a failing node:\n{table(result)}")
    if "| verdict" not in result.stdout:  # the run itself broke: not the fault named
        raise RuntimeError(result.stdout[-4000:] + result.stderr[-3000:])
    failures = [line for line in result.stdout.splitlines() if line.startswith("  FAIL:")]
    other = [f for f in failures if "liveness" not in f and "did not recover" not in f]
    if other:  # a verdict on anything but liveness is not the fault this test names
        raise RuntimeError("\n".join(other))
    assert result.returncode == 0 and not failures, "\n".join(failures)
