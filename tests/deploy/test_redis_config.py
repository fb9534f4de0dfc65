"""deploy/redis: the shipped configurations run, and a master without a replica refuses writes."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness import tools
from tests.deploy.conftest import REPO
from tests.helpers import free_port, port_open, wait_for_sync

REDIS_DIR = REPO / "deploy" / "redis"
PASSWORD = "test-only-password"


def loopback_copy(src: Path, dest: Path, port: int, auth: str, master_port: int | None) -> Path:
    """The shipped file with addresses, ports, includes and paths made local."""
    lines = []
    for line in src.read_text().splitlines():
        if line.startswith("bind "):
            line = "bind 127.0.0.1"
        elif line.startswith("port "):
            line = f"port {port}"
        elif line.startswith("include "):
            line = f"include {auth}\nbind 127.0.0.1"
        elif line.startswith("sentinel monitor ") and master_port is not None:
            name, _host, _port, quorum = line.split()[2:]
            line = f"sentinel monitor {name} 127.0.0.1 {master_port} {quorum}"
        lines.append(line)
    lines.append(f"dir {dest.parent}")
    dest.write_text("\n".join(lines) + "\n")
    return dest


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], port: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        wait_for_sync(lambda: proc.poll() is not None or port_open(port), 10, f"{argv[0]}")
        assert proc.poll() is None, f"{argv} exited with {proc.returncode}"
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_all(self) -> None:
        for proc in self.procs:
            self.stop(proc)


@pytest.fixture
def procs() -> Iterator[Procs]:
    if reason := tools.missing("redis-server"):
        pytest.skip(reason)
    p = Procs()
    try:
        yield p
    finally:
        p.stop_all()


def start_redis(procs: Procs, workdir: Path, replica_of: int | None = None) -> tuple[int, object]:
    workdir.mkdir()
    port = free_port()
    auth = workdir / "auth.conf"
    auth.write_text(f"requirepass {PASSWORD}\nmasterauth {PASSWORD}\n")
    conf = loopback_copy(REDIS_DIR / "redis.conf", workdir / "redis.conf", port, str(auth), None)
    # Diskless sync waits 5 s for more replicas by default: no need in a test.
    argv = [shutil.which("redis-server") or "redis-server", str(conf)]
    argv += ["--repl-diskless-sync-delay", "0"]
    if replica_of is not None:
        argv += ["--replicaof", "127.0.0.1", str(replica_of)]
    return port, procs.start(argv, port)


def client(port: int) -> redis.Redis:
    return redis.Redis(port=port, password=PASSWORD, socket_timeout=2, decode_responses=True)


def test_master_refuses_writes_without_a_replica(procs: Procs, tmp_path: Path) -> None:
    master_port, _ = start_redis(procs, tmp_path / "master")
    master = client(master_port)
    assert master.config_get("min-replicas-to-write")["min-replicas-to-write"] == "1"
    with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
        master.set("failover:{lab}:leader", "x", nx=True, px=3000)

    replica_port, replica_proc = start_redis(procs, tmp_path / "replica", replica_of=master_port)

    def replica_in_sync() -> bool:
        info = master.info("replication")
        return (
            int(info.get("connected_slaves", 0)) >= 1
            and int(info.get("min_slaves_good_slaves", 0)) >= 1
        )

    wait_for_sync(replica_in_sync, 10, "the replica to sync")
    assert master.set("failover:{lab}:leader", "x", nx=True, px=3000)
    assert master.execute_command("WAIT", 1, 10_000) == 1  # returns once acknowledged
    assert client(replica_port).get("failover:{lab}:leader") == "x"

    # The replica's host dies.
    replica_proc.kill()
    replica_proc.wait(5)
    wait_for_sync(lambda: int(master.info("replication")["connected_slaves"]) == 0, 10, "drop")
    with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
        master.set("failover:{lab}:leader", "y", xx=True, px=3000)


def test_three_sentinels_reach_their_quorum(procs: Procs, tmp_path: Path) -> None:
    if reason := tools.missing("redis-sentinel"):
        pytest.skip(reason)
    master_port, _ = start_redis(procs, tmp_path / "master")
    sentinel_ports = []
    for i in range(3):
        workdir = tmp_path / f"sentinel{i}"
        workdir.mkdir()
        port = free_port()
        auth = workdir / "auth.conf"
        auth.write_text(f"sentinel auth-pass failover-bot {PASSWORD}\n")
        conf = loopback_copy(
            REDIS_DIR / "sentinel.conf", workdir / "sentinel.conf", port, str(auth), master_port
        )
        procs.start([shutil.which("redis-sentinel") or "redis-sentinel", str(conf)], port)
        sentinel_ports.append(port)
    first = redis.Redis(port=sentinel_ports[0], socket_timeout=2, decode_responses=True)
    master = first.sentinel_master("failover-bot")
    assert int(master["quorum"]) == 2
    assert int(master["port"]) == master_port
    # The sentinels find each other through the master (hello every 2 s).
    wait_for_sync(
        lambda: int(first.sentinel_master("failover-bot")["num-other-sentinels"]) == 2,
        15,
        "the sentinels to discover each other",
    )
    assert "OK" in str(first.execute_command("SENTINEL", "CKQUORUM", "failover-bot"))
