"""Static checks of the deployment files: promtool, systemd-analyze, dashboard JSON."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from harness import tools
from tests.deploy.conftest import REPO

PROM_DIR = REPO / "deploy" / "prometheus"
SYSTEMD_DIR = REPO / "deploy" / "systemd"
DASHBOARD = REPO / "grafana" / "failover-bot.json"
SCHEMA = REPO.parent / "shared" / "reference" / "grafana-dashboard.schema.json"


def need(tool: str) -> str:
    reason = tools.missing(tool)
    if reason:
        pytest.skip(reason)
    return tools.need(tool)


def run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


# --- Prometheus rules ---------------------------------------------------------


def test_promtool_check_rules() -> None:
    result = run([need("promtool"), "check", "rules", str(PROM_DIR / "alerts.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules() -> None:
    result = run([need("promtool"), "test", "rules", "alerts.test.yml"], cwd=PROM_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    rules = (PROM_DIR / "alerts.yml").read_text()
    tests = (PROM_DIR / "alerts.test.yml").read_text()
    alerts = re.findall(r"^\s*- alert: (\w+)", rules, re.M)
    assert len(alerts) >= 10
    # Each alert_rule_test entry: "alertname: X" followed by its exp_alerts.
    cases = re.findall(r"alertname: (\w+)\n\s*exp_alerts:( \[\])?", tests)
    for alert in alerts:
        kinds = {"quiet" if empty else "firing" for name, empty in cases if name == alert}
        assert kinds == {"firing", "quiet"}, f"{alert}: cases {kinds}"


def test_promtool_check_config_example() -> None:
    result = run(
        [need("promtool"), "check", "config", "--syntax-only", "prometheus.example.yml"],
        cwd=PROM_DIR,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- systemd ------------------------------------------------------------------


def _unit_keys(text: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)?", value)
    assert match, value
    return float(match[1]) / (1000 if match[2] == "ms" else 1)


def test_service_unit_has_the_supervision_the_design_needs() -> None:
    keys = _unit_keys((SYSTEMD_DIR / "failover-bot.service").read_text())
    assert keys["Type"] == ["notify"]
    assert keys["Restart"] == ["always"]
    assert any(
        v.endswith("failover-bot fence-local --config /etc/failover-bot/node.toml")
        for v in keys["ExecStopPost"]
    )
    assert keys["WatchdogSignal"] == ["SIGKILL"]
    # WatchdogSec <= lease_ttl - renew_interval - fence_budget, default timings.
    from bot.config import ClusterConfig

    fields = ClusterConfig.__dataclass_fields__
    lease_ttl = fields["lease_ttl"].default
    renew = fields["renew_interval"].default
    budget = fields["fence_budget"].default
    assert isinstance(lease_ttl, float) and isinstance(renew, float)
    assert isinstance(budget, float)
    assert 0 < _seconds(keys["WatchdogSec"][0]) <= lease_ttl - renew - budget + 1e-9
    # A private mount namespace would hide the DRBD mount from Asterisk.
    for key in ("PrivateTmp", "ProtectSystem", "ProtectHome", "PrivateMounts"):
        assert key not in keys


def _verify(unit_dir: Path, unit: str) -> subprocess.CompletedProcess[str]:
    env_path = f"{unit_dir}:"  # trailing colon: the built-in unit path as well
    return subprocess.run(
        [need("systemd-analyze"), "verify", str(unit_dir / unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"SYSTEMD_UNIT_PATH": env_path, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def test_systemd_analyze_verify_service(tmp_path: Path) -> None:
    # verify wants the binaries to exist: point the unit at this checkout's.
    exe = Path(sys.executable).parent / "failover-bot"
    assert exe.exists(), exe
    text = (SYSTEMD_DIR / "failover-bot.service").read_text()
    assert "/opt/failover-bot/bin/failover-bot" in text
    (tmp_path / "failover-bot.service").write_text(
        text.replace("/opt/failover-bot/bin/failover-bot", str(exe))
    )
    result = _verify(tmp_path, "failover-bot.service")
    assert result.returncode == 0, result.stderr
    assert "failover-bot.service" not in result.stderr, result.stderr


def test_systemd_analyze_verify_asterisk_drop_in(tmp_path: Path) -> None:
    # A stand-in for the distribution's asterisk.service, with the drop-in applied.
    (tmp_path / "asterisk.service").write_text(
        "[Unit]\nDescription=Asterisk PBX\n[Service]\nType=simple\n"
        "ExecStart=/bin/true\nRestart=on-failure\n[Install]\nWantedBy=multi-user.target\n"
    )
    shutil.copytree(SYSTEMD_DIR / "asterisk.service.d", tmp_path / "asterisk.service.d")
    result = _verify(tmp_path, "asterisk.service")
    assert result.returncode == 0, result.stderr
    assert "failover-bot.conf" not in result.stderr, result.stderr
    drop_in = _unit_keys((SYSTEMD_DIR / "asterisk.service.d" / "failover-bot.conf").read_text())
    assert drop_in["Restart"] == ["no"]
    assert drop_in["ConditionPathIsMountPoint"]


def test_preset_disables_asterisk_at_boot() -> None:
    lines = [
        line.split()
        for line in (SYSTEMD_DIR / "90-failover-bot.preset").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ["disable", "asterisk.service"] in lines
    assert ["enable", "failover-bot.service"] in lines


# --- Grafana dashboard ------------------------------------------------------


def _all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(_all_panels(panel.get("panels", [])))
    return out


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert not [key for key in dashboard if key.startswith("__")], "export leftovers"
    assert {"schemaVersion", "templating", "annotations", "panels", "uid", "title"} <= set(
        dashboard
    )
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = _all_panels(dashboard["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].strip()
    text = DASHBOARD.read_text()
    assert "${DS_" not in text, "datasource must be the variable, not an import input"
    titles = " | ".join(p.get("title", "") for p in panels).lower()
    for topic in (
        "roles",
        "lease time left",
        "failovers",
        "by step",
        "ami ping",
        "active channels",
        "span alarms",
        "test call success",
        "setup time",
        "redis / peer / r-series",
        "drift",
    ):
        assert topic in titles, topic


def test_dashboard_matches_grafana_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} not present")
    schema = json.loads(SCHEMA.read_text())
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(json.loads(DASHBOARD.read_text())))
    assert not errors, [f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors]


def test_a_shutdown_stops_the_bot_before_asterisk() -> None:
    """systemd stops units in the reverse of their start order: with the bot ordered
    after Asterisk, a reboot or `systemctl stop` of both runs the bot's stop (drain,
    hand-over) first, while Asterisk still carries the calls."""
    unit = (REPO / "deploy" / "systemd" / "failover-bot.service").read_text()
    after = " ".join(re.findall(r"^After=(.*)$", unit, re.M)).split()
    assert "asterisk.service" in after, after
    for pulls in ("Wants", "Requires", "BindsTo", "Requisite"):
        # Ordering only: the bot alone decides whether Asterisk runs.
        named = " ".join(re.findall(rf"^{pulls}=(.*)$", unit, re.M)).split()
        assert "asterisk.service" not in named, pulls
    # The bot stops Asterisk itself during its own stop; a plain `systemctl stop` would
    # join the shutdown's queued stop job, which waits for the bot: a deadlock until
    # TimeoutStopSec. The examples' stop runs at once.
    for example in sorted((REPO / "deploy" / "examples").glob("*.toml")):
        stop = tomllib.loads(example.read_text())["asterisk"]["stop"]
        if stop[:2] == ["systemctl", "stop"]:
            assert "--job-mode=ignore-dependencies" in stop, f"{example.name}: {stop}"
