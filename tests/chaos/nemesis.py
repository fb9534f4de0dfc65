"""The nemesis: a seeded random schedule of faults, and how each is done to the lab.

Three families: what happens to hosts and links (a host dies, a bot is killed or
stalls, Redis restarts empty, partitions, the replication link, Asterisk, the
serial link, span alarms); what operators do (pause and resume, a switchover, one
to a node whose promotion will fail, cordon and uncordon, clear-failed, a bot
restart while paused); and what a broken host's commands do, through the nodes'
``faults.json`` (``drbdadm primary``/``secondary`` failing, ``ip addr del``
refused, the Asterisk kill hanging, the test call failing), each with the action
that makes the bot run that command.

``schedule(seed, seconds)`` is pure: the same seed gives the same faults, in the
same order, with the same durations and targets. A target is a role ("primary"
or "standby"), resolved to a node when the fault starts, so that the schedule
does not depend on how earlier faults turned out.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Collection
from contextlib import suppress
from dataclasses import dataclass

from bot.lab.cluster import HOSTS
from harness.fakes import set_fault_atomic

HANG = 600.0  # a command that hangs: it sleeps until the bot's limit kills it

# Fault kind -> relative weight. Each is something that happens to PBX pairs.
KINDS: dict[str, int] = {
    "host_death": 2,
    "bot_kill": 2,
    "bot_stall": 2,
    "redis_restart": 1,
    "redis_partition": 2,
    "peer_partition": 2,
    "replication_cut": 3,
    "asterisk_crash": 1,
    "asterisk_hang": 1,
    "serial_drop": 1,
    "span_alarm": 1,
    "switchover": 1,
    # the operator
    "pause": 1,
    "bot_restart_paused": 1,
    "cordon": 1,
    "clear_failed": 1,
    "switchover_failing": 1,
    # the broken host's commands
    "vip_del_fail": 1,
    "drbd_secondary_fail": 1,
    "kill_hang": 1,
}
# A broken command lasts long enough for the takeover it delays to finish meanwhile
# (lease, drain, the peer's promotion): that is when a wrong order shows.
HOLD: dict[str, tuple[float, float]] = {
    "vip_del_fail": (8.0, 16.0),
    "drbd_secondary_fail": (8.0, 16.0),
    "kill_hang": (6.0, 12.0),
}
NODE_FAULTS = {
    "host_death",
    "bot_kill",
    "bot_stall",
    "redis_partition",
    "asterisk_crash",
    "asterisk_hang",
    "serial_drop",
    "span_alarm",
    "cordon",
}


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the run's start
    kind: str
    target: str  # "primary" | "standby" | "" (cluster-wide)
    hold: float  # how long the fault lasts before it is healed

    def describe(self) -> str:
        who = f" on the {self.target}" if self.target else ""
        return f"{self.kind}{who} for {self.hold:.1f} s"


def schedule(
    seed: int,
    seconds: float,
    *,
    gap: tuple[float, float] = (4.0, 9.0),
    only: Collection[str] | None = None,
) -> list[Fault]:
    """Faults one after another (each healed before the next) over ``seconds``; with
    ``only``, drawn from those kinds alone (a run aimed at one fault)."""
    unknown = set(only or ()) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds: {', '.join(sorted(unknown))}")
    rng = random.Random(seed)
    kinds = [k for k in KINDS if not only or k in only]
    weights = [KINDS[k] for k in kinds]
    faults = []
    t = rng.uniform(*gap)
    while True:
        kind = rng.choices(kinds, weights)[0]
        hold = round(rng.uniform(*HOLD.get(kind, (2.0, 8.0))), 1)
        target = ""
        if kind in NODE_FAULTS:
            target = "primary" if rng.random() < 0.7 else "standby"
        if t + hold > seconds:
            break
        faults.append(Fault(round(t, 1), kind, target, hold))
        t += hold + rng.uniform(*gap)
    return faults


class Nemesis:
    """Applies faults to a running lab cluster (harness.cluster.Cluster)."""

    def __init__(self, cluster: object, resource: str) -> None:
        from harness.cluster import Cluster

        assert isinstance(cluster, Cluster)
        self.c = cluster
        self.resource = resource
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()  # never set: a wait that is not a sleep
        self.note = ""  # what the last fault's request answered, for the log

    def resolve(self, target: str) -> str | None:
        """The node playing ``target`` now: the DRBD Primary, or the other one."""
        from harness.replication import drbd_state

        nodes = drbd_state(self.c, self.resource)["nodes"]
        primaries = [n for n, v in nodes.items() if v.get("role") == "Primary"]
        primary = primaries[0] if primaries else self.c.primary()
        if primary is None:
            primary = "a"
        return primary if target == "primary" else ("b" if primary == "a" else "a")

    def start(self, fault: Fault) -> tuple[str | None, Callable[[], None]]:
        """Begin ``fault``; returns the node it hit and the function that heals it."""
        node = self.resolve(fault.target) if fault.target else None
        self.note = ""
        do = getattr(self, f"_{fault.kind}")
        heal: Callable[[], None] = do(node, fault.hold)
        return node, heal

    def _background(self, fn: Callable[[], object]) -> None:
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        self._threads.append(t)

    def join(self, timeout: float = 60.0) -> None:
        for t in self._threads:
            t.join(timeout)

    # ------------------------------------------------------------------ faults

    def _host_death(self, node: str, hold: float) -> Callable[[], None]:
        self.c.kill_host(node)
        return lambda: self.c.revive_host(node)

    def _bot_kill(self, node: str, hold: float) -> Callable[[], None]:
        with suppress(RuntimeError, ProcessLookupError):
            self.c.kill_bot(node, signal.SIGKILL)  # the supervisor restarts it
        return lambda: None

    def _bot_stall(self, node: str, hold: float) -> Callable[[], None]:
        pid = self.c.nodes[node].bot_pid()
        if pid is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

        def heal() -> None:
            if pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

        return heal

    def _redis_restart(self, node: str | None, hold: float) -> Callable[[], None]:
        self.c.redis.restart()  # without persistence: every key is gone
        return lambda: None

    def _redis_partition(self, node: str, hold: float) -> Callable[[], None]:
        self.c.cut(node, "redis")
        return lambda: self.c.heal(node, "redis")

    def _peer_partition(self, node: str | None, hold: float) -> Callable[[], None]:
        for n in self.c.nodes:
            self.c.cut(n, "peer")
        return lambda: [self.c.heal(n, "peer") for n in self.c.nodes] and None

    def _replication_cut(self, node: str | None, hold: float) -> Callable[[], None]:
        # DRBD runs the Primary's handler as the link breaks; I/O waits on it.
        self._background(self.c.cut_replication)

        def heal() -> None:
            self.join()
            self.c.heal_replication()

        return heal

    def _asterisk_crash(self, node: str, hold: float) -> Callable[[], None]:
        pid = self.c.nodes[node].asterisk_pid()
        if pid is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return lambda: None

    def _ami(self, node: str, cmd: dict[str, object]) -> None:
        with suppress(OSError, ValueError, TimeoutError):
            self.c.nodes[node].ami_control_cmd(cmd)

    def _asterisk_hang(self, node: str, hold: float) -> Callable[[], None]:
        self._ami(node, {"cmd": "stall"})
        return lambda: self._ami(node, {"cmd": "unstall"})

    def _span_alarm(self, node: str, hold: float) -> Callable[[], None]:
        for span in (1, 2):
            self._ami(node, {"cmd": "span_alarm", "span": span, "kind": "red"})

        def heal() -> None:
            for span in (1, 2):
                self._ami(node, {"cmd": "span_clear", "span": span})

        return heal

    def _rseries(self, cmd: dict[str, object]) -> None:
        import asyncio

        from bot.jsonline import request

        with suppress(OSError, ValueError, TimeoutError):
            asyncio.run(request(self.c.rseries_control, cmd))

    def _serial_drop(self, node: str, hold: float) -> Callable[[], None]:
        link = HOSTS[node]
        self._rseries({"cmd": "drop", "link": link})
        return lambda: self._rseries({"cmd": "restore", "link": link})

    def _switchover(self, node: str | None, hold: float) -> Callable[[], None]:
        primary = self.resolve("primary") or "a"
        other = "b" if primary == "a" else "a"
        try:
            code = self.c.nodes[primary].post("/switchover", {"to": other})
            self.note = f"POST /switchover to {other}: HTTP {code}"
        except OSError as exc:
            self.note = f"POST /switchover failed: {exc}"
        return lambda: None

    # ------------------------------------------------------------------ the operator

    def _other(self, node: str) -> str:
        return "b" if node == "a" else "a"

    def _post(self, path: str, body: dict[str, object], within: float = 20.0) -> None:
        """An operator request to whichever node answers, tried again while no API
        answers (a bot being restarted) for ``within`` seconds; refused: not applied."""
        deadline = time.monotonic() + within
        while True:
            errors = []
            for node in ("a", "b"):
                try:
                    code = self.c.nodes[node].post(path, body)
                except OSError as exc:
                    errors.append(f"{node}: {exc}")
                    continue
                if 200 <= code < 300:
                    done = f"POST {path}: HTTP {code} from {node}"
                    self.note = (self.note + "; " if self.note else "") + done
                    return
                errors.append(f"{node}: HTTP {code}")
            answered = [e for e in errors if "HTTP" in e]
            if answered or time.monotonic() >= deadline:
                raise RuntimeError(f"POST {path} {body} refused: {', '.join(errors)}")
            self._stop.wait(0.5)

    def _pause(self, node: str | None, hold: float) -> Callable[[], None]:
        self._post("/pause", {})
        return lambda: self._post("/resume", {})

    def _bot_restart_paused(self, node: str | None, hold: float) -> Callable[[], None]:
        """Maintenance: pause, then the primary's bot is restarted (a package upgrade)."""
        primary = self.resolve("primary")
        self._post("/pause", {})
        self.c.kill_bot(primary, signal.SIGTERM)  # the supervisor starts it again
        return lambda: self._post("/resume", {})

    def _cordon(self, node: str, hold: float) -> Callable[[], None]:
        self._post("/cordon", {"node": node})
        return lambda: self._post("/uncordon", {"node": node})

    def _clear_failed(self, node: str | None, hold: float) -> Callable[[], None]:
        for n in self.c.nodes:
            self._post("/clear-failed", {"node": n})
        return lambda: None

    def _fault(self, node: str, key: str, fault: dict[str, object] | None) -> None:
        set_fault_atomic(self.c.nodes[node].dir, key, fault)

    def _switchover_to(self, target: str) -> None:
        self._post("/switchover", {"to": target})

    def _switchover_failing(self, node: str | None, hold: float) -> Callable[[], None]:
        """A switchover to a node whose DRBD promotion fails (a broken disk). Healed: the
        disk works again; nobody clears the failed mark (the operator is away)."""
        target = self.resolve("standby")
        key = "drbdadm primary"
        self._fault(
            target,
            key,
            {"exit": 11, "stderr": "State change failed: (-2) Need access to UpToDate data"},
        )
        self._switchover_to(target)
        self.note += f" (to {target}, whose drbdadm primary fails)"
        return lambda: self._fault(target, key, None)

    def _broken_command_then_switchover(
        self, on: str, key: str, fault: dict[str, object]
    ) -> Callable[[], None]:
        self._fault(on, key, fault)
        self._switchover_to(self._other(on))
        self.note += f" ({key} on {on}: {fault})"
        return lambda: self._fault(on, key, None)

    def _vip_del_fail(self, node: str | None, hold: float) -> Callable[[], None]:
        fault = {"exit": 2, "stderr": "RTNETLINK answers: Operation not permitted"}
        return self._broken_command_then_switchover(self.resolve("primary"), "ip addr del", fault)

    def _drbd_secondary_fail(self, node: str | None, hold: float) -> Callable[[], None]:
        fault = {"exit": 11, "stderr": "State change failed: (-12) Device is held open by someone"}
        primary = self.resolve("primary")
        return self._broken_command_then_switchover(primary, "drbdadm secondary", fault)

    def _kill_hang(self, node: str | None, hold: float) -> Callable[[], None]:
        """The primary loses Redis and its peer while its Asterisk kill hangs: its fence
        cannot stop Asterisk until the kill works again."""
        primary = self.resolve("primary")
        self._fault(primary, "asterisk kill", {"sleep": HANG})
        self.c.cut(primary, "redis", "peer")

        def heal() -> None:
            self._fault(primary, "asterisk kill", None)
            self.c.heal(primary, "redis", "peer")

        return heal
