"""The shipped DRBD resources and boot unit, checked by the real drbdadm and systemd.

``drbdadm -c FILE dump`` parses a resource without the kernel module: the 8.4
parser (``drbdadm-84``, Debian 12's stock module) for ``pbx.res`` and the DRBD 9
parser for ``pbx-drbd9.res``. Each must carry the data-safety settings, and the
handlers must name verbs the bot has.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from bot.commands import COMMAND_MODULES
from harness import tools
from harness.replication import shipped_policies
from tests.deploy.conftest import REPO

DRBD_DIR = REPO / "deploy" / "drbd"
DRBDADM_84 = Path("/usr/lib/drbd/drbdadm-84")
VERBS = {verb for verbs in COMMAND_MODULES.values() for verb in verbs}


def dump(tool: str, resource: Path) -> str:
    if reason := tools.missing("drbdadm"):
        pytest.skip(reason)
    result = subprocess.run(
        [tool, "-c", str(resource), "dump"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def settings(text: str) -> dict[str, str]:
    """``key value;`` lines of a dump (handlers keep their quoted command)."""
    found = {}
    for key, value in re.findall(r"^\s*([\w-]+)\s+(.+?);\s*$", text, re.M):
        found.setdefault(key, value.strip())
    return found


def check_safety(text: str) -> None:
    s = settings(text)
    assert s["fencing"] == "resource-and-stonith"
    assert s["protocol"] == "C"
    assert s["after-sb-0pri"] == "discard-zero-changes"
    assert s["after-sb-1pri"] == "disconnect"
    assert s["after-sb-2pri"] == "disconnect"
    # The dump quotes each handler's command line: unquote, then split it.
    handlers = {k: shlex.split(shlex.split(s[k])[0]) for k in ("fence-peer", "unfence-peer",
                "after-resync-target", "split-brain")}  # fmt: skip
    assert handlers["fence-peer"][1] == "drbd-fence-peer"
    assert handlers["unfence-peer"][1:3] == ["drbd-fence-peer", "--unfence-peer"]
    assert handlers["after-resync-target"][1:3] == ["drbd-fence-peer", "--unfence"]
    assert handlers["split-brain"][1] == "drbd-split-brain"
    for argv in handlers.values():
        assert argv[1] in VERBS
        assert "--config" in argv


def test_stock_debian_84_resource_parses_with_drbdadm_84() -> None:
    text = dump(str(DRBDADM_84), DRBD_DIR / "pbx.res")
    check_safety(text)
    assert "node-id" not in text and "auto-promote" not in text
    # Boot never waits for the peer forever (the unit runs adjust; these bound drbd.service).
    assert settings(text)["degr-wfc-timeout"] == "60"


def test_drbd9_resource_parses_with_drbdadm_9() -> None:
    text = dump("drbdadm", DRBD_DIR / "pbx-drbd9.res")
    check_safety(text)
    s = settings(text)
    assert s["auto-promote"] == "no"
    assert s["quorum"] == "majority" and s["on-no-quorum"] == "suspend-io"
    # Three hosts, one of them a diskless tiebreaker.
    assert re.search(r"on witness \{[^}]*disk\s+none;", text)
    assert "hosts pbx-a pbx-b witness" in text


def test_each_file_is_refused_by_the_other_parser() -> None:
    """They are not interchangeable: the label at the top says which module each is for."""
    for tool, wrong in ((str(DRBDADM_84), "pbx-drbd9.res"), ("drbdadm", "pbx.res")):
        if reason := tools.missing("drbdadm"):
            pytest.skip(reason)
        result = subprocess.run(
            [tool, "-c", str(DRBD_DIR / wrong), "dump"], capture_output=True, timeout=30
        )
        assert result.returncode != 0, f"{tool} accepted {wrong}"
    assert "DRBD 8.4" in (DRBD_DIR / "pbx.res").read_text().splitlines()[0]
    assert "DRBD 9" in (DRBD_DIR / "pbx-drbd9.res").read_text().splitlines()[0]


def test_the_lab_runs_the_shipped_policies() -> None:
    assert shipped_policies() == {
        "fencing": "resource-and-stonith",
        "after_sb": {"0pri": "discard-zero-changes", "1pri": "disconnect", "2pri": "disconnect"},
    }


def test_boot_unit_verifies_and_never_waits_for_the_peer(tmp_path: Path) -> None:
    if reason := tools.missing("systemd-analyze"):
        pytest.skip(reason)
    tool = tools.need("systemd-analyze")
    unit = DRBD_DIR / "failover-bot-drbd@.service"
    text = unit.read_text()
    (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        [tool, "verify", str(tmp_path / "failover-bot-drbd@pbx.service")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    assert keys["Before"] == ["failover-bot.service"]
    assert keys["Type"] == ["oneshot"] and keys["RemainAfterExit"] == ["yes"]
    assert keys["ExecStart"] == ["/usr/sbin/drbdadm adjust %i"]
    assert not any("wait-connect" in v or "wait-con" in v for v in keys["ExecStart"])
