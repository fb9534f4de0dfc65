"""The failover benchmark: a real two-node lab cluster, faults injected from outside.

    .venv/bin/python bench/failover.py [--runs N] [--idle SECONDS] [--soak 10m]

For each scenario (host death, Asterisk crash (SIGKILL), Asterisk hang
(SIGSTOP), planned switchover with no calls) it runs N faults on one cluster,
reviving the failed node as the new standby between runs, and reports
p50/p95/p99 of the time from the fault to (a) the lease taken, (b) the spans
routed, (c) Asterisk fully booted, (d) the test call answered on the new
primary, each read from the new primary's event log. For the health-triggered
handovers and the switchover it also reports the time from the fault to the
handover decision (the old primary's "demotion" event: detection), from the
decision to the answered call, and each step's share of the fault -> answered
call time (detection, the old primary's demotion, then each takeover step).
Then each bot's peak RSS and idle CPU share, and with ``--soak`` a loaded run
(both CPUs kept busy) that counts false failovers and dual primaries.
With a client probe in the lab's client namespace (bench/probe.py) each host
death is also timed as a caller's device sees it: the client's neighbour entry
for the floating IP naming the new node ("VIP moved") and the first TCP
handshake on VIP:5060 ("answered"; the simulated Asterisk listens there from
FullyBooted on). ``--profiles default,fast`` runs the host deaths at each timing
profile (fast: deploy/examples/fast-a.toml); ``--compare keepalived`` then runs
keepalived (VRRPv2 1 s adverts, VRRPv3 0.1 s adverts) on the same topology with
the same fault and probe, and prints one side-by-side table. Every fault falls
at a random (``--seed``) point of the renewal or advert cycle.
Needs root (network namespaces), like the end-to-end tests.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.keepalived import SETTINGS as KEEPALIVED  # noqa: E402
from bench.keepalived import KeepalivedPair, keepalived_missing  # noqa: E402
from bench.probe import ClientProbe  # noqa: E402
from bot.config import parse_duration  # noqa: E402
from bot.lab.asterisk import find_binary  # noqa: E402
from bot.lab.cluster import pid_alive  # noqa: E402
from harness.checker import Allowance  # noqa: E402
from harness.cluster import Cluster  # noqa: E402
from harness.vip import Topology, netns_unavailable  # noqa: E402

MILESTONES = ("lease", "route", "fully_booted", "test_call")
# Every takeover step, in order, for the per-step table.
STEPS = ("lease", "route", "drbd", "vip", "asterisk_start", "fully_booted", "test_call")
# The old primary's demotion steps (a health hand-over or a switchover).
DEMOTE_STEPS = ("drain", "asterisk_stop", "vip_down", "drbd_down")
# Fault -> answered test call, cut into consecutive parts for the share table:
# detection (fault -> decision), the old primary's demotion, then the takeover.
SHARES = ("detect", "demoted", *STEPS)
FAULTS = ("asterisk crash", "asterisk hang")  # health-triggered hand-overs
CLIENT = ("moved", "answered")
HOLDDOWN = 2.0
EXAMPLES = REPO / "deploy" / "examples"
PROFILE_KEYS = {
    "cluster": ("lease_ttl", "renew_interval", "drift_margin", "fence_budget"),
    "redis": ("timeout",),
}


def profile_settings(name: str) -> dict[str, dict[str, str]]:
    """The timing keys of a profile: "default" is the lab pair's; others come from
    deploy/examples/NAME-a.toml, the example shipped for that profile."""
    path = EXAMPLES / ("lab-a.toml" if name == "default" else f"{name}-a.toml")
    data = tomllib.loads(path.read_text())
    return {
        section: {k: data[section][k] for k in keys if k in data.get(section, {})}
        for section, keys in PROFILE_KEYS.items()
    }


def watchdog_for(settings: dict[str, dict[str, str]]) -> float:
    """WatchdogSec <= lease_ttl - renew_interval - fence_budget (design section 3)."""
    c = settings["cluster"]
    return (
        parse_duration(c["lease_ttl"])
        - parse_duration(c["renew_interval"])
        - parse_duration(c["fence_budget"])
    )


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def other(node: str) -> str:
    return "b" if node == "a" else "a"


def wait(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def ready(c: Cluster, node: str) -> bool:
    status = c.nodes[node].status() or {}
    return any(n.get("id") == node and n.get("ready") for n in status.get("nodes", []))


def settle(c: Cluster) -> tuple[str, str]:
    primary = c.wait_primary(within=60)
    standby = other(primary)
    c.wait_role(standby, "standby", within=60)
    wait(lambda: ready(c, standby), 60, f"{standby} ready")
    return primary, standby


def milestones(c: Cluster, node: str, since: float) -> dict[str, float]:
    """Seconds from ``since`` (wall) to each milestone, from the node's event log."""
    status = c.nodes[node].status() or {}
    found: dict[str, float] = {}
    for event in status.get("events", []):
        t = float(event.get("time", 0)) - since
        if t < 0:
            continue
        kind = event.get("kind")
        if kind == "lease" and "took the lease" in str(event.get("message")):
            found.setdefault("lease", t)
        elif kind == "step" and event.get("ok"):
            step = str(event.get("step"))
            if step in STEPS:
                found.setdefault(step, t)
    return found


def decision_time(c: Cluster, node: str, since: float) -> float | None:
    status = c.nodes[node].status() or {}
    for event in status.get("events", []):
        if event.get("kind") == "demotion" and float(event.get("time", 0)) >= since:
            return float(event["time"])
    return None


def demoted_time(c: Cluster, node: str, since: float) -> float | None:
    """When the old primary's last demotion step ended (wall), from its event log."""
    status = c.nodes[node].status() or {}
    ends = [
        float(e.get("time", 0))
        for e in status.get("events", [])
        if e.get("kind") == "step"
        and e.get("step") in DEMOTE_STEPS
        and float(e.get("time", 0)) >= since
    ]
    return max(ends) if ends else None


def shares(row: dict[str, float]) -> dict[str, float]:
    """Each part's own duration (the gap from the previous milestone present)."""
    out: dict[str, float] = {}
    last = 0.0
    for name in SHARES:
        if name in row and row[name] >= last:
            out[name] = row[name] - last
            last = row[name]
    return out


def end_fault(pid: int) -> None:
    """After a hang run: the hung Asterisk must be gone (the old primary kills it when it
    demotes); one left behind is said, and ended, so the next run starts clean."""
    if pid_alive(pid):
        print(f"  warning: the hung Asterisk {pid} is still there after the run", flush=True)
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run_scenario(
    c: Cluster,
    name: str,
    runs: int,
    rng: random.Random,
    probe: ClientProbe | None = None,
    nice: int = 0,
) -> list[dict[str, float]]:
    results = []
    period = parse_duration(c.renew_interval)
    for i in range(runs):
        primary, standby = settle(c)
        if name in FAULTS:
            # A node that took over from a hand-over stays through health trouble for
            # failover_holddown (2 s here): let that pass, or it restarts Asterisk instead.
            time.sleep(HOLDDOWN + 0.5)
        # A random point of the renewal cycle: a uniform delay over one period puts the
        # fault at a uniform phase whatever the phase was before.
        time.sleep(rng.uniform(0, period))
        t0 = time.time()
        m0 = time.monotonic()
        if name == "host death":
            c.kill_host(primary)
        elif name in FAULTS:
            pid = c.nodes[primary].asterisk_pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL if name == "asterisk crash" else signal.SIGSTOP)
        elif name == "switchover":
            code = c.nodes[primary].post("/switchover", {"to": standby, "drain_timeout": 0})
            assert code == 202, code
        c.wait_serving(standby, within=60)

        def answered(node: str = standby, since: float = t0) -> bool:
            return "test_call" in milestones(c, node, since)

        wait(answered, 20, "the test call")
        row = milestones(c, standby, t0)
        if probe is not None and c.topology is not None:
            mac = c.topology.mac(standby)
            moved = probe.moved(m0, mac)
            try:
                heard: float | None = probe.wait("answered", m0, 10, mac=mac)
            except TimeoutError:
                heard = None
            row.update({k: v for k, v in (("moved", moved), ("answered", heard)) if v is not None})
        decided = decision_time(c, primary, t0) if name != "host death" else None
        if decided is not None:
            row["detect"] = decided - t0
            row["from_decision"] = row["test_call"] - (decided - t0)
            demoted = demoted_time(c, primary, decided)
            if demoted is not None:
                row["demoted"] = demoted - t0
        if name == "asterisk hang":
            end_fault(pid)
        results.append(row)
        print(
            f"  {name} #{i + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True
        )
        if name == "host death":
            c.revive_host(primary)
            if nice:
                renice(c, nice)
    return results


def epoch_of(c: Cluster) -> int:
    """The cluster's epoch counter on Redis: one more for every lease ever taken anew."""
    client = redis.Redis.from_url(c.redis.url, socket_timeout=2.0)
    try:
        raw = client.get("failover:{lab}:epoch")
    finally:
        client.close()
    return int(raw or 0)


def resources(c: Cluster, idle: float) -> dict[str, dict[str, float]]:
    """Each bot's peak RSS and CPU share over ``idle`` seconds with nothing happening;
    a bot that restarted meanwhile (watchdog, crash) is reported, not measured."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = {n: c.nodes[n].bot_pid() for n in c.nodes}

    def cpu(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    start = {n: cpu(p) for n, p in pids.items() if p}
    epoch0 = epoch_of(c)
    t0 = time.monotonic()
    time.sleep(idle)
    elapsed = time.monotonic() - t0
    out: dict[str, dict[str, float]] = {}
    for n, p in pids.items():
        if not p:
            continue
        try:
            used = cpu(p) - start[n]
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            out[n] = {"rss_mib": float("nan"), "cpu_share": float("nan"), "restarted": 1.0}
            continue
        hwm = 0.0
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
        out[n] = {"rss_mib": hwm, "cpu_share": used / elapsed, "restarted": 0.0}
    out["_cluster"] = {"new_epochs": float(epoch_of(c) - epoch0)}
    return out


@contextmanager
def busy_cpus(n: int) -> Iterator[None]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def soak(c: Cluster, seconds: float) -> dict[str, Any]:
    primary, _ = settle(c)
    epoch0 = epoch_of(c)
    t_start = time.monotonic()
    with busy_cpus(os.cpu_count() or 2):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(1.0)
    verdict = c.verdict(
        Allowance(window=(t_start, time.monotonic()), max_outage=0.0, sample_tolerance=0.05)
    )
    dual = [v for v in verdict.violations if v.kind == "overlap"]
    return {
        "seconds": seconds,
        "false_failovers": epoch_of(c) - epoch0,
        "still_primary": c.primary() == primary,
        "dual_primary": len(dual),
    }


def run_profile(
    args: argparse.Namespace, profile: str, work: Path, rng: random.Random
) -> dict[str, Any]:
    """One lab cluster at one timing profile: the scenarios, idle resources, soak."""
    settings = profile_settings(profile)
    scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    if profile != args.profiles.split(",")[0].strip():
        scenarios = [x for x in scenarios if x == "host death"]
    out: dict[str, Any] = {"profile": profile, "settings": settings, "table": {}}
    with Topology() as topo:
        extra: dict[str, dict[str, Any]] = {
            # A short hold-down, so that back-to-back health-triggered runs are allowed.
            "cluster": {"failover_holddown": f"{HOLDDOWN:g}s", **settings["cluster"]},
            "redis": dict(settings["redis"]),
        }
        c = make_cluster(args, work / profile, topo, settings, extra)
        probe = ClientProbe(topo.ns("client"), topo.vip_address)
        try:
            c.start()
            if args.nice and profile in args.nice_profiles.split(","):
                renice(c, args.nice)
                out["nice"] = args.nice
            probe.start()
            for name in scenarios:
                print(f"{profile}: {name}: {args.runs} runs", flush=True)
                out["table"][name] = run_scenario(
                    c, name, args.runs, rng, probe, nice=out.get("nice", 0)
                )
            settle(c)
            print(f"{profile}: idle {args.idle:.0f} s", flush=True)
            out["resources"] = resources(c, args.idle)
            if args.soak and profile in args.soak_profiles.split(","):
                seconds = parse_duration(args.soak)
                print(f"{profile}: soak {seconds:.0f} s with every CPU kept busy", flush=True)
                out["soak"] = soak(c, seconds)
        finally:
            probe.stop()
            c.stop()
            if not args.keep:
                shutil.rmtree(work / profile, ignore_errors=True)
        out["lease"] = parse_duration(c.lease_ttl)
        out["renew"] = parse_duration(c.renew_interval)
        out["asterisk"] = (
            f"real Asterisk ({c.asterisk_binary})"
            if c.asterisk == "real"
            else f"simulated Asterisk, boot {c.boot_delay:g} s"
        )
    return out


def renice(c: Cluster, nice: int) -> None:
    """Raise the bots' (supervisors', so restarts inherit it) and Redis's CPU priority,
    as the fast profile's systemd drop-in does (deploy/README.md, "Timing profiles")."""
    pids = [c.redis.proc.pid if c.redis.proc else None]
    for node in c.nodes.values():
        pids += [node.supervisor.pid if node.supervisor else None, node.bot_pid()]
    for pid in pids:
        if pid:
            with suppress(ProcessLookupError):
                os.setpriority(os.PRIO_PROCESS, pid, nice)


def make_cluster(
    args: argparse.Namespace,
    work: Path,
    topo: Topology,
    settings: dict[str, dict[str, str]],
    extra: dict[str, dict[str, Any]],
) -> Cluster:
    return Cluster(
        work,
        topo,
        log_level=args.log_level,
        lease_ttl=settings["cluster"]["lease_ttl"],
        renew_interval=settings["cluster"]["renew_interval"],
        watchdog_sec=watchdog_for(settings),
        extra=extra,
        asterisk=args.asterisk,
    )


def run_keepalived(label: str, runs: int, work: Path, rng: random.Random) -> list[dict[str, float]]:
    """The same host death against keepalived, timed by the same client probe."""
    version, advert = KEEPALIVED[label]
    rows = []
    with (
        Topology() as topo,
        KeepalivedPair(topo, work / f"keepalived-v{version}", version=version, advert=advert) as kp,
        ClientProbe(topo.ns("client"), topo.vip_address) as probe,
    ):
        master = kp.wait_master(within=30)
        for i in range(runs):
            backup = "b" if master == "a" else "a"
            # Settled: the backup has heard adverts for a while, and the client knows the master.
            probe.wait("moved", time.monotonic() - 3600, 10, mac=topo.mac(master))
            time.sleep(rng.uniform(0, advert))  # a random point of the advert cycle
            m0 = time.monotonic()
            kp.kill_host(master)
            try:
                moved = probe.wait("moved", m0, 30, mac=topo.mac(backup))
                heard = probe.wait("answered", m0, 30, mac=topo.mac(backup))
            except TimeoutError as exc:
                rows.append({"failed": 1.0})
                print(f"  {label} #{i + 1}: FAILED: {exc}", flush=True)
            else:
                rows.append({"moved": moved, "answered": heard})
                print(f"  {label} #{i + 1}: moved {moved:.3f}, answered {heard:.3f}", flush=True)
            kp.revive_host(master)
            master = kp.wait_master(within=30)
            # The revived node must be a listening backup before the next fault: it has
            # heard adverts for a whole master-down interval without taking over.
            time.sleep(kp.master_down + 1.0)
    return rows


def stats(values: list[float]) -> str:
    if not values:
        return f"{'-':>7} {'-':>7} {'-':>7} {'-':>7}"
    return " ".join(f"{pct(values, p):7.3f}" for p in (50, 95, 99)) + f" {max(values):7.3f}"


def print_profile(result: dict[str, Any], runs: int, idle: float) -> None:
    lease, renew = result["lease"], result["renew"]
    print()
    print(
        f"bot, {result['profile']} profile (lease {lease:g} s, renew {renew:g} s"
        + (f", bots and Redis at nice {result['nice']}" if "nice" in result else "")
        + f"): {runs} runs"
        f" per scenario, {result['asterisk']}; seconds from the"
        " fault (event log of the new primary; moved/answered: the client probe)"
    )
    head = f"{'scenario':16} {'milestone':14} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}  n"
    print(head)
    print("-" * len(head))
    labels = {
        "lease": "lease taken",
        "route": "spans routed",
        "drbd": "DRBD primary",
        "vip": "VIP up",
        "moved": "client: moved",
        "asterisk_start": "Asterisk start",
        "fully_booted": "fully booted",
        "answered": "client: answer",
        "test_call": "test call ok",
        "detect": "decision",
        "from_decision": "decision->call",
    }
    for name, rows in result["table"].items():
        for col in labels:
            values = [r[col] for r in rows if col in r]
            if values:
                print(f"{name:16} {labels[col]:14} {stats(values)}  {len(values)}")
    print_shares(result["table"])
    print()
    print(f"{'bot':4} {'peak RSS MiB':>12} {'idle CPU %':>10}   (over {idle:.0f} s)")
    res = dict(result.get("resources", {}))
    cluster = res.pop("_cluster", {})
    for node, r in res.items():
        note = "  restarted during the window (not measured)" if r.get("restarted") else ""
        print(f"{node:4} {r['rss_mib']:12.1f} {100 * r['cpu_share']:10.2f}{note}")
    if cluster:
        print(f"new lease epochs while idle (false failovers): {cluster['new_epochs']:.0f}")
    soak_result = result.get("soak")
    if soak_result is not None:
        print(
            f"soak {soak_result['seconds']:.0f} s, CPUs busy: false failovers "
            f"{soak_result['false_failovers']}, dual primary {soak_result['dual_primary']}, "
            f"primary unchanged {soak_result['still_primary']}"
        )


def print_shares(table: dict[str, list[dict[str, float]]]) -> None:
    """Each part's own duration and its share of fault -> answered call (the mean)."""
    names = {
        "detect": "detection",
        "demoted": "old demotes",
        "lease": "lease taken",
        "route": "spans routed",
        "drbd": "DRBD primary",
        "vip": "VIP up",
        "asterisk_start": "Asterisk start",
        "fully_booted": "fully booted",
        "test_call": "test call",
    }
    for scenario, rows in table.items():
        parts = [shares(r) for r in rows if "test_call" in r]
        if not parts or not any("detect" in p for p in parts):
            continue
        total = sum(r["test_call"] for r in rows if "test_call" in r) / len(parts)
        print()
        print(f"{scenario}: each step's own time, fault -> answered call (mean {total:.3f} s)")
        head = f"{'step':16} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'share':>6}"
        print(head)
        print("-" * len(head))
        for key, label in names.items():
            values = [p[key] for p in parts if key in p]
            if values:
                share = sum(values) / len(parts) / total if total > 0 else float("nan")
                print(f"{label:16} {stats(values)} {100 * share:5.1f}%")


def print_comparison(
    bots: list[dict[str, Any]], kept: dict[str, list[dict[str, float]]], runs: int
) -> None:
    print()
    print(
        f"host death, seen by the client probe (neighbour entry + TCP 5060 every 10 ms), {runs}"
        " runs each, random phase; seconds"
    )
    head = (
        f"{'system':28} {'moved p50':>9} {'p95':>7} {'p99':>7} {'max':>7}"
        f"  {'answer p50':>10} {'p95':>7} {'p99':>7} {'max':>7}"
    )
    print(head)
    print("-" * len(head))
    systems: list[tuple[str, list[dict[str, float]]]] = []
    for r in bots:
        lease, renew = r["lease"], r["renew"]
        systems.append(
            (f"bot {r['profile']} ({lease:g}/{renew:g} s)", r["table"].get("host death", []))
        )
    systems += [(f"keepalived {label}", rows) for label, rows in kept.items()]
    for label, rows in systems:
        moved = [x["moved"] for x in rows if "moved" in x]
        heard = [x["answered"] for x in rows if "answered" in x]
        missing = len(rows) - len(moved)
        note = f"  ({missing} of {len(rows)} runs: no move seen)" if missing else ""
        print(f"{label:28} {stats(moved):>37}  {stats(heard):>37}{note}")
    if kept and bots:
        print()
        print("ratio bot/keepalived (p50 moved, p50 answered; below 1: the bot is faster)")
        for r in bots:
            rows = r["table"].get("host death", [])
            bm = [x["moved"] for x in rows if "moved" in x]
            ba = [x["answered"] for x in rows if "answered" in x]
            for label, krows in kept.items():
                km = [x["moved"] for x in krows if "moved" in x]
                ka = [x["answered"] for x in krows if "answered" in x]
                if bm and km and ba and ka:
                    print(
                        f"  bot {r['profile']:8} / keepalived {label:12}"
                        f" {pct(bm, 50) / pct(km, 50):6.2f} {pct(ba, 50) / pct(ka, 50):6.2f}"
                    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--idle", type=float, default=60.0, help="idle CPU window, seconds")
    parser.add_argument("--soak", default="", help='loaded soak duration, e.g. "10m" (off)')
    parser.add_argument("--soak-profiles", default="fast", help="profiles that get the soak")
    parser.add_argument(
        "--scenarios",
        default="host death,asterisk crash,asterisk hang,switchover",
        help="comma-separated: host death, asterisk crash (SIGKILL), asterisk hang"
        " (SIGSTOP), switchover",
    )
    parser.add_argument(
        "--profiles",
        default="default",
        help="timing profiles, comma-separated (default, fast: deploy/examples/NAME-a.toml);"
        " the first runs every scenario, the others host death only",
    )
    parser.add_argument(
        "--nice", type=int, default=-10, help="CPU priority of the bots and Redis (0: unchanged)"
    )
    parser.add_argument("--nice-profiles", default="fast", help="profiles run at --nice")
    parser.add_argument("--compare", default="", help='"keepalived": the same faults against it')
    parser.add_argument("--seed", type=int, default=17, help="seed of the fault phases")
    parser.add_argument("--log-level", default="warning", help="the bots' log level")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's files and logs")
    parser.add_argument(
        "--asterisk",
        choices=("real", "sim"),
        default="real" if find_binary() else "sim",
        help="each node's Asterisk (default: real when `make asterisk` found one)",
    )
    args = parser.parse_args()
    reason = netns_unavailable()
    if reason:
        print(f"failover bench needs network namespaces: {reason}")
        return 2
    if args.compare not in ("", "keepalived"):
        parser.error("--compare takes only keepalived")
    if args.compare and keepalived_missing():
        print(f"--compare keepalived: {keepalived_missing()}")
        return 2
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    bots: list[dict[str, Any]] = []
    kept: dict[str, list[dict[str, float]]] = {}
    failures: list[str] = []
    try:
        # A part that breaks is reported with the table, not allowed to hide the others.
        for profile in [p.strip() for p in args.profiles.split(",") if p.strip()]:
            try:
                bots.append(run_profile(args, profile, work, rng))
            except Exception as exc:
                failures.append(f"bot {profile} profile: {type(exc).__name__}: {exc}")
        if args.compare:
            for label in KEEPALIVED:
                print(f"keepalived {label}: {args.runs} runs", flush=True)
                try:
                    kept[label] = run_keepalived(label, args.runs, work, rng)
                except Exception as exc:
                    failures.append(f"keepalived {label}: {type(exc).__name__}: {exc}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for result in bots:
        print_profile(result, args.runs, args.idle)
    print_comparison(bots, kept, args.runs)
    for failure in failures:
        print(f"NOT MEASURED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
