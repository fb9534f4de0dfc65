"""`check-config --host`: the facts of this host the configuration depends on.

Each check gives one line: OK, or a problem with the fix. Nothing here changes
the host; the serial port is opened and closed, the state directory gets a
probe file that is removed again. Paths of the host (sysfs, unit directories)
are arguments, so tests can point them elsewhere.
"""

from __future__ import annotations

import asyncio
import grp
import ipaddress
import json
import math
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from bot.config import Config, Secret, split_hostport

OPERATOR_GROUP = "failover"  # may read the API token and Redis passwords (0640)
GROUP_READABLE_OK = ("api.token_file", "redis.password_file", "redis.sentinel_password_file")
UNIT_DIRS = (
    Path("/etc/systemd/system"),
    Path("/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
)
COMMAND_TIMEOUT = 5.0
RTT_SAMPLES = 5
RTT_HEADROOM = 5.0  # redis.timeout must be at least this many round trips
GOOD_CLOCKSOURCES = ("tsc", "kvm-clock", "arch_sys_counter", "hyperv_clocksource_tsc_page")


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        if self.ok:
            return f"OK       {self.check}: {self.detail}"
        return f"PROBLEM  {self.check}: {self.detail}" + (
            f"\n         fix: {self.fix}" if self.fix else ""
        )


@dataclass
class Host:
    """Where this host keeps what the checks read; defaults are the real places."""

    sys_class_net: Path = Path("/sys/class/net")
    clocksource: Path = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    unit_dirs: tuple[Path, ...] = UNIT_DIRS
    drbd_conf: str | None = None  # drbdadm -c FILE; None: its default (/etc/drbd.conf)
    which: Callable[[str], str | None] = shutil.which
    local_addresses: Callable[[], set[str]] | None = None
    route_source: Callable[[str], str | None] | None = None  # source address toward a host
    # The bot unit's properties as the running systemd has them (None: not known there).
    systemctl_show: Callable[[str], dict[str, str] | None] | None = field(
        default_factory=lambda: _systemctl_show
    )
    findings: list[Finding] = field(default_factory=list)


def secret_files(cfg: Config) -> list[tuple[str, Secret]]:
    found: list[tuple[str, Secret | None]] = [
        ("cluster.secret_file", cfg.cluster.secret_file),
        ("redis.password_file", cfg.redis.password_file),
        ("redis.sentinel_password_file", cfg.redis.sentinel_password_file),
        ("ami.secret_file", cfg.ami.secret_file),
        ("ari.password_file", cfg.ari.password_file if cfg.ari else None),
        ("api.token_file", cfg.api.token_file),
    ]
    found += [
        (f"notify.webhooks[{i}].url_file", h.url_file) for i, h in enumerate(cfg.notify.webhooks)
    ]
    return [(k, s) for k, s in found if s is not None]


def check_secret_mode(key: str, path: Path, st: os.stat_result, group_name: str | None) -> Finding:
    """Owned by root, nobody else may read it (the operators' group may, for some)."""
    mode = stat.S_IMODE(st.st_mode)
    what = f"{path} ({mode:04o}, uid {st.st_uid}, group {group_name or st.st_gid})"
    fix = f"chown root:root {path} && chmod 0600 {path}"
    if key in GROUP_READABLE_OK:
        fix += f" (or root:{OPERATOR_GROUP} 0640 for operators)"
    if st.st_uid != 0:
        return Finding(key, False, f"{what} is not owned by root", fix)
    if mode & 0o007:
        return Finding(key, False, f"{what} is readable or writable by others", fix)
    if mode & 0o070:
        if key in GROUP_READABLE_OK and group_name == OPERATOR_GROUP and not mode & 0o020:
            return Finding(key, True, f"{what}: root and the {OPERATOR_GROUP} group")
        return Finding(key, False, f"{what} is open to its group", fix)
    return Finding(key, True, f"{what}: root only")


def _group(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def check_secrets(cfg: Config) -> list[Finding]:
    out = []
    for key, secret in secret_files(cfg):
        if secret.source.startswith("env:"):
            out.append(Finding(key, True, f"{secret.source} (the environment, not a file)"))
            continue
        path = Path(secret.source)
        try:
            st = path.stat()
        except OSError as exc:
            out.append(Finding(key, False, f"{path}: {exc.strerror}", f"create {path} (0600)"))
            continue
        out.append(check_secret_mode(key, path, st, _group(st.st_gid)))
    return out


def check_interface(cfg: Config, host: Host) -> list[Finding]:
    if cfg.vip is None:
        return []
    name = cfg.vip.interface
    if getattr(cfg.vip, "netns", None):
        return [Finding("vip.interface", True, f"{name} in network namespace (not checked)")]
    if (host.sys_class_net / name).exists():
        return [Finding("vip.interface", True, f"{name} present")]
    present = (
        sorted(p.name for p in host.sys_class_net.iterdir()) if host.sys_class_net.is_dir() else []
    )
    return [
        Finding(
            "vip.interface",
            False,
            f"no interface {name} on this host (present: {', '.join(present) or 'none'})",
            "set [vip] interface to the LAN interface phones reach (ip -br link)",
        )
    ]


def check_serial(cfg: Config) -> list[Finding]:
    if cfg.rseries is None:
        return []
    port = cfg.rseries.port
    if not port.startswith("/"):
        return [Finding("rseries.port", True, f"{port} (a pyserial URL, not a device: not opened)")]
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        return [
            Finding(
                "rseries.port",
                False,
                f"cannot open {port}: {exc.strerror}",
                "cable the appliance's console; ls -l /dev/serial/by-id/ and use that path",
            )
        ]
    try:
        is_tty = os.isatty(fd)
    finally:
        os.close(fd)
    if not is_tty:
        return [Finding("rseries.port", False, f"{port} is not a serial device", "use the tty")]
    return [Finding("rseries.port", True, f"{port} opens")]


def check_state_dir(cfg: Config) -> list[Finding]:
    path = Path(cfg.node.state_dir)
    fix = f"install -d -m 0700 {path} (systemd's StateDirectory= creates it at start)"
    if not path.is_dir():
        return [Finding("node.state_dir", False, f"{path} does not exist", fix)]
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o022:
        return [Finding("node.state_dir", False, f"{path} is writable by others ({mode:04o})", fix)]
    probe = path / f".check-config-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        return [Finding("node.state_dir", False, f"cannot write to {path}: {exc.strerror}", fix)]
    return [Finding("node.state_dir", True, f"{path} writable (fsync)")]


def check_mounts(cfg: Config) -> list[Finding]:
    out = []
    for mount in cfg.drbd.mount if cfg.drbd else []:
        path = Path(mount.path)
        if path.is_dir():
            out.append(Finding("drbd.mount", True, f"mount point {path} exists"))
        else:
            out.append(Finding("drbd.mount", False, f"no directory {path}", f"mkdir {path}"))
    return out


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return proc.returncode, (proc.stderr or proc.stdout).strip()


def check_drbd(cfg: Config, host: Host) -> list[Finding]:
    if cfg.drbd is None:
        return []
    exe = host.which("drbdadm")
    if exe is None:
        return [Finding("drbd.resources", False, "drbdadm not found", "apt-get install drbd-utils")]
    out = []
    for res in cfg.drbd.resources:
        argv = [exe, *(["-c", host.drbd_conf] if host.drbd_conf else []), "dump", res]
        code, text = _run(argv)
        if code == 0:
            out.append(Finding("drbd.resources", True, f"{res} known to drbdadm"))
        else:
            last = text.splitlines()[-1] if text else f"exit {code}"
            out.append(
                Finding(
                    "drbd.resources",
                    False,
                    f"drbdadm does not know {res}: {last}",
                    f"install /etc/drbd.d/{res}.res (deploy/drbd/README.md)",
                )
            )
    return out


def _timed(argv: list[str]) -> float:
    started = time.monotonic()
    _run(argv)
    return time.monotonic() - started


def check_fence_timing(cfg: Config, host: Host) -> list[Finding]:
    """Time the fence's commands here against ``cluster.fence_budget`` (rule 3). Nothing
    is changed: the floating IP's step is timed by listing the interface's addresses, the
    Asterisk kill by the status command (the same service manager answers both; the kill
    itself is never run here), and DRBD's demotion by ``drbdadm role``."""
    budget = cfg.cluster.fence_budget
    timed: list[tuple[str, float]] = []
    if cfg.vip is not None and host.which("ip") is not None:
        argv = ["ip", "-o", "addr", "show", "dev", cfg.vip.interface]
        if cfg.vip.netns:
            argv = ["ip", "netns", "exec", cfg.vip.netns, *argv]
        timed.append(("ip", _timed(argv)))
    if cfg.asterisk.status:
        timed.append(
            (f"asterisk ({cfg.asterisk.status[0]}, as the kill)", _timed(cfg.asterisk.status))
        )
    if cfg.drbd is not None and host.which("drbdadm") is not None:
        conf = ["-c", host.drbd_conf] if host.drbd_conf else []
        for res in cfg.drbd.resources:
            timed.append((f"drbdadm {res}", _timed(["drbdadm", *conf, "role", res])))
    total = sum(t for _, t in timed)
    parts = ", ".join(f"{name} {t * 1000:.0f} ms" for name, t in timed)
    detail = f"fence commands {parts}: {total * 1000:.0f} ms of {budget * 1000:.0f} ms"
    if total <= budget:
        return [Finding("cluster.fence_budget", True, detail)]
    return [
        Finding(
            "cluster.fence_budget",
            False,
            detail + " (a fence here would outlast its budget)",
            f"raise cluster.fence_budget to at least {math.ceil(total * 1.5 * 10) / 10:g}s, "
            "and lease_ttl so that renew_interval + 2 x redis.timeout + drift_margin + "
            "fence_budget <= lease_ttl",
        )
    ]


def _unit_file(host: Host, unit: str) -> Path | None:
    for d in host.unit_dirs:
        if (d / unit).exists():
            return d / unit
    return None


def check_asterisk_unit(cfg: Config, host: Host) -> list[Finding]:
    start = cfg.asterisk.start
    if not start or Path(start[0]).name != "systemctl":
        exe = start[0] if start else ""
        ok = bool(exe) and (host.which(exe) is not None or Path(exe).exists())
        fix = "set [asterisk] start to a command that exists"
        return [Finding("asterisk.start", ok, f"{exe or 'no command'}", "" if ok else fix)]
    unit = start[-1] if start[-1].endswith(".service") else f"{start[-1]}.service"
    found = _unit_file(host, unit)
    if found is None:
        return [
            Finding(
                "asterisk.start",
                False,
                f"no unit {unit}",
                "install Asterisk's unit (deploy/README.md, step 2)",
            )
        ]
    out = [Finding("asterisk.start", True, f"{unit} at {found}")]
    wanted = [p for d in host.unit_dirs for p in d.glob(f"*.wants/{unit}")]
    if wanted:
        out.append(
            Finding(
                "asterisk.start",
                False,
                f"{unit} is enabled at boot ({wanted[0]})",
                f"systemctl disable {unit}: only the bot starts Asterisk",
            )
        )
    dropin = [d / f"{unit}.d" / "failover-bot.conf" for d in host.unit_dirs]
    if not any(p.exists() for p in dropin):
        out.append(
            Finding(
                "asterisk.start",
                False,
                f"no drop-in {dropin[0]}",
                "install deploy/systemd/asterisk.service.d/failover-bot.conf there",
            )
        )
    return out


def _addresses() -> set[str]:
    code, _ = _run(["ip", "-V"])
    if code != 0:
        return set()
    try:
        proc = subprocess.run(
            ["ip", "-j", "addr"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT
        )
        return {a["local"] for link in json.loads(proc.stdout) for a in link.get("addr_info", [])}
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return set()


def check_api(cfg: Config, host: Host) -> list[Finding]:
    listen_host, _port = split_hostport(cfg.api.listen)
    if listen_host in ("0.0.0.0", "::", "*", ""):
        return [
            Finding(
                "api.listen",
                False,
                f"{cfg.api.listen}: /status, /events and /metrics answer on every address",
                "listen on this node's cluster LAN address; firewall 9440 to the peer and "
                "Prometheus (deploy/README.md, Firewall)",
            )
        ]
    addrs = (host.local_addresses or _addresses)()
    if listen_host not in addrs and listen_host != "localhost":
        return [
            Finding(
                "api.listen",
                False,
                f"{listen_host} is not an address of this host",
                "use one of: " + ", ".join(sorted(addrs)),
            )
        ]
    out = [Finding("api.listen", True, f"{cfg.api.listen} is an address of this host")]
    for peer in cfg.cluster.peers:
        peer_host = urlparse(peer.api).hostname or ""
        source = (host.route_source or _route_source)(peer_host)
        if source is None:
            out.append(
                Finding(
                    "api.listen",
                    False,
                    f"no route to {peer.id} at {peer_host}",
                    "the nodes must share the cluster LAN",
                )
            )
        elif source != listen_host and not _loopback(listen_host):
            out.append(
                Finding(
                    "api.listen",
                    False,
                    f"{peer.id} at {peer_host} is reached from {source}, but the API listens on "
                    f"{listen_host}: the peer's heartbeats may not reach it",
                    f"listen on {source}, and name it in the peer's cluster.peers",
                )
            )
        else:
            out.append(
                Finding("api.listen", True, f"{peer.id} at {peer_host} is reached from {source}")
            )
    return out


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _route_source(peer_host: str) -> str | None:
    try:
        proc = subprocess.run(
            ["ip", "-j", "route", "get", peer_host],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        routes = json.loads(proc.stdout) if proc.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    source = routes[0].get("prefsrc") if routes else None
    return str(source) if source else None


async def _redis(cfg: Config) -> list[Finding]:
    from bot.bus import Bus, BusError

    bus = Bus.from_config(cfg)
    where = f"sentinels {', '.join(cfg.redis.sentinels)}" if cfg.redis.sentinels else cfg.redis.url
    try:
        await bus.connect()
        run_id = await bus.server_run_id()
        seen = await bus.last_seen_times()
        rtts = []
        for _ in range(RTT_SAMPLES):
            started = time.monotonic()
            await bus.read_lease()
            rtts.append(time.monotonic() - started)
    except (BusError, OSError) as exc:
        fix = "Redis and Sentinel up? firewall 6379/26379? passwords?"
        return [Finding("redis", False, f"{where}: {_short(exc)}", fix)]
    finally:
        await bus.close()
    return [
        Finding("redis", True, f"{where}: answers (run_id {run_id[:8]})"),
        round_trip_finding(cfg, sorted(rtts)[len(rtts) // 2]),
        cluster_name_finding(cfg, seen),
    ]


def round_trip_finding(cfg: Config, rtt: float) -> Finding:
    """A Redis that answers in more than a fifth of redis.timeout leaves no margin: load
    or one retransmission turns into missed renewals (the fast profile needs well
    under 10 ms for its 50 ms timeout)."""
    limit = cfg.redis.timeout / RTT_HEADROOM
    what = f"round trip {rtt * 1000:.1f} ms (median of {RTT_SAMPLES} reads)"
    if rtt <= limit:
        return Finding("redis.timeout", True, f"{what} <= redis.timeout / {RTT_HEADROOM:g}")
    return Finding(
        "redis.timeout",
        False,
        f"{what} > redis.timeout / {RTT_HEADROOM:g} = {limit * 1000:.0f} ms: renewals "
        "would time out under load",
        "put Redis on the PBX servers' LAN, or use a profile with a longer redis.timeout "
        "(deploy/README.md, Timing profiles)",
    )


def cluster_name_finding(cfg: Config, seen: dict[str, tuple[float, str | None]]) -> Finding:
    """Several pairs may share one Redis/Sentinel, each under its own cluster.name; nodes
    this configuration does not know writing under our name are another pair (or a
    renamed node): both pairs would fight over one lease."""
    ours = {cfg.node.id, *cfg.peer_ids}
    foreign = sorted(set(seen) - ours)
    name = cfg.cluster.name
    if not foreign:
        return Finding("cluster.name", True, f"{name}: no other nodes under failover:{{{name}}}")

    ages = ", ".join(f"{n} (last seen {time.time() - seen[n][0]:.0f} s ago)" for n in foreign)
    return Finding(
        "cluster.name",
        False,
        f"{name}: nodes this configuration does not name write under failover:{{{name}}} on "
        f"this Redis: {ages}; two pairs with one name share one lease",
        "give each pair its own cluster.name (deploy/README.md, several pairs on one "
        "Sentinel); a node renamed on purpose: its old entry goes once removed from "
        f"failover:{{{name}}}:nodes and :seen",
    )


def _short(exc: BaseException, limit: int = 160) -> str:
    """redis-py's errors can embed whole client reprs: the first part is the news."""
    text = str(exc).split(" : ", 1)[0].strip() or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def _peer(cfg: Config) -> list[Finding]:
    import aiohttp

    out = []
    timeout = aiohttp.ClientTimeout(total=2.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for peer in cfg.cluster.peers:
            try:
                async with session.get(peer.api + "/health") as resp:
                    out.append(
                        Finding("cluster.peers", True, f"{peer.id} API answers ({resp.status})")
                    )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                out.append(
                    Finding(
                        "cluster.peers",
                        False,
                        f"{peer.id} API {peer.api} does not answer: {type(exc).__name__}",
                        "is the peer's bot running? firewall 9440 between the nodes",
                    )
                )
    return out


def _systemctl_show(unit: str) -> dict[str, str] | None:
    if not Path("/run/systemd/system").is_dir():
        return None
    code, out = _run(
        ["systemctl", "show", "-p", "LoadState,WatchdogUSec,TimeoutStopUSec,Nice", unit]
    )
    shown = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
    if code != 0 or shown.get("LoadState") != "loaded":
        return None
    return shown


def check_bot_unit(cfg: Config, host: Host) -> list[Finding]:
    """WatchdogSec against the lease timings, the fast profile's priority, TimeoutStopSec
    against the stop's hand-over."""
    from bot import unitcheck as u

    shown = host.systemctl_show(u.UNIT) if host.systemctl_show else None
    if shown is not None:
        settings, where = u.from_show(shown), "systemctl show"
    else:
        texts = u.unit_texts(host.unit_dirs)
        if texts is None:
            fix = "make install-host (deploy/README.md, step 2), then systemctl daemon-reload"
            return [Finding("systemd.watchdog", False, f"no {u.UNIT} installed", fix)]
        settings, where = u.service_settings(texts), "the unit file and drop-ins"
    c = cfg.cluster
    limit = u.watchdog_limit(c.lease_ttl, c.renew_interval, c.fence_budget)
    rule = f"lease_ttl - renew_interval - fence_budget = {u.ms(limit)}"
    fix = f"systemctl edit failover-bot: [Service] WatchdogSec={u.ms(limit)}"
    out: list[Finding] = []
    watchdog = u.parse_timespan(settings.get("WatchdogSec", "0"))
    if watchdog is None:
        text = settings["WatchdogSec"]
        out.append(Finding("systemd.watchdog", False, f"WatchdogSec={text} unreadable", fix))
    elif watchdog == 0:
        out.append(
            Finding(
                "systemd.watchdog", False, f"watchdog off ({where}): a stalled bot is never killed",
                fix,
            )
        )  # fmt: skip
    elif watchdog > limit + 1e-9:
        out.append(
            Finding(
                "systemd.watchdog", False,
                f"WatchdogSec={u.ms(watchdog)} ({where}) exceeds {rule}: a stalled primary "
                "keeps its services after its lease ran out",
                fix,
            )
        )  # fmt: skip
    else:
        out.append(Finding("systemd.watchdog", True, f"WatchdogSec={u.ms(watchdog)} <= {rule}"))
    if c.lease_ttl < u.FAST_LEASE:
        nice_text = settings.get("Nice", "0")
        nice = int(nice_text) if re.fullmatch(r"-?\d+", nice_text) else 0
        if nice > u.FAST_NICE:
            out.append(
                Finding(
                    "systemd.nice", False,
                    f"Nice={nice} with a {u.ms(c.lease_ttl)} lease (fast profile): a bot that "
                    "waits for the CPU a few hundred ms is a false failover",
                    f"systemctl edit failover-bot: [Service] Nice={u.FAST_NICE}; give Redis "
                    "the same priority",
                )
            )  # fmt: skip
        else:
            out.append(Finding("systemd.nice", True, f"Nice={nice} (fast profile)"))
    from bot.agent.stop import DEMOTE_MARGIN

    need = c.stop_drain_timeout + DEMOTE_MARGIN + u.STOP_SLACK
    stop = u.parse_timespan(settings.get("TimeoutStopSec", "90s"))
    if stop is not None and 0 < stop < need:
        out.append(
            Finding(
                "systemd.stop_timeout", False,
                f"TimeoutStopSec={stop:g}s < stop_drain_timeout + hand-over = {need:g}s: "
                "systemd kills the bot in the middle of its stop's hand-over",
                f"systemctl edit failover-bot: [Service] TimeoutStopSec={need:g}s",
            )
        )  # fmt: skip
    else:
        shown_stop = "infinity" if not stop else f"{stop:g}s"
        out.append(Finding("systemd.stop_timeout", True, f"TimeoutStopSec={shown_stop}"))
    return out


def check_clock(host: Host) -> list[Finding]:
    try:
        source = host.clocksource.read_text().strip()
    except OSError:
        return [Finding("clock", False, "clocksource unknown", "")]
    if source in GOOD_CLOCKSOURCES:
        return [Finding("clock", True, f"clocksource {source}")]
    return [
        Finding(
            "clock",
            False,
            f"clocksource {source}: slow or unstable for lease timing",
            "check the kernel log for an unstable TSC; fix the BIOS/hypervisor setting",
        )
    ]


def host_findings(cfg: Config, host: Host | None = None, *, network: bool = True) -> list[Finding]:
    """Every check; ``network``: also Redis and the peer's API (seconds, not milliseconds)."""
    host = host or Host()
    groups: Iterable[list[Finding]] = (
        check_secrets(cfg),
        check_interface(cfg, host),
        check_serial(cfg),
        check_state_dir(cfg),
        check_mounts(cfg),
        check_drbd(cfg, host),
        check_asterisk_unit(cfg, host),
        check_fence_timing(cfg, host),
        check_bot_unit(cfg, host),
        check_api(cfg, host),
        check_clock(host),
    )
    out = [f for g in groups for f in g]
    if network:

        async def both() -> list[Finding]:
            return [*await _redis(cfg), *await _peer(cfg)]

        out += asyncio.run(both())
    return out
