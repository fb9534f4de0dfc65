"""The nemesis's parts that need no cluster: the schedule and the command gates."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.fakes import set_fault_atomic, write_gate
from tests.chaos.nemesis import KINDS, schedule


def test_the_schedule_draws_operator_and_command_faults() -> None:
    drawn = {f.kind for seed in range(40) for f in schedule(seed, 300)}
    for kind in ("pause", "cordon", "clear_failed", "bot_restart_paused", "switchover_failing"):
        assert kind in drawn
    for kind in ("vip_del_fail", "drbd_secondary_fail", "kill_hang"):
        assert kind in drawn
    assert drawn == set(KINDS)


def test_a_schedule_can_be_aimed_at_some_kinds() -> None:
    faults = schedule(3, 120, only=["switchover_failing"])
    assert faults and {f.kind for f in faults} == {"switchover_failing"}
    with pytest.raises(ValueError, match="unknown fault kinds: nope"):
        schedule(3, 120, only=["nope"])


def test_a_gate_runs_the_real_command_unless_faults_json_breaks_it(tmp_path: Path) -> None:
    real = shutil.which("ip")
    if real is None:
        pytest.skip("no ip command")
    gate = write_gate(tmp_path / "bin" / "ip", "ip", [real])
    env = {**os.environ, "FAKE_STATE_DIR": str(tmp_path)}

    def ip(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(gate), *argv], env=env, capture_output=True, text=True)

    assert ip("-o", "addr", "show", "dev", "lo").returncode == 0
    refused = "RTNETLINK answers: Operation not permitted"
    set_fault_atomic(tmp_path, "ip addr del", {"exit": 2, "stderr": refused})
    # A device that does not exist: the real command changes nothing here.
    broken = ip("addr", "del", "192.0.2.7/32", "dev", "nosuchdev0")
    assert (broken.returncode, broken.stderr.strip()) == (2, refused)
    shown = ip("-o", "addr", "show", "dev", "lo")  # other subcommands still run
    assert shown.returncode == 0 and "127.0.0.1" in shown.stdout
    set_fault_atomic(tmp_path, "ip addr del", None)
    assert (tmp_path / "faults.json").read_text() == "{}"
    # Healed: the real command answers again (here: there is no such device).
    healed = ip("addr", "del", "192.0.2.7/32", "dev", "nosuchdev0")
    assert healed.returncode != 0 and "nosuchdev0" in healed.stderr
