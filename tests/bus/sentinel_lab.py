"""A Redis Sentinel lab on loopback: master, one replica, three sentinels, a cuttable proxy.

Sentinels and the replica reach the master through the cuttable TCP proxy of the
end-to-end tests, so a test can cut the master off from them while clients still reach
it directly.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from harness import tools
from harness.proxy import ProxyProcess
from tests.helpers import RedisServer, free_port, port_open, wait_for_sync

SERVICE = "svc"
REPLICA_ARGS = [
    "--min-replicas-to-write",
    "1",
    "--min-replicas-max-lag",
    "2",
    "--repl-diskless-sync-delay",  # full syncs start at once (default: wait 5 s)
    "0",
]


class Sentinel:
    def __init__(self, workdir: Path, master_port: int) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.master_port = master_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 400\n"
            f"sentinel failover-timeout {SERVICE} 4000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        exe = tools.need("redis-sentinel")
        self.proc = subprocess.Popen(
            [exe, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_sync(lambda: port_open(self.port), 10, "sentinel to listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1)


class SentinelLab:
    def __init__(self, workdir: Path) -> None:
        self.master = RedisServer(workdir / "master", extra=REPLICA_ARGS)
        self.proxy = ProxyProcess(self.master.port)
        self.replica = RedisServer(
            workdir / "replica",
            extra=[*REPLICA_ARGS, "--replicaof", "127.0.0.1", str(self.proxy.port)],
        )
        self.sentinels = [Sentinel(workdir / f"s{i}", self.proxy.port) for i in range(3)]

    @property
    def sentinel_addrs(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def start(self) -> None:
        self.master.start()
        self.proxy.start()
        self.replica.start()
        for s in self.sentinels:
            s.start()
        wait_for_sync(self._settled, 20, "sentinels to see the replica and each other")

    def _settled(self) -> bool:
        try:
            for s in self.sentinels:
                with s.client() as c:
                    state = c.sentinel_master(SERVICE)
                    if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                        return False
            with redis.Redis(port=self.master.port, socket_timeout=1) as m:
                return int(m.info("replication")["connected_slaves"]) >= 1
        except redis.RedisError:
            return False

    def master_port_seen(self) -> int | None:
        """The master's port as a majority of the sentinels report it."""
        ports: list[int] = []
        for s in self.sentinels:
            try:
                with s.client() as c:
                    _host, port = c.sentinel_get_master_addr_by_name(SERVICE)
                    ports.append(int(port))
            except (redis.RedisError, TypeError):
                continue
        for port in ports:
            if ports.count(port) >= 2:
                return port
        return None

    def isolate_master(self) -> None:
        """The sentinels and the replica lose the master: connections reset, new refused."""
        self.proxy.cut(new="refuse", existing="reset")

    def heal_master(self) -> None:
        self.proxy.heal()

    def writable_with_replica(self, port: int) -> bool:
        try:
            with redis.Redis(port=port, socket_timeout=1) as c:
                info = c.info("replication")
                return info["role"] == "master" and int(info["connected_slaves"]) >= 1
        except redis.RedisError:
            return False

    def stop(self) -> None:
        for s in self.sentinels:
            s.stop()
        self.proxy.stop()
        self.replica.kill()
        self.master.kill()
