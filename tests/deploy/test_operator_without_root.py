"""The on-call verbs work for a member of the operators' group, without root.

As the guide installs it: the configuration directory 0750 root:GROUP, the Redis
password and the API token 0640 root:GROUP, every other secret (the cluster's
HMAC key, the AMI secret, the ARI password) 0600 root. A throwaway user in a
throwaway group runs status, status --watch, events, check, pause, resume,
cordon, uncordon and switchover against a running lab pair whose Redis needs
the password.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.lab.cluster import toml_dumps
from harness import tools
from tests.deploy.conftest import REPO
from tests.helpers import require_root

TIMEOUT = 60
# The test's virtualenv may live under root's home (pyenv): the operator runs the
# system's Python of the same version on this checkout and the virtualenv's packages,
# as the installed bot runs from /opt/failover-bot.
SYSTEM_PYTHON = Path("/usr/bin/python3")
PYVER = f"{sys.version_info[0]}.{sys.version_info[1]}"
SITE = Path(sys.prefix) / "lib" / f"python{PYVER}" / "site-packages"


@dataclass
class Operator:
    user: str
    config: Path
    cluster: Any
    primary: str

    @property
    def standby(self) -> str:
        return "b" if self.primary == "a" else "a"

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*argv), capture_output=True, text=True, timeout=TIMEOUT, cwd="/"
        )

    def argv(self, *argv: str) -> list[str]:
        return [
            "runuser", "-u", self.user, "--", "env", f"PYTHONPATH={REPO}:{SITE}",
            str(SYSTEM_PYTHON), "-m", "bot", *argv, "--config", str(self.config),
        ]  # fmt: skip


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def operator() -> Iterator[Operator]:
    if not require_root():
        pytest.skip("needs root (a throwaway user)")
    if reason := tools.missing("redis-server", "useradd", "groupadd", "runuser"):
        pytest.skip(reason)
    same = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if same.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip(f"{SYSTEM_PYTHON} is not Python {sys.version_info[0]}.{sys.version_info[1]}")
    # redis-py needs async_timeout below Python 3.11.3 (Debian 12 has 3.11.2).
    need = "import sys; sys.version_info >= (3, 11, 3) or __import__('async_timeout')"
    probe = [str(SYSTEM_PYTHON), "-c", need]
    if reason := tools.package_missing("python3-async-timeout"):
        pytest.skip(reason)
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    from harness.cluster import Cluster

    name = "fbop" + secrets.token_hex(3)
    _sh("groupadd", "--system", name)
    base = Path(tempfile.mkdtemp(prefix="fb-operator-"))
    cluster = None
    try:
        _sh("useradd", "--system", "--no-create-home", "--gid", name,
            "--shell", "/usr/sbin/nologin", name)  # fmt: skip
        base.chmod(0o755)  # the way to /etc/failover-bot: anyone may traverse
        etc = base / "etc-failover-bot"
        etc.mkdir()
        password = base / "lab" / "redis.password"
        password.parent.mkdir()
        password.write_text(secrets.token_hex(16) + "\n")
        password.chmod(0o600)
        cluster = Cluster(base / "lab", None, extra={"redis": {"password_file": str(password)}})
        cluster.redis.extra = ["--requirepass", password.read_text().strip()]
        cluster.start()
        primary = cluster.wait_primary(within=60)
        # The operator's copy of node a's configuration, as the guide lays it out.
        gid = int(subprocess.run(["getent", "group", name], capture_output=True, text=True,
                                 check=True).stdout.split(":")[2])  # fmt: skip
        os.chown(etc, 0, gid)
        etc.chmod(0o750)
        shared = {"redis.password": password, "api.token": cluster.dir / "api.token"}
        for target, source in shared.items():
            shutil.copy(source, etc / target)
            os.chown(etc / target, 0, gid)
            (etc / target).chmod(0o640)
        config = cluster.node_config(cluster.nodes["a"])
        config["redis"]["password_file"] = str(etc / "redis.password")
        config["api"]["token_file"] = str(etc / "api.token")
        node_toml = etc / "node.toml"
        node_toml.write_text(toml_dumps(config))
        node_toml.chmod(0o644)
        # Every other secret stays root's: the operator cannot read it.
        for secret in ("cluster.secret", "ami.secret", "ari.password"):
            assert (cluster.dir / secret).stat().st_mode & 0o077 == 0
        yield Operator(name, node_toml, cluster, primary)
    finally:
        if cluster is not None:
            cluster.stop()
        subprocess.run(["userdel", name], capture_output=True, timeout=30)
        subprocess.run(["groupdel", name], capture_output=True, timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def test_the_operator_cannot_read_the_root_only_secrets(operator: Operator) -> None:
    denied = subprocess.run(
        ["runuser", "-u", operator.user, "--", "cat", str(operator.cluster.dir / "cluster.secret")],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert denied.returncode != 0 and "Permission denied" in denied.stderr


def test_status_and_its_json(operator: Operator) -> None:
    done = operator.run("status")
    assert done.returncode == 0, done.stderr
    assert f"holder {operator.primary}" in done.stdout, done.stdout
    rows = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()[1:] if line}
    assert rows.get(operator.primary) == "primary", done.stdout
    assert rows.get(operator.standby) == "standby", done.stdout
    as_json = operator.run("status", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["holder"] == operator.primary


def test_status_watch_refreshes_until_interrupted(operator: Operator) -> None:
    proc = subprocess.Popen(
        operator.argv("status", "--watch", "0.2"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd="/", start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        frames = 0
        for line in proc.stdout:  # bounded: each frame ends with this line, 5 per second
            if line.startswith("-- ") and "Ctrl-C to stop" in line:
                frames += 1
                if frames == 2:
                    break
        assert frames == 2, proc.stderr.read() if proc.stderr else ""
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the group
        assert proc.wait(TIMEOUT) in (0, 130)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_events_and_the_monitoring_check(operator: Operator) -> None:
    events = operator.run("events", "--count", "20", "--json")
    assert events.returncode == 0, events.stderr
    kinds = [json.loads(line)["kind"] for line in events.stdout.splitlines() if line.strip()]
    assert "failover_completed" in kinds, kinds
    check = operator.run("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith(f"FAILOVER-BOT OK - {operator.primary} primary"), check.stdout


def test_pause_resume_cordon_uncordon(operator: Operator) -> None:
    for verb, field, value in (("pause", "paused", True), ("resume", "paused", False)):
        done = operator.run(verb)
        assert done.returncode == 0, f"{verb}: {done.stderr}"
        status = json.loads(operator.run("status", "--json").stdout)
        assert status[field] is value, (verb, status[field])
    for verb, value in (("cordon", True), ("uncordon", False)):
        done = operator.run(verb, operator.standby)
        assert done.returncode == 0, f"{verb}: {done.stderr}"
        status = json.loads(operator.run("status", "--json").stdout)
        node = next(n for n in status["nodes"] if n["id"] == operator.standby)
        assert node["cordoned"] is value, (verb, node)


def test_switchover_as_the_operator(operator: Operator) -> None:
    target = operator.standby
    operator.cluster.wait_role(target, "standby", within=30)
    done = operator.run("switchover", "--to", target, "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(operator.run("status", "--json").stdout)
    assert status["holder"] == target, status
