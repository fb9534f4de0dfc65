"""The guide's per-pair Redis user (ACL SETUSER line of "Several pairs on one
Redis/Sentinel"), as written there, carries a real lab pair: it takes the lease, and
the user can touch nothing of another pair's keys."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.test_guide_asterisk import guide_block


def test_the_guides_acl_user_runs_a_pair_and_nothing_else(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli needed")
    from harness.cluster import Cluster

    line = guide_block("ACL SETUSER").strip()
    assert line.startswith("ACL SETUSER pbx2 ")
    # The lab's cluster is named "lab": the same line for it, with a password of its own.
    acl = line.replace("pbx2", "lab").replace("PAIR-PASSWORD", "lab-pair-pw").split()[2:]
    password = tmp_path / "pair.password"
    password.write_text("lab-pair-pw\n")
    password.chmod(0o600)
    redis = {"username": "lab", "password_file": str(password)}
    cluster = Cluster(tmp_path / "lab", None, extra={"redis": redis})
    # The default user (no password, loopback only) is left for the test's own scan.
    cluster.redis.extra = ["--user", *acl]
    try:
        cluster.start()
        cluster.wait_primary(within=60)
        port = str(cluster.redis.port)
        as_pair = [
            "redis-cli",
            "-p",
            port,
            "--user",
            "lab",
            "--pass",
            "lab-pair-pw",
            "--no-auth-warning",
        ]
        other = subprocess.run([*as_pair, "SET", "failover:{pbx1}:leader", "x"],
                               capture_output=True, text=True, timeout=10)  # fmt: skip
        assert "NOPERM" in other.stdout + other.stderr, other
        flush = subprocess.run([*as_pair, "FLUSHALL"], capture_output=True, text=True, timeout=10)
        assert "NOPERM" in flush.stdout + flush.stderr, flush
        keys = subprocess.run(["redis-cli", "-p", port, "--scan", "--pattern", "failover:*"],
                              capture_output=True, text=True, timeout=10)  # fmt: skip
        assert keys.stdout and all(
            re.match(r"failover:\{lab\}:", k) for k in keys.stdout.split()
        ), keys.stdout
    finally:
        cluster.stop()
