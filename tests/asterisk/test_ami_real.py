"""The AMI client, test calls and the CLI against a real Asterisk (bot.lab.asterisk)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from ami.client import AmiClient, AmiState
from ami.errors import AmiActionError, AmiConnectionError
from ami.events import AmiEvent
from ami.testcall import run_test_call
from bot.config import TestCallConfig as CallCfg
from bot.config import _Walker
from bot.lab.asterisk import Runtime
from tests.asterisk.conftest import MakeAsterisk
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
Client = Callable[..., AmiClient]


async def booted(make: Client, rt: Runtime, **kw: object) -> AmiClient:
    c = make(rt, **kw)
    await c.start()
    await c.wait_fully_booted(15)
    return c


def collect(c: AmiClient) -> list[AmiEvent]:
    seen: list[AmiEvent] = []
    c.subscribe(seen.append)
    return seen


# ---------------------------------------------------------------------- login


async def test_login_fully_booted_on_start_and_ping(
    make_asterisk: MakeAsterisk, ami_client: Client
) -> None:
    rt = make_asterisk(start=False)
    c = ami_client(rt)
    events = collect(c)
    await c.start()  # nothing listens yet: the client keeps retrying
    assert rt.start() == 0
    c.kick()
    await c.wait_fully_booted(15)
    boots = [e for e in events if e.name == "FullyBooted"]
    assert boots and boots[0].fields["Status"] == "Fully Booted"
    assert (c.ami_version or "").split(".")[0].isdigit()
    pong = await c.send_action({"Action": "Ping"})
    assert pong["Ping"] == "Pong" and float(pong["Timestamp"]) > 0
    await wait_for(lambda: c.last_ping_rtt is not None, 5, what="a supervision Ping")


async def test_wrong_secret_is_refused_and_named(asterisk: Runtime, ami_client: Client) -> None:
    c = ami_client(asterisk, secret="not-the-secret")
    await c.start()
    with pytest.raises(AmiConnectionError, match=r"login refused .*Authentication failed"):
        await c.wait_connected(5)
    assert "not-the-secret" not in (c.last_error or "")


async def test_missing_write_right_is_named(
    make_asterisk: MakeAsterisk, ami_client: Client
) -> None:
    rights = {"secret": "weak-s3cret", "read": "system,call", "write": "reporting"}
    rt = make_asterisk(extra_users={"weak": rights})
    c = await booted(ami_client, rt, username="weak", secret="weak-s3cret")
    assert await c.active_channels() == 0  # write = reporting is there
    result = await run_test_call(c, CallCfg(timeout=3))
    assert result.outcome == "failed"
    assert "lacks `write = originate`" in result.reason, result


async def test_missing_read_call_leaves_the_test_call_without_an_answer(
    make_asterisk: MakeAsterisk, ami_client: Client
) -> None:
    """Without `read = call` Asterisk queues the Originate but never sends the user its
    OriginateResponse: the test call times out, and says which right to check."""
    rights = {"secret": "deaf-s3cret", "read": "system", "write": "originate,reporting"}
    rt = make_asterisk(extra_users={"deaf": rights})
    c = await booted(ami_client, rt, username="deaf", secret="deaf-s3cret")
    result = await run_test_call(c, CallCfg(timeout=1))
    assert result.outcome == "timeout", result
    assert "`read = call`" in result.reason


# ---------------------------------------------------------------------- shutdown


async def test_core_stop_now_sends_shutdown_cleanly(asterisk: Runtime, ami_client: Client) -> None:
    c = await booted(ami_client, asterisk)
    events = collect(c)
    pid = asterisk.pid()
    out = asterisk.cli("core stop now")
    assert out.returncode in (0, 1), out
    await wait_for(lambda: any(e.name == "Shutdown" for e in events), 10, what="Shutdown")
    shutdown = next(e for e in events if e.name == "Shutdown")
    assert shutdown.fields["Shutdown"] == "Cleanly" and shutdown.fields["Restart"] == "False"
    assert c.last_shutdown is not None and c.last_shutdown.cleanly and not c.last_shutdown.restart
    await wait_for(lambda: asterisk.pid() is None, 10, what="the process to exit")
    assert pid is not None


async def test_core_restart_now_sends_restart_and_client_reconnects(
    asterisk: Runtime, ami_client: Client
) -> None:
    c = await booted(ami_client, asterisk)
    events = collect(c)
    old_pid = asterisk.pid()
    connects = c.connects
    asterisk.cli("core restart now")
    await wait_for(lambda: any(e.name == "Shutdown" for e in events), 10, what="Shutdown")
    shutdown = next(e for e in events if e.name == "Shutdown")
    assert shutdown.fields["Restart"] == "True"
    assert c.last_shutdown is not None and c.last_shutdown.restart
    await wait_for(lambda: c.connects > connects, 20, what="a new login")
    await c.wait_fully_booted(20)
    pong = await c.send_action({"Action": "Ping"})
    assert pong["Ping"] == "Pong"
    # Run in the foreground (-f, as systemd does) it re-executes in the same process;
    # daemonised (no -f) it would fork again and get a new pid.
    assert asterisk.pid() == old_pid


# ---------------------------------------------------------------------- load


async def test_event_stream_under_a_burst_of_originates(
    asterisk: Runtime, ami_client: Client
) -> None:
    c = await booted(ami_client, asterisk, action_timeout=20.0)
    events = collect(c)
    calls = 40
    cfg = CallCfg(channel="Local/100@test", context="test", exten="answer", timeout=15)
    results = await asyncio.gather(*(run_test_call(c, cfg) for _ in range(calls)))
    # Each call's OriginateResponse answered its own Originate (matched by ActionID).
    assert [r.outcome for r in results] == ["answered"] * calls, results
    assert len({r.uniqueid for r in results}) == calls
    # Every Local call is two channels, and each one ends with a Hangup event.
    await wait_for(
        lambda: sum(e.name == "Hangup" for e in events) >= 2 * calls, 30, what="all Hangups"
    )
    assert sum(e.name == "Hangup" for e in events) == 2 * calls
    await wait_for(lambda: _no_channels(c), 15, what="no channel left")


async def _no_channels(c: AmiClient) -> bool:
    return await c.active_channels() == 0


# ---------------------------------------------------------------------- test calls


def _cli_config(tmp: Path, rt: Runtime, channel: str, timeout: str) -> Path:
    secret = tmp / "ami.secret"
    secret.write_text(rt.ami_secret + "\n")
    secret.chmod(0o600)
    path = tmp / f"node-{abs(hash(channel))}.toml"
    path.write_text(
        f"""[node]
id = "a"
state_dir = "{tmp}/state"
[cluster]
name = "t"
[ami]
port = {rt.ami_port}
secret_file = "{secret}"
[test_call]
channel = "{channel}"
context = "test"
exten = "answer"
timeout = "{timeout}"
"""
    )
    return path


@pytest.mark.parametrize(
    "channel,outcome,code,exit_code",
    [
        ("Local/100@test", "answered", 4, 0),
        ("Local/busy@lab", "busy", 5, 1),
        ("Local/congestion@lab", "congestion", 8, 1),
        ("Local/noanswer@lab", "no_answer", 3, 1),
        ("Local/nosuchexten@lab", "failed", 0, 1),
    ],
)
def test_test_call_outcomes_and_exit_codes(
    asterisk: Runtime, tmp_path: Path, channel: str, outcome: str, code: int, exit_code: int
) -> None:
    cfg = _cli_config(tmp_path, asterisk, channel, "2s")
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "test-call", "--json", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == exit_code, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert (result["outcome"], result["reason_code"]) == (outcome, code), result


def test_test_call_with_a_wrong_secret_cannot_run(asterisk: Runtime, tmp_path: Path) -> None:
    cfg = _cli_config(tmp_path, asterisk, "Local/100@test", "2s")
    (tmp_path / "ami.secret").write_text("not-the-secret\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "test-call", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "Authentication failed" in proc.stderr, proc.stderr
    assert "not-the-secret" not in proc.stdout + proc.stderr


async def test_dahdi_show_status_without_cards(asterisk: Runtime, ami_client: Client) -> None:
    if not (Path(asterisk.dir) / "etc" / "modules.conf").read_text().count("chan_dahdi"):
        pytest.skip("this Asterisk has no chan_dahdi (no DAHDI headers when it was built)")
    c = await booted(ami_client, asterisk)
    with pytest.raises(AmiActionError, match="No DAHDI detected"):
        await c.dahdi_show_status()


# ---------------------------------------------------------------------- hang


async def test_sigstopped_asterisk_is_detected_by_ping(
    asterisk: Runtime, ami_client: Client
) -> None:
    interval, timeout = 0.5, 0.5
    c = await booted(ami_client, asterisk, ping_interval=interval, ping_timeout=timeout)
    states: list[tuple[AmiState, float]] = []
    c.on_state(lambda s, t: states.append((s, t)))
    pid = asterisk.pid()
    assert pid is not None
    stopped = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        await wait_for(lambda: not c.connected, 10, what="the link declared dead")
        detected = time.monotonic() - stopped
        assert "no Ping reply" in (c.last_error or "") or "Ping" in (c.last_error or "")
    finally:
        os.kill(pid, signal.SIGCONT)
    # Bound: one interval to the next Ping plus its timeout, with a generous margin.
    assert detected < interval + timeout + 2.0, detected
    await c.wait_fully_booted(15)  # resumes and serves again


# ---------------------------------------------------------------------- deploy files


def config_problems(rt: Runtime) -> list[str]:
    """Asterisk's complaints about the shipped files: a parse error is a WARNING or
    ERROR naming the file, or one from the config parser itself."""
    names = [p.name for p in rt.deploy_dir.glob("*.conf")]
    log = rt.log.read_text(errors="replace") if rt.log.exists() else ""
    return [
        line
        for line in log.splitlines()
        if ("ERROR" in line or "WARNING" in line)
        and (any(name in line for name in names) or "config.c" in line)
    ]


async def test_a_syntax_error_in_a_shipped_file_is_caught(
    make_asterisk: MakeAsterisk, tmp_path: Path
) -> None:
    """The check below can fail: a broken copy of deploy/asterisk is reported."""
    broken = tmp_path / "deploy-broken"
    broken.mkdir()
    for src in (ROOT / "deploy" / "asterisk").glob("*.conf"):
        (broken / src.name).write_text(src.read_text())
    with (broken / "extensions_failover.conf").open("a") as fh:
        fh.write("\nexten => 200,1,Answer(\n[unclosed\n")
    rt = make_asterisk("broken", deploy_dir=broken)
    await wait_for(lambda: bool(config_problems(rt)), 10, what="the parse error in the log")


async def test_deploy_files_load_and_the_example_test_call_answers(
    asterisk: Runtime, ami_client: Client
) -> None:
    """deploy/asterisk/*.conf as shipped: they parse, the user has its rights, the call works."""
    bad = config_problems(asterisk)
    assert not bad, "\n".join(bad)
    user = asterisk.cli("manager show user failover").stdout
    shipped = (ROOT / "deploy" / "asterisk" / "manager.conf").read_text()
    for kind in ("read", "write"):
        wanted = next(
            line.split("=", 1)[1].strip()
            for line in shipped.splitlines()
            if line.replace(" ", "").startswith(f"{kind}=")
        )
        granted = next(line for line in user.splitlines() if line.strip().startswith(kind))
        for right in wanted.split(","):
            assert right.strip() in granted, f"{kind} = {right} missing: {granted}"
    dialplan = asterisk.cli("dialplan show test").stdout
    assert "'100' =>" in dialplan and "'answer' =>" in dialplan, dialplan
    example = tomllib.loads((ROOT / "deploy" / "examples" / "node-a.toml").read_text())
    walker = _Walker(ROOT)
    cfg = walker.build(CallCfg, example["test_call"], "test_call")
    assert cfg is not None, walker.problems
    c = await booted(ami_client, asterisk)
    result = await run_test_call(c, cfg)
    assert result.outcome == "answered", result
