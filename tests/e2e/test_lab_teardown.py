"""A lab cluster's stop leaves nothing running, also a process no pidfile names yet (an
Asterisk a bot was starting as the test's teardown killed it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bot.lab.cluster import Cluster, pid_alive


def test_stop_ends_a_process_that_names_the_cluster_but_no_pidfile(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster", None)
    in_flight = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", str(cluster.dir / "a" / "x.pid")],
        start_new_session=True,  # as a daemonising start: no child of the bot any more
    )
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", str(tmp_path / "elsewhere")],
        start_new_session=True,
    )
    try:
        cluster.stop(hand_over=False)
        in_flight.wait(10)
        assert not pid_alive(in_flight.pid)
        assert pid_alive(other.pid), "stop killed a process of another cluster"
    finally:
        for proc in (in_flight, other):
            proc.kill()
            proc.wait(10)
