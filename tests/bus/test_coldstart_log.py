"""What a starting bot logs about its data: recorded epochs and DRBD's disk states."""

from __future__ import annotations

import json
from pathlib import Path

from bot.coldstart import recorded_epochs, summary, verdict
from harness import tools


def test_the_disk_states_say_whose_data_is_newer() -> None:
    assert "this node has the newest data (peer Outdated)" in verdict({"pbx": "UpToDate/Outdated"})
    behind = verdict({"pbx": "Outdated/UpToDate"})
    assert "the peer's data is newer" in behind and "resynchronised" in behind
    assert "both disks UpToDate" in verdict({"pbx": "UpToDate/UpToDate"})
    alone = verdict({"pbx": "UpToDate/DUnknown"})
    assert "cannot compare" in alone and "start it first" in alone
    assert "disk state unknown" in verdict({"pbx": ""})


def test_the_epochs_come_from_the_state_file_or_its_backup(tmp_path: Path) -> None:
    assert recorded_epochs(tmp_path) == (None, None)
    (tmp_path / "state.json").write_text("{corrupt")
    (tmp_path / "state.json.bak").write_text(json.dumps({"highest_epoch": 12, "held_epoch": 12}))
    assert recorded_epochs(tmp_path) == (12, 12)
    line = summary(12, None, {"pbx": "UpToDate/Outdated"})
    assert line.startswith("data at start: highest lease epoch recorded 12, none held; pbx: ")


def test_a_lab_bot_logs_its_data_at_start(tmp_path: Path) -> None:

    import pytest

    if reason := tools.missing("redis-server"):
        pytest.skip(reason)
    from harness.cluster import Cluster

    cluster = Cluster(tmp_path / "lab", None)
    try:
        cluster.start()
        cluster.wait_primary(within=60)
        logs = cluster.logs_tail(400)
    finally:
        cluster.stop()
    lines = [line for line in logs.splitlines() if "data at start:" in line]
    assert len(lines) >= 2, logs[-3000:]
    # A fresh lab: no state file yet, the fake DRBD's disks both UpToDate.
    assert all(
        "data at start: no readable state file; pbx: both disks UpToDate" in line for line in lines
    ), lines
