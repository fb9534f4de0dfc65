"""The CLI verbs: simulate asterisk as a service, test-call exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ami.simulator import control
from tests.ami.conftest import SECRET
from tests.helpers import free_port, node_config, port_open

BOT = [sys.executable, "-m", "bot"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BOT, *args], capture_output=True, text=True, timeout=30)


def write_config(tmp: Path, port: int, secret_file: Path) -> Path:
    return node_config(
        tmp / "node.toml",
        cluster={"name": "lab"},
        ami={
            "port": port,
            "secret_file": str(secret_file),
            "ping_interval": "200ms",
            "ping_timeout": "200ms",
            "connect_timeout": "1s",
        },
        test_call={"timeout": "1s"},
    )


async def test_service_lifecycle_and_test_call(tmp_path: Path) -> None:
    port, cport = free_port(), free_port()
    secret = tmp_path / "ami.secret"
    secret.write_text(SECRET + "\n")
    pid, rec = tmp_path / "ast.pid", tmp_path / "ast.jsonl"
    cfg = write_config(tmp_path, port, secret)
    start = [
        "simulate",
        "asterisk",
        "--port",
        str(port),
        "--secret-file",
        str(secret),
        "--control-port",
        str(cport),
        "--daemon",
        "--pidfile",
        str(pid),
        "--record",
        str(rec),
    ]
    try:
        assert run(*start).returncode == 0
        assert port_open(port) and pid.exists()
        assert run("simulate", "asterisk-status", "--pidfile", str(pid)).returncode == 0

        ok = run("test-call", "--config", str(cfg), "--json")
        assert ok.returncode == 0, ok.stderr
        result = json.loads(ok.stdout)
        assert result["outcome"] == "answered" and result["setup_seconds"] > 0
        assert result["channel"].startswith("Local/100@test")

        await control(cport, {"cmd": "testcall", "mode": "busy"})
        busy = run("test-call", "--config", str(cfg))
        assert busy.returncode == 1 and "busy" in busy.stdout

        wrong = tmp_path / "wrong.secret"
        wrong.write_text("nope-not-it")
        bad = run("test-call", "--config", str(write_config(tmp_path, port, wrong)))
        assert bad.returncode == 2 and "Authentication failed" in bad.stderr
        assert "nope-not-it" not in bad.stderr + bad.stdout

        assert run("simulate", "asterisk-stop", "--pidfile", str(pid)).returncode == 0
        assert not port_open(port)
        assert run("simulate", "asterisk-status", "--pidfile", str(pid)).returncode == 3
        events = [json.loads(line)["event"] for line in rec.read_text().splitlines()]
        assert events == ["start", "fully_booted", "shutdown", "exit"]
        assert run("simulate", "asterisk-stop", "--pidfile", str(pid)).returncode == 0

        down = run("test-call", "--config", str(cfg))
        assert down.returncode == 2 and "unreachable" in down.stderr

        assert run(*start).returncode == 0
        assert run("simulate", "asterisk-stop", "--pidfile", str(pid), "--kill").returncode == 0
        assert not port_open(port)
    finally:
        run("simulate", "asterisk-stop", "--pidfile", str(pid), "--kill")


async def test_a_stalled_simulator_ignores_sigterm_and_stop_kills_it(tmp_path: Path) -> None:
    """As a hung real Asterisk: SIGTERM does nothing, asterisk-stop finds no greeting and kills."""
    import os
    import signal
    import time

    from bot.lab.cluster import pid_alive, read_pidfile

    port, cport = free_port(), free_port()
    pidfile = tmp_path / "ast.pid"
    start = ["simulate", "asterisk", "--port", str(port), "--control-port", str(cport)]
    try:
        assert run(*start, "--daemon", "--pidfile", str(pidfile)).returncode == 0
        pid = read_pidfile(pidfile)
        assert pid is not None
        await control(cport, {"cmd": "stall"})
        os.kill(pid, signal.SIGTERM)
        t0 = time.monotonic()
        stop = run("simulate", "asterisk-stop", "--pidfile", str(pidfile))
        assert stop.returncode == 0, stop.stderr
        assert "does not greet" in stop.stderr
        assert not pid_alive(pid)
        assert time.monotonic() - t0 < 15  # the greeting wait, not STOP_TIMEOUT (20 s)
    finally:
        run("simulate", "asterisk-stop", "--pidfile", str(pidfile), "--kill")
