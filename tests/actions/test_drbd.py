"""DRBD state reading (9 and 8.4), promotion rules, the module-missing case, the example."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bot.actions.drbd import Drbd, parse_slash_pair, parse_status_json
from bot.actions.errors import DrbdError, DrbdModuleMissing, PromoteRefused
from bot.config import DrbdConfig, MountConfig
from harness.fakes import FakeWorld, drbd_resource

REPO = Path(__file__).resolve().parents[2]


def drbd(**kw: object) -> Drbd:
    cfg = DrbdConfig(resources=["r0"], mount=[MountConfig(device="/dev/drbd0", path="/srv/pbx")])
    return Drbd(cfg, **kw)  # type: ignore[arg-type]


def test_parsers() -> None:
    assert parse_slash_pair("Primary/Secondary\n") == ("Primary", "Secondary")
    assert parse_slash_pair("") == ("Unknown", "Unknown")
    states = parse_status_json(
        '[{"name": "r0", "role": "Secondary", "devices": [{"disk-state": "UpToDate"},'
        ' {"disk-state": "Outdated"}], "connections": []}]'
    )
    assert states["r0"].disk == "Outdated" and states["r0"].connection == "StandAlone"
    with pytest.raises(ValueError):
        parse_status_json('{"not": "a list"}')


@pytest.mark.parametrize("version", [9, 8])
async def test_state_with_drbd9_json_and_84_drbdadm(world: FakeWorld, version: int) -> None:
    world.set_drbd({"r0": drbd_resource(role="Secondary", peer_role="Primary")}, version=version)
    d = drbd()
    state = await d.state("r0")
    assert (state.role, state.disk, state.peer_role, state.connection) == (
        "Secondary",
        "UpToDate",
        "Primary",
        "Connected",
    )
    used = {c["cmd"] + " " + c["argv"][0] for c in world.calls()}
    if version == 8:
        assert {"drbdadm role", "drbdadm dstate", "drbdadm cstate"} <= used
    else:
        assert used == {"drbdsetup status"}


async def test_module_missing_says_so(world: FakeWorld) -> None:
    world.set_drbd({"r0": drbd_resource()}, module=False)
    with pytest.raises(DrbdModuleMissing, match="kernel module is not loaded"):
        await drbd().promote()


@pytest.mark.parametrize(
    ("resource", "outdated", "why"),
    [
        (drbd_resource(disk="Outdated"), False, "disk is Outdated"),
        (drbd_resource(disk="Inconsistent"), False, "disk is Inconsistent"),
        (drbd_resource(), True, "marked outdated"),
        (drbd_resource(peer_role="Primary"), False, "peer is primary"),
    ],
)
async def test_promote_refused_without_good_data(
    world: FakeWorld, resource: dict[str, object], outdated: bool, why: str
) -> None:
    world.set_drbd({"r0": resource})  # type: ignore[dict-item]
    with pytest.raises(PromoteRefused, match=why):
        await drbd(outdated=lambda: outdated).promote()
    assert world.role("r0") == "Secondary"
    assert "drbdadm primary r0" not in world.mutating_calls()


async def test_operator_force_promotes_outdated_data(world: FakeWorld) -> None:
    world.set_drbd({"r0": drbd_resource(disk="Outdated", device="/dev/drbd0")})
    assert await drbd(outdated=lambda: True).promote(force=True) == [
        "r0 primary (forced)",
        "/srv/pbx mounted",
    ]
    assert world.role("r0") == "Primary"
    assert "drbdadm primary --force r0" in world.mutating_calls()


async def test_fake_drbd_refuses_primary_while_the_peer_is_primary_and_connected(
    world: FakeWorld,
) -> None:
    world.set_drbd({"r0": drbd_resource(peer_role="Primary")})
    # Even the operator's force cannot make two primaries: DRBD itself refuses.
    with pytest.raises(Exception, match="Multiple primaries"):
        await drbd().promote(force=True)
    world.set_drbd({"r0": drbd_resource(peer_role="Primary", connected=False)})
    await drbd().promote()
    assert world.role("r0") == "Primary"


async def test_demote_unmounts_before_secondary(world: FakeWorld) -> None:
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0")})
    d = drbd()
    await d.promote()
    assert await d.demote() == ["/srv/pbx unmounted", "r0 secondary"]
    assert await d.demote() == []
    assert world.mutating_calls()[-2:] == ["umount /srv/pbx", "drbdadm secondary r0"]


async def test_fence_with_a_busy_mount_fails_until_escalated(world: FakeWorld) -> None:
    """Busy: umount refuses, and "secondary" says the device is held open (exit 11). The
    escalated retry ends the mount's users, then unmounts and demotes."""
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0")})
    d = drbd()
    await d.promote()
    world.set_busy("/srv/pbx")
    with pytest.raises(DrbdError, match="held open by someone"):
        await d.fence(limit=5.0)
    assert world.role("r0") == "Primary" and "/srv/pbx" in world.mounts
    await d.fence(limit=5.0, escalate=True)
    assert world.role("r0") == "Secondary" and world.mounts == {}
    assert "fuser -k -M -m /srv/pbx" in world.mutating_calls()


async def test_escalated_fence_never_kills_users_of_an_unmounted_path(world: FakeWorld) -> None:
    world.set_drbd({"r0": drbd_resource(device="/dev/drbd0")})
    world.set_busy("/srv/pbx")  # a path that is not a mount point: its parent's users
    await drbd().fence(limit=5.0, escalate=True)
    assert not any(c.startswith("fuser") for c in world.mutating_calls())


def test_example_resource_parses_with_real_drbdadm(tmp_path: Path) -> None:
    res = REPO / "deploy" / "drbd" / "pbx-drbd9.res"  # pbx.res is 8.4: tests/deploy
    result = subprocess.run(
        ["drbdadm", "-c", str(res), "dump", "all"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    dump = result.stdout
    assert "auto-promote      no;" in dump or "auto-promote no;" in dump
    assert "fencing          resource-and-stonith;" in dump
    assert 'fence-peer       "/usr/local/bin/failover-bot drbd-fence-peer' in dump
    # A broken copy is rejected: the check can fail.
    broken = tmp_path / "broken.res"
    broken.write_text(res.read_text().replace("auto-promote no;", "auto-promot no;"))
    bad = subprocess.run(
        ["drbdadm", "-c", str(broken), "dump", "all"], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode != 0
