"""fence-local and drbd-fence-peer as systemd and DRBD run them: processes, real Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.bus import Bus
from bot.config import Config, load_config
from bot.state import StateDir
from harness.fakes import FakeWorld, drbd_resource
from tests.actions.helpers import takeover_sections
from tests.helpers import RedisServer, free_port, node_config


def write_config(tmp_path: Path, redis_url: str) -> Path:
    secret = tmp_path / "cluster.secret"
    secret.write_text("s3cret-value\n")
    sections = takeover_sections(tmp_path)
    sections["cluster"].update(
        peers=[{"id": "b", "api": "http://127.0.0.1:1"}], secret_file=str(secret)
    )
    sections["redis"] = {"url": redis_url, "timeout": "300ms"}
    # A failing fence step is retried this long before fence-local gives up (default 10 s).
    sections["fence"] = {**sections.get("fence", {}), "escalate_after": "1s"}
    return node_config(tmp_path / "node.toml", **sections)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def primary_state(world: FakeWorld) -> None:
    world.set_drbd({"r0": drbd_resource(role="Primary", device="/dev/drbd0")})
    (world.dir / "mounts.json").write_text('{"/srv/pbx": "/dev/drbd0"}')
    (world.dir / "services.json").write_text('{"asterisk": {"running": true, "starts": 1}}')
    (world.dir / "ip.json").write_text('{"": {"eth0": {"192.0.2.10/24": "eth0:fo"}}}')


def dead_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def controls(cfg: Config) -> object:
    async def read() -> object:
        bus = Bus.from_config(cfg)
        try:
            return await bus.controls()
        finally:
            await bus.close()

    return asyncio.run(read())


def test_fence_local_fences_when_not_paused(
    tmp_path: Path, world: FakeWorld, redis_server: RedisServer
) -> None:
    primary_state(world)
    result = cli("fence-local", "--config", str(write_config(tmp_path, redis_server.url)))
    assert result.returncode == 0, result.stderr
    assert "Redis says not paused" in result.stdout
    assert world.mutating_calls() == [
        "ip addr del 192.0.2.10/24 dev eth0",
        "fake-service kill asterisk",
        "umount /srv/pbx",
        "drbdadm secondary r0",
    ]
    assert world.role("r0") == "Secondary" and not world.running("asterisk")
    assert "s3cret" not in result.stdout + result.stderr


def test_fence_local_retries_a_kill_that_was_too_slow(
    tmp_path: Path, world: FakeWorld, redis_server: RedisServer
) -> None:
    """Under load the first kill outlasts its 1 s floor: fence-local retries (escalated,
    with the command's own timeout) instead of leaving Asterisk running."""
    primary_state(world)
    world.set_fault("fake-service kill", sleep=1.5, times=1)
    result = cli("fence-local", "--config", str(write_config(tmp_path, redis_server.url)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" in result.stdout  # the first try, said as it was
    assert not world.running("asterisk") and world.role("r0") == "Secondary"


def test_fence_local_does_nothing_while_redis_says_paused(
    tmp_path: Path, world: FakeWorld, redis_server: RedisServer
) -> None:
    primary_state(world)
    path = write_config(tmp_path, redis_server.url)
    cfg = load_config(path)

    async def pause() -> None:
        bus = Bus.from_config(cfg)
        try:
            await bus.set_paused(True)
        finally:
            await bus.close()

    asyncio.run(pause())
    result = cli("fence-local", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "not fencing" in result.stdout and "Redis says paused" in result.stdout
    assert world.mutating_calls() == []
    assert world.role("r0") == "Primary" and world.running("asterisk")


@pytest.mark.parametrize("locally_paused", [True, False])
def test_fence_local_without_redis_lets_the_state_dir_decide(
    tmp_path: Path, world: FakeWorld, locally_paused: bool
) -> None:
    primary_state(world)
    path = write_config(tmp_path, dead_redis_url())
    StateDir(load_config(path).node.state_dir).set_paused(locally_paused)
    result = cli("fence-local", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "Redis unreachable" in result.stdout
    if locally_paused:
        assert "not fencing" in result.stdout
        assert world.mutating_calls() == []
    else:
        assert world.role("r0") == "Secondary" and not world.running("asterisk")


def test_fence_local_reports_failure_with_exit_1(
    tmp_path: Path, world: FakeWorld, redis_server: RedisServer
) -> None:
    primary_state(world)
    world.set_fault("fake-service kill", exit=1, stderr="Failed to kill unit asterisk.service")
    result = cli("fence-local", "--config", str(write_config(tmp_path, redis_server.url)))
    assert result.returncode == 1
    assert "fence_asterisk" in result.stderr
    # The address step still ran; DRBD stays Primary while Asterisk may be alive (it
    # is given up last), and the message says so.
    assert "ip addr del 192.0.2.10/24 dev eth0" in world.mutating_calls()
    assert "drbdadm secondary r0" not in world.mutating_calls()
    assert world.role("r0") == "Primary" and "DRBD kept Primary" in result.stderr


def test_drbd_fence_peer_marks_the_peer_outdated(tmp_path: Path, redis_server: RedisServer) -> None:
    path = write_config(tmp_path, redis_server.url)
    cfg = load_config(path)
    result = cli("drbd-fence-peer", "--config", str(path), env={"DRBD_RESOURCE": "r0"})
    assert result.returncode == 4, result.stderr
    assert controls(cfg).outdated == frozenset({"b"})  # type: ignore[attr-defined]
    # after-resync-target on b clears b's own mark.
    b_cfg = tmp_path / "b.toml"
    b_cfg.write_text(
        path.read_text()
        .replace('id = "a"', 'id = "b"', 1)
        .replace('{ id = "b"', '{ id = "a"')
        .replace('rseries_host = "A"', 'rseries_host = "B"')
    )
    result = cli("drbd-fence-peer", "--unfence", "--config", str(b_cfg))
    assert result.returncode == 0, result.stderr
    assert controls(cfg).outdated == frozenset()  # type: ignore[attr-defined]


def test_drbd_fence_peer_never_outdates_the_lease_holder(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    path = write_config(tmp_path, redis_server.url)
    cfg = load_config(path)

    async def b_takes_lease() -> None:
        bus = Bus(cfg.redis, cfg.cluster.name, "b")
        try:
            assert await bus.acquire(30.0, 0) is not None
        finally:
            await bus.close()

    asyncio.run(b_takes_lease())
    result = cli("drbd-fence-peer", "--config", str(path))
    assert result.returncode == 6, result.stderr
    assert controls(cfg).outdated == frozenset()  # type: ignore[attr-defined]


def test_drbd_fence_peer_without_redis_is_not_a_fence(tmp_path: Path) -> None:
    result = cli("drbd-fence-peer", "--config", str(write_config(tmp_path, dead_redis_url())))
    # Not 3..7: DRBD must not believe the peer was fenced.
    assert result.returncode == 1
    assert "peer NOT outdated" in result.stderr


def test_drbd_fence_peer_with_a_broken_config_is_not_a_fence(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\n")
    result = cli("drbd-fence-peer", "--config", str(bad))
    assert result.returncode == 1
    assert "configuration invalid" in result.stderr
