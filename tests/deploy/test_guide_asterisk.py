"""The real Asterisk 22 starts from exactly the files the guide's step 5 installs.

The guide's own command block is run (its paths moved under a temporary
directory), nothing else is added to /etc/asterisk: no `make samples`, no lab
files. Asterisk runs in a network namespace of its own, so the shipped ports
(AMI 5038, HTTP 8088 on 127.0.0.1) are its own loopback's. The guide's check
of step 5 then runs there too: `failover-bot test-call` answers, and the ARI
user the examples name can log in.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.lab.asterisk import module_dir
from tests.deploy.conftest import REPO
from tests.helpers import require_asterisk, require_root, wait_for_sync

DEPLOY = REPO / "deploy"
GUIDE = DEPLOY / "README.md"


def guide_block(containing: str) -> str:
    """The guide's fenced command block that contains ``containing``."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", GUIDE.read_text(), re.M | re.S)
    found = [b for b in blocks if containing in b]
    assert len(found) == 1, f"the guide has {len(found)} blocks with {containing!r}"
    return found[0]


def relocated(block: str, root: Path) -> str:
    """The block with the system's /etc paths under ``root``; chown to the asterisk user
    is left out (the test's Asterisk runs as the test's user)."""
    lines = [ln for ln in block.splitlines() if not ln.startswith("chown asterisk:")]
    text = "\n".join(lines) + "\n"
    for system in ("/etc/asterisk", "/etc/failover-bot"):
        text = text.replace(system, f"{root}{system}")
    return text


@dataclass
class GuideAsterisk:
    root: Path
    binary: str
    proc: subprocess.Popen[bytes]

    @property
    def conf(self) -> Path:
        return self.root / "asterisk.conf"

    def in_netns(self, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", f"--net=/proc/{self.proc.pid}/ns/net", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )

    def log(self) -> str:
        return (self.root / "console.log").read_text(errors="replace")[-3000:]


def start_from_guide(root: Path, binary: str) -> GuideAsterisk:
    etc = root / "etc"
    (etc / "asterisk").mkdir(parents=True)
    (etc / "failover-bot").mkdir()
    # Step 3's secrets, as its block writes them (the two step 5 reads).
    for name, size in (("ami.secret", 24), ("ari.password", 24)):
        (etc / "failover-bot" / name).write_text(secrets.token_hex(size) + "\n")
    script = relocated(guide_block("asterisk/manager_failover_secret.conf"), root)
    done = subprocess.run(
        ["sh", "-e", "-c", script], cwd=DEPLOY, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"the guide's step 5 failed: {done.stderr}"
    # Only what `make install` compiles in, moved under root: where the files are.
    for sub in ("run", "log", "lib", "spool", "keys"):
        (root / sub).mkdir()
    (root / "asterisk.conf").write_text(
        f"[directories]\nastetcdir => {etc / 'asterisk'}\n"
        f"astmoddir => {module_dir(binary)}\nastvarlibdir => {root / 'lib'}\n"
        f"astdbdir => {root / 'lib'}\nastkeydir => {root / 'keys'}\n"
        f"astdatadir => {root / 'lib'}\nastspooldir => {root / 'spool'}\n"
        f"astrundir => {root / 'run'}\nastlogdir => {root / 'log'}\n"
    )
    out = (root / "console.log").open("wb")
    proc = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" -f -C "$1"',
         binary, str(root / "asterisk.conf")],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    out.close()
    return GuideAsterisk(root, binary, proc)


@pytest.fixture
def guide_asterisk(tmp_path: Path) -> Iterator[GuideAsterisk]:
    binary = require_asterisk()
    if not require_root() or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a network namespace")
    ast = start_from_guide(tmp_path, binary)
    try:
        yield ast
    finally:
        if ast.proc.poll() is None:
            os.killpg(ast.proc.pid, signal.SIGKILL)
        ast.proc.wait(10)


def test_asterisk_starts_from_the_guides_files_and_answers_the_test_call(
    guide_asterisk: GuideAsterisk,
) -> None:
    ast = guide_asterisk

    def booted() -> bool:
        if ast.proc.poll() is not None:
            raise AssertionError(f"Asterisk exited {ast.proc.returncode}:\n{ast.log()}")
        probe = subprocess.run(
            [ast.binary, "-C", str(ast.conf), "-rx", "core waitfullybooted"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        return probe.returncode == 0 and "fully booted" in probe.stdout

    wait_for_sync(booted, 60, "Asterisk fully booted from the guide's files")

    # The guide's check of step 5, with the shipped example's [ami] and [test_call].
    example = (DEPLOY / "examples" / "node-a.toml").read_text()
    node = ast.root / "node.toml"
    node.write_text(example.replace("/etc/failover-bot/", f"{ast.root}/etc/failover-bot/"))
    for name in ("cluster.secret", "api.token", "redis.password", "sentinel.password"):
        (ast.root / "etc" / "failover-bot" / name).write_text(secrets.token_hex(16))
    (ast.root / "etc" / "failover-bot" / "slack.url").write_text("https://hooks.invalid/x\n")
    call = ast.in_netns([sys.executable, "-m", "bot", "test-call", "--config", str(node)])
    assert call.returncode == 0, f"test-call: {call.stdout}{call.stderr}\n{ast.log()}"
    assert call.stdout.startswith("answered"), call.stdout

    # The ARI user of the examples logs in with the password step 5 included.
    password = (ast.root / "etc" / "failover-bot" / "ari.password").read_text().strip()
    probe = (
        "import base64, sys, urllib.request\n"
        "req = urllib.request.Request('http://127.0.0.1:8088/ari/asterisk/ping')\n"
        "req.add_header('Authorization', 'Basic ' + "
        "base64.b64encode(('failover:' + sys.argv[1]).encode()).decode())\n"
        "print(urllib.request.urlopen(req, timeout=5).status)\n"
    )
    ari = ast.in_netns([sys.executable, "-c", probe, password])
    assert ari.stdout.strip() == "200", f"ARI ping: {ari.stdout}{ari.stderr}"
