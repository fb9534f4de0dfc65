"""`check-config --host`: each host fact, OK on a good host and a problem with its fix
on a bad one. Real files, a real pty, the real drbdadm parser."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Config, parse_config
from bot.hostcheck import Finding, Host, check_secret_mode, host_findings
from harness import tools
from tests.deploy.conftest import REPO


def _secret(tmp_path: Path, name: str, mode: int) -> Path:
    path = tmp_path / name
    path.write_text("s3cret\n")
    os.chmod(path, mode)
    return path


def config_text(tmp_path: Path, *, port: str, listen: str, iface: str, mount: str) -> str:
    return f"""
[node]
id = "pbx-a"
rseries_host = "A"
state_dir = "{tmp_path}/state"

[cluster]
name = "pbx"
peers = [{{ id = "pbx-b", api = "http://127.0.0.2:9440" }}]
secret_file = "{tmp_path}/cluster.secret"

[ami]
secret_file = "{tmp_path}/ami.secret"

[rseries]
port = "{port}"

[drbd]
resources = ["pbx"]
mount = [{{ device = "/dev/drbd0", path = "{mount}", fstype = "ext4" }}]

[vip]
address = "192.0.2.10/24"
interface = "{iface}"

[api]
listen = "{listen}"
token_file = "{tmp_path}/api.token"
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="secret files owned by root")
def test_a_bad_host_gets_every_problem_named(tmp_path: Path) -> None:
    _secret(tmp_path, "cluster.secret", 0o644)  # readable by everyone
    _secret(tmp_path, "ami.secret", 0o600)
    _secret(tmp_path, "api.token", 0o660)  # open to its group (root's)
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        config_text(
            tmp_path,
            port=str(tmp_path / "ttyUSB9"),
            listen="0.0.0.0:9440",
            iface="nosuch0",
            mount=str(tmp_path / "srv-pbx"),
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "check-config", "--host", "--offline", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    problems = {
        line.split()[1].rstrip(":")
        for line in proc.stdout.splitlines()
        if line.startswith("PROBLEM")
    }
    for key in (
        "cluster.secret_file",
        "api.token_file",
        "vip.interface",
        "rseries.port",
        "node.state_dir",
        "drbd.mount",
        "api.listen",
    ):
        assert key in problems, (key, proc.stdout)
    assert "OK       ami.secret_file" in proc.stdout
    assert "fix: chown root:root" in proc.stdout
    assert "s3cret" not in proc.stdout + proc.stderr


def test_a_good_host_is_all_ok(tmp_path: Path) -> None:
    if reason := tools.missing("drbdadm"):
        pytest.skip(reason)
    for name in ("cluster.secret", "ami.secret", "api.token"):
        _secret(tmp_path, name, 0o600)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "srv-pbx").mkdir()
    units = tmp_path / "units"
    (units / "asterisk.service.d").mkdir(parents=True)
    (units / "asterisk.service").write_text("[Service]\nExecStart=/bin/true\n")
    (units / "asterisk.service.d" / "failover-bot.conf").write_text("[Service]\nRestart=no\n")
    shutil.copy(REPO / "deploy" / "systemd" / "failover-bot.service", units)
    drbd_conf = tmp_path / "drbd.conf"
    drbd_conf.write_text(
        "resource pbx {\n  device /dev/drbd0;\n  disk /dev/sdb1;\n  meta-disk internal;\n"
        f"  on {socket.gethostname()} {{ address 192.0.2.1:7789; node-id 0; }}\n"
        "  on pbx-b { address 192.0.2.2:7789; node-id 1; }\n}\n"
    )
    clock = tmp_path / "clocksource"
    clock.write_text("tsc\n")
    master, slave = os.openpty()
    try:
        text = config_text(
            tmp_path,
            port=os.ttyname(slave),
            listen="127.0.0.1:9440",
            iface="lo",
            mount=str(tmp_path / "srv-pbx"),
        )
        host = Host(
            clocksource=clock,
            unit_dirs=(units,),
            drbd_conf=str(drbd_conf),
            local_addresses=lambda: {"127.0.0.1", "192.0.2.1"},
            route_source=lambda _peer: "127.0.0.1",
            systemctl_show=None,
        )
        findings = host_findings(parse_config(text, tmp_path), host, network=False)
    finally:
        os.close(master)
        os.close(slave)
    bad = [f.line() for f in findings if not f.ok]
    if os.geteuid() != 0:
        bad = [line for line in bad if "not owned by root" not in line]
    assert not bad, "\n".join(bad)
    checks = {f.check for f in findings}
    assert {"rseries.port", "drbd.resources", "asterisk.start", "clock", "vip.interface"} <= checks


def test_unknown_drbd_resource_and_enabled_asterisk(tmp_path: Path) -> None:
    if reason := tools.missing("drbdadm"):
        pytest.skip(reason)
    for name in ("cluster.secret", "ami.secret", "api.token"):
        _secret(tmp_path, name, 0o600)
    units = tmp_path / "units"
    (units / "multi-user.target.wants").mkdir(parents=True)
    (units / "asterisk.service").write_text("[Service]\nExecStart=/bin/true\n")
    (units / "multi-user.target.wants" / "asterisk.service").symlink_to(units / "asterisk.service")
    (tmp_path / "drbd.conf").write_text("")
    text = config_text(
        tmp_path, port="socket://127.0.0.1:1", listen="127.0.0.1:9440", iface="lo", mount="/"
    )
    host = Host(unit_dirs=(units,), drbd_conf=str(tmp_path / "drbd.conf"))
    lines = [f.line() for f in host_findings(parse_config(text, tmp_path), host, network=False)]
    joined = "\n".join(lines)
    assert "PROBLEM  drbd.resources: drbdadm does not know pbx" in joined
    assert "enabled at boot" in joined and "systemctl disable asterisk.service" in joined
    assert "no drop-in" in joined


def test_secret_mode_rules() -> None:
    def st(mode: int, uid: int = 0) -> os.stat_result:
        return os.stat_result((0o100000 | mode, 0, 0, 1, uid, 0, 6, 0, 0, 0))

    path = Path("/etc/failover-bot/x")
    assert check_secret_mode("ami.secret_file", path, st(0o600), "root").ok
    assert not check_secret_mode("ami.secret_file", path, st(0o640), "failover").ok
    assert check_secret_mode("api.token_file", path, st(0o640), "failover").ok
    assert not check_secret_mode("api.token_file", path, st(0o660), "failover").ok
    assert not check_secret_mode("api.token_file", path, st(0o640), "users").ok
    assert not check_secret_mode("api.token_file", path, st(0o604), "failover").ok
    assert not check_secret_mode("ami.secret_file", path, st(0o600, uid=1000), "root").ok


@pytest.mark.parametrize(("status", "ok"), [(["true"], True), (["sleep", "0.8"], False)])
def test_fence_commands_are_timed_against_the_budget(
    tmp_path: Path, status: list[str], ok: bool
) -> None:
    for name in ("cluster.secret", "ami.secret", "api.token"):
        _secret(tmp_path, name, 0o600)
    text = config_text(
        tmp_path, port="socket://127.0.0.1:1", listen="127.0.0.1:9440", iface="lo", mount="/"
    )
    text += f"\n[asterisk]\nstatus = {status!r}\n".replace("'", '"')
    cfg = parse_config(text, tmp_path)
    assert cfg.cluster.fence_budget == 0.5
    [finding] = [
        f for f in host_findings(cfg, Host(), network=False) if f.check == "cluster.fence_budget"
    ]
    assert finding.ok is ok, finding.line()
    assert "asterisk" in finding.detail and "of 500 ms" in finding.detail
    if not ok:
        assert "raise cluster.fence_budget to at least" in finding.fix, finding.line()


def _units_with_the_shipped_bot_unit(tmp_path: Path, dropin: str | None = None) -> Path:
    units = tmp_path / "units"
    units.mkdir()
    shutil.copy(REPO / "deploy" / "systemd" / "failover-bot.service", units)
    if dropin is not None:
        (units / "failover-bot.service.d").mkdir()
        (units / "failover-bot.service.d" / "override.conf").write_text(dropin)
    return units


def _example(tmp_path: Path, name: str) -> str:
    """A shipped example with its secret files under tmp_path."""
    text = (REPO / "deploy" / "examples" / name).read_text()
    for secret in ("cluster.secret", "api.token", "ami.secret", "ari.password", "redis.password",
                   "sentinel.password"):  # fmt: skip
        _secret(tmp_path, secret, 0o600)
    (tmp_path / "slack.url").write_text("https://hooks.invalid/x\n")
    return text.replace("/etc/failover-bot/", f"{tmp_path}/")


def _watchdog(findings: list[Finding]) -> list[str]:
    """The lines about the bot's unit (systemd.watchdog, systemd.nice, systemd.stop_timeout)."""
    return [f.line() for f in findings if f.check.startswith("systemd.")]


def test_fast_profile_under_the_shipped_1500ms_watchdog_is_a_problem(tmp_path: Path) -> None:
    cfg = parse_config(_example(tmp_path, "fast-a.toml"), tmp_path)
    host = Host(unit_dirs=(_units_with_the_shipped_bot_unit(tmp_path),), systemctl_show=None)
    lines = _watchdog(host_findings(cfg, host, network=False))
    assert lines and lines[0].startswith("PROBLEM"), lines
    assert "WatchdogSec=1500ms" in lines[0] and "300ms" in lines[0], lines
    assert "Nice=-10" in "\n".join(lines), lines


def test_fast_profile_with_the_guides_drop_in_is_ok(tmp_path: Path) -> None:
    cfg = parse_config(_example(tmp_path, "fast-a.toml"), tmp_path)
    units = _units_with_the_shipped_bot_unit(tmp_path, "[Service]\nWatchdogSec=300ms\nNice=-10\n")
    host = Host(unit_dirs=(units,), systemctl_show=None)
    lines = _watchdog(host_findings(cfg, host, network=False))
    assert lines and all(line.startswith("OK") for line in lines), lines


def test_default_profile_under_the_shipped_unit_is_ok(tmp_path: Path) -> None:
    cfg = parse_config(_example(tmp_path, "node-a.toml"), tmp_path)
    host = Host(unit_dirs=(_units_with_the_shipped_bot_unit(tmp_path),), systemctl_show=None)
    lines = _watchdog(host_findings(cfg, host, network=False))
    assert lines and all(line.startswith("OK") for line in lines), lines


def test_the_watchdog_of_the_running_systemd_wins(tmp_path: Path) -> None:
    """`systemctl show` (what systemd applies) is read first when systemd runs."""
    cfg = parse_config(_example(tmp_path, "node-a.toml"), tmp_path)
    shown = {"WatchdogUSec": "3s", "Nice": "-5", "TimeoutStopUSec": "1min"}
    host = Host(
        unit_dirs=(_units_with_the_shipped_bot_unit(tmp_path),),
        systemctl_show=lambda _unit: shown,
    )
    lines = _watchdog(host_findings(cfg, host, network=False))
    assert lines[0].startswith("PROBLEM") and "WatchdogSec=3s" in lines[0], lines
    shown["WatchdogUSec"] = "0"
    lines = _watchdog(host_findings(cfg, host, network=False))
    assert lines[0].startswith("PROBLEM") and "off" in lines[0], lines


def test_systemd_time_spans() -> None:
    from bot.unitcheck import parse_timespan

    assert parse_timespan("1500ms") == pytest.approx(1.5)
    assert parse_timespan("1s 500ms") == pytest.approx(1.5)
    assert parse_timespan("1.500000s") == pytest.approx(1.5)
    assert parse_timespan("1min") == 60 and parse_timespan("5") == 5
    assert parse_timespan("0") == 0 and parse_timespan("infinity") == 0
    assert parse_timespan("soon") is None and parse_timespan("3 parsecs") is None


async def _publish(cfg_text: str, tmp_path: Path, node: str) -> None:
    from bot.bus import Bus
    from tests.helpers import node_record

    bus = Bus.from_config(parse_config(cfg_text, tmp_path))
    try:
        await bus.connect()
        await bus.publish_node_record(node_record(node))
    finally:
        await bus.close()


def test_another_pair_under_the_same_cluster_name_is_named(
    tmp_path: Path, redis_server: object
) -> None:
    import asyncio

    def pair_config(me: str, peer: str) -> str:
        return (
            f'[node]\nid = "{me}"\nstate_dir = "{tmp_path}/state"\n'
            f'[cluster]\nname = "pbx"\nsecret_file = "{tmp_path}/cluster.secret"\n'
            f'peers = [{{ id = "{peer}", api = "http://127.0.0.1:9" }}]\n'
            f'[redis]\nurl = "{redis_server.url}"\n'  # type: ignore[attr-defined]
            '[api]\nlisten = "127.0.0.1:9440"\n'
        )

    _secret(tmp_path, "cluster.secret", 0o600)
    ours = pair_config("pbx-a", "pbx-b")
    asyncio.run(_publish(ours, tmp_path, "pbx-a"))
    host = Host(unit_dirs=(tmp_path,), systemctl_show=None)
    lines = [f.line() for f in host_findings(parse_config(ours, tmp_path), host)]
    assert any(line.startswith("OK       cluster.name: pbx") for line in lines), lines
    # A second pair on the same Redis, configured with the same name by mistake.
    asyncio.run(_publish(pair_config("pbx2-a", "pbx2-b"), tmp_path, "pbx2-a"))
    lines = [f.line() for f in host_findings(parse_config(ours, tmp_path), host)]
    named = [line for line in lines if "cluster.name" in line]
    assert named and named[0].startswith("PROBLEM") and "pbx2-a" in named[0], lines
    assert "give each pair its own cluster.name" in named[0]


def test_redis_round_trip_against_the_timeout() -> None:
    from bot.hostcheck import round_trip_finding

    def cfg(timeout: str) -> Config:
        text = f'[node]\nid = "a"\n[cluster]\nname = "t"\n[redis]\ntimeout = "{timeout}"\n'
        return parse_config(text)

    assert round_trip_finding(cfg("500ms"), 0.002).ok
    fast = round_trip_finding(cfg("50ms"), 0.015)
    assert not fast.ok and "10 ms" in fast.detail and "15.0 ms" in fast.detail, fast
    assert round_trip_finding(cfg("50ms"), 0.004).ok
