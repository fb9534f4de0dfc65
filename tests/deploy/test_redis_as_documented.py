"""deploy/redis as deploy/redis/README.md installs it: the shipped redis.conf and
sentinel.conf, unchanged, at their real paths, started as user `redis` the way
Debian 12's units start them (UMask=007), in a network namespace of the test's own
(so ports 6379 and 26379 are free) and a private mount namespace in which
/etc/redis, /var/lib/redis and /run/redis are directories of the test.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import tools
from tests.deploy.conftest import REPO
from tests.helpers import wait_for_sync

REDIS_DIR = REPO / "deploy" / "redis"
ADDRESS = "192.0.2.51"  # this Redis host's address in the test's namespace
PASSWORD = "redis-test-password"
SENTINEL_PASSWORD = "sentinel-test-password"

# The host's setup, as deploy/redis/README.md gives it, with the test's address.
HOST_SETUP = f"""
set -eu
install -d -o redis -g redis -m 2770 /etc/redis
install -d -o redis -g redis -m 0750 /var/lib/redis
install -o redis -g redis -m 0640 "$SRC/redis.conf" /etc/redis/redis.conf
install -o redis -g redis -m 0640 "$SRC/sentinel.conf" /etc/redis/sentinel.conf
umask 027
printf 'bind 127.0.0.1 %s\\nrequirepass %s\\nmasterauth %s\\n' \\
    {ADDRESS} {PASSWORD} {PASSWORD} > /etc/redis/failover-bot.conf
printf 'bind 127.0.0.1 %s\\nrequirepass %s\\nsentinel sentinel-pass %s\\n%s\\n' \\
    {ADDRESS} {SENTINEL_PASSWORD} {SENTINEL_PASSWORD} \\
    "sentinel auth-pass failover-bot {PASSWORD}" \\
    > /etc/redis/failover-bot-sentinel.conf
chown redis:redis /etc/redis/failover-bot.conf /etc/redis/failover-bot-sentinel.conf
"""

# Debian's ExecStart lines, run with the unit's User=, Group= and UMask=.
UNIT_START = """
install -d -o redis -g redis -m 2755 /run/redis /run/sentinel
cd /
as_redis() {
    setpriv --reuid=redis --regid=redis --init-groups bash -c "umask 007; exec $*"
}
as_redis /usr/bin/redis-server /etc/redis/redis.conf --supervised systemd --daemonize no \\
    >"$LOGS/redis.log" 2>&1 &
as_redis /usr/bin/redis-sentinel /etc/redis/sentinel.conf --supervised systemd --daemonize no \\
    >"$LOGS/sentinel.log" 2>&1 &
wait
"""


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, **kw)  # type: ignore[call-overload, no-any-return]


class RedisHost:
    """One Redis host: a network namespace, a mount namespace, the two services."""

    def __init__(self, root: Path) -> None:
        self.ns = "fb-redis-" + uuid.uuid4().hex[:8]
        self.root = root
        self.dirs = {
            p: root / p.strip("/").replace("/", "-")
            for p in ("/etc/redis", "/var/lib/redis", "/run/redis", "/run/sentinel")
        }
        self.logs = root / "logs"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        _run(["ip", "netns", "add", self.ns]).check_returncode()
        self.exec(["ip", "link", "set", "lo", "up"])
        self.exec(["ip", "addr", "add", f"{ADDRESS}/32", "dev", "lo"])
        self.logs.mkdir()
        os.chmod(self.root, 0o755)
        binds = ""
        for path, host_dir in self.dirs.items():
            host_dir.mkdir()
            binds += f"mkdir -p {path}; mount --bind {host_dir} {path}\n"
        script = "mount --make-rprivate /\n" + binds + HOST_SETUP + UNIT_START
        env = {**os.environ, "SRC": str(REDIS_DIR), "LOGS": str(self.logs)}
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--fork", "bash", "-c", script],
            env=env,
            start_new_session=True,
        )

    def exec(self, argv: list[str]) -> str:
        proc = _run(["ip", "netns", "exec", self.ns, *argv])
        assert proc.returncode == 0, f"{argv}: {proc.stderr}"
        return proc.stdout

    def cli(self, port: int, password: str, *args: str) -> str:
        proc = _run(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                "redis-cli",
                "--no-auth-warning",
                "-p",
                str(port),
                "-a",
                password,
                *args,
            ]
        )
        return proc.stdout.strip() if proc.returncode == 0 else f"ERROR {proc.stderr}"

    def log(self) -> str:
        return "".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.logs.glob("*.log")))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)
        _run(["ip", "netns", "del", self.ns])


@pytest.fixture
def host(tmp_path: Path) -> Iterator[RedisHost]:
    if reason := tools.missing(
        "redis-server", "redis-sentinel", "redis-cli", "unshare", "setpriv", "ip"
    ):
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, user redis)")
    try:
        pwd.getpwnam("redis")
    except KeyError:
        _run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "redis",
            ]
        ).check_returncode()
    h = RedisHost(tmp_path / "host")
    h.root.mkdir()
    try:
        h.start()
        yield h
    finally:
        h.stop()


def test_documented_redis_and_sentinel_start_as_user_redis(host: RedisHost) -> None:
    def up() -> bool:
        assert host.proc is not None and host.proc.poll() is None, host.log()
        return (
            host.cli(6379, PASSWORD, "ping") == "PONG"
            and host.cli(26379, SENTINEL_PASSWORD, "ping") == "PONG"
        )

    wait_for_sync(up, 20, "redis and sentinel to answer")
    # Both run as redis, listen where the host file says, and demand their passwords.
    listening = host.exec(["ss", "-Hltnp"])
    pids = {int(pid) for pid in re.findall(r"pid=(\d+)", listening)}
    owners = {pwd.getpwuid(Path(f"/proc/{pid}").stat().st_uid).pw_name for pid in pids}
    assert pids and owners == {"redis"}, listening
    for port in (6379, 26379):
        assert f"127.0.0.1:{port}" in listening and f"{ADDRESS}:{port}" in listening, listening
        assert f"0.0.0.0:{port}" not in listening and f"*:{port}" not in listening, listening
    assert "NOAUTH" in host.cli(6379, "", "ping") + host.cli(
        6379, "wrong", "ping"
    ) or "WRONGPASS" in host.cli(6379, "wrong", "ping")
    assert host.cli(26379, "wrong", "ping") != "PONG"
    # Redis writes its append-only files where the unit lets it.
    assert host.cli(6379, PASSWORD, "config", "get", "dir").splitlines()[1] == "/var/lib/redis"
    wait_for_sync(
        lambda: (
            any(host.dirs["/var/lib/redis"].rglob("*.aof"))
            or any(host.dirs["/var/lib/redis"].glob("appendonlydir"))
        ),
        10,
        "the append-only file",
    )
    # Sentinel watches a master on this host (the shipped one is on another host) with
    # auth-pass, and rewrites its configuration: it may, and the result stays private.
    for command in (
        ["sentinel", "remove", "failover-bot"],
        ["sentinel", "monitor", "failover-bot", "127.0.0.1", "6379", "1"],
        ["sentinel", "set", "failover-bot", "auth-pass", PASSWORD],
    ):
        assert host.cli(26379, SENTINEL_PASSWORD, *command) == "OK", command
    wait_for_sync(
        lambda: (
            _field(
                host.cli(26379, SENTINEL_PASSWORD, "sentinel", "master", "failover-bot"), "flags"
            )
            == "master"
        ),
        15,
        "sentinel to reach the master with auth-pass",
    )
    assert host.cli(26379, SENTINEL_PASSWORD, "sentinel", "flushconfig") == "OK"
    sentinel_conf = host.dirs["/etc/redis"] / "sentinel.conf"
    assert "sentinel monitor failover-bot 127.0.0.1 6379 1" in sentinel_conf.read_text()
    for path in host.dirs["/etc/redis"].iterdir():
        st = path.stat()
        assert st.st_mode & 0o007 == 0, f"{path.name} is readable by others"
        assert pwd.getpwuid(st.st_uid).pw_name == "redis", path.name
    assert host.dirs["/etc/redis"].stat().st_mode & 0o7777 == 0o2770
    # The bot reaches the master through the password-protected sentinels.
    script = textwrap.dedent(f"""
        import asyncio, sys
        from bot.config import parse_config
        from bot.bus import Bus
        open(sys.argv[1] + "/r.pw", "w").write("{PASSWORD}")
        open(sys.argv[1] + "/s.pw", "w").write("{SENTINEL_PASSWORD}")
        cfg = parse_config('''
        [node]
        id = "a"
        state_dir = "/tmp"
        [cluster]
        name = "lab"
        [redis]
        sentinels = ["{ADDRESS}:26379"]
        service_name = "failover-bot"
        password_file = "r.pw"
        sentinel_password_file = "s.pw"
        timeout = "500ms"
        ''', sys.argv[1])
        async def main():
            bus = Bus.from_config(cfg)
            await bus.connect()
            print("run_id", await bus.server_run_id())
            await bus.close()
        asyncio.run(main())
    """)
    secrets = host.root / "bot"
    secrets.mkdir()
    out = _run(
        ["ip", "netns", "exec", host.ns, sys.executable, "-c", script, str(secrets)], cwd=REPO
    )
    assert out.returncode == 0 and out.stdout.startswith("run_id "), out.stderr + host.log()


def _field(reply: str, name: str) -> str:
    lines = reply.splitlines()
    for key, value in zip(lines[::2], lines[1::2], strict=False):
        if key == name:
            return value
    return ""
