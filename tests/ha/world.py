"""A model world for the shipping agent core, in virtual time.

Two real ``bot.agent.Agent`` cores (HA step, lease keeper, fencer, executor,
observer, reporter, peer client and server) run on one asyncio loop whose clock
is virtual: when nothing is ready it jumps to the next timer, so twenty seconds
of cluster life take a fraction of a second. Only the world is modelled:

- Redis: the leader key with its expiry, the epoch counter and ``run_id``
  (a restart loses all three), node records, the pause flag. Every command is
  a request and a reply with their own delays; a cut link loses them (the
  client times out as the real bus does), and a request can be applied though
  its reply is lost.
- The peer channel: the real ``PeerClient`` posts to the other node's real
  ``PeerServer`` through a transport with the same delays and cuts.
- Each node's clock: an offset and a rate (bounded drift) over real time.
- The services: the real ``Takeover`` (promote, demote, fence, in the order that
  ships) drives model commands for DRBD, the floating address and Asterisk. A
  command takes time and then changes what runs on its node, or, under a
  command fault, fails (nothing changed), hangs until its step's limit kills it
  (nothing changed) or succeeds late (the change lands after the step gave up).
  DRBD refuses a promotion while the peer is Primary and the replication link is
  up (an isolated node's link is down). Health can be made to fail.
- Crashes (the supervisor's ExecStopPost fences) and restarts with the same
  state directory. Not modelled: a stall of one process (SIGSTOP) while the
  other runs, which one shared virtual loop cannot express; the end-to-end
  scenario ``test_bot_sigstop_never_acts_as_primary_after_waking`` covers it.

Nothing here decides anything the agent decides: the property is checked on
the code that ships, and judged on effects: at no instant may two nodes hold the
address, run Asterisk or be DRBD Primary, whatever their HA states believe.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import selectors
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bot.actions.asterisk import AsteriskService
from bot.actions.errors import ActionError, CommandTimeout, PromoteRefused
from bot.actions.runner import CommandResult
from bot.actions.takeover import PEER_PRIMARY, Takeover
from bot.agent.loop import Adapters, Agent
from bot.bus import BusUnavailable, Controls, Lease, LeaseGrant, LeaseRead, NodeRecord
from bot.bus.model import RenewResult
from bot.config import Config, DrbdConfig, parse_config
from bot.ha import HaState, primary_until
from bot.health import ReadinessFacts, Verdict
from bot.healthmon import HealthMonitor
from bot.metrics import Metrics
from bot.state import StateDir

NODES = ("a", "b")
SERVICES = ("vip", "asterisk", "drbd")  # what only a primary may hold
# How long a model command takes when nothing is wrong (seconds, drawn uniformly).
COMMAND_TIME = {
    "drbd_primary": (0.02, 0.1),
    "drbd_secondary": (0.02, 0.1),
    "vip_add": (0.005, 0.03),
    "vip_del": (0.005, 0.03),
    "asterisk_start": (0.05, 0.3),
    "asterisk_stop": (0.05, 0.2),
    "asterisk_kill": (0.005, 0.05),
    "asterisk_status": (0.005, 0.02),
}
COMMANDS = tuple(sorted(COMMAND_TIME))
LATE = (1.0, 4.0)  # a command that succeeds late: its change lands this much later

CONFIG = """
[node]
id = "{me}"
state_dir = "{state}"

[cluster]
name = "sim"
peers = [{{ id = "{peer}", api = "http://{peer}.invalid:9440" }}]
secret_file = "{secret}"
lease_ttl = "{ttl}s"
renew_interval = "1s"
drift_margin = "{drift}s"
fence_budget = "500ms"

[api]
listen = "0.0.0.0:9440"  # never bound: the model runs the core alone

[redis]
url = "redis://model.invalid:6379/0"
timeout = "500ms"

[asterisk]
start = ["true", "asterisk_start"]
stop = ["true", "asterisk_stop"]
kill = ["true", "asterisk_kill"]
status = ["true", "asterisk_status"]
"""


# --------------------------------------------------------------------------- virtual time


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next timer when nothing is ready."""

    def __init__(self) -> None:
        self._now = 0.0
        selector = selectors.DefaultSelector()
        real_select = selector.select

        def select(timeout: float | None = None) -> list[Any]:
            ready = real_select(0)
            if not ready:
                if timeout is None:
                    raise RuntimeError("virtual loop: nothing scheduled (deadlock)")
                self._now += max(timeout, 0.0)
            return ready

        selector.select = select  # type: ignore[method-assign]
        super().__init__(selector)

    def time(self) -> float:
        return self._now


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Fault:
    # slow | isolate | redis_cut | peer_cut | crash | redis_restart | sick
    # | cmd_fail | cmd_hang | cmd_late (``command`` on ``node``, while the fault lasts)
    kind: str
    node: str
    start: float
    duration: float
    fenced: bool = True  # crash: did ExecStopPost fence the node?
    command: str = ""  # cmd_*: one of COMMANDS


@dataclass(frozen=True)
class Scenario:
    rates: tuple[float, float]
    offsets: tuple[float, float]
    faults: tuple[Fault, ...]
    seed: int
    horizon: float = 20.0


@dataclass
class Key:
    holder: str
    epoch: int
    expires: float  # real time
    next_node: str | None = None


@dataclass
class Node:
    name: str
    rate: float
    offset: float
    cfg: Config
    state_dir: StateDir
    # What runs here, as the world sees it (never as the agent believes it).
    held: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(SERVICES, False))
    # (real time, service, held) at every change
    effects: list[tuple[float, str, bool]] = field(default_factory=list)
    healthy: bool = True
    agent: Agent | None = None
    task: asyncio.Task[Any] | None = None
    # (real time, state) after every HA step; a crash appends None
    timeline: list[tuple[float, HaState | None]] = field(default_factory=list)

    def clock(self, loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
        return lambda: self.offset + self.rate * loop.time()

    def set(self, service: str, on: bool, t: float) -> None:
        if self.held[service] != on:
            self.held[service] = on
            self.effects.append((t, service, on))

    @property
    def services(self) -> bool:
        return any(self.held.values())

    def real(self, local: float) -> float:
        return (local - self.offset) / self.rate


class MemoryStateDir(StateDir):
    """The state directory without the disk: the model keeps it across restarts."""

    def _load(self) -> None:
        return None

    def _save(self) -> None:
        return None

    async def give_promise_off_loop(self, peer: str, until_boottime: float) -> None:
        # No disk, so no worker thread: a thread hop would let the virtual clock jump.
        self.give_promise(peer, until_boottime)


# --------------------------------------------------------------------------- the world


class World:
    def __init__(self, sc: Scenario, tmp: Path, *, ttl: float = 3.0, drift: float = 0.1):
        self.sc = sc
        self.rng = random.Random(sc.seed)
        self.loop = asyncio.get_running_loop()
        self.key: Key | None = None
        self.counter = 0
        self.run_id = 0
        self.records: dict[str, NodeRecord] = {}
        self.paused: bool | None = None
        self.inflight: set[asyncio.Task[Any]] = set()
        secret = tmp / "cluster.secret"
        secret.write_text("model-secret\n")
        self.nodes: dict[str, Node] = {}
        for i, name in enumerate(NODES):
            text = CONFIG.format(
                me=name, peer=NODES[1 - i], state=tmp / name, secret=secret, ttl=ttl, drift=drift
            )
            cfg = parse_config(text, tmp)
            state = MemoryStateDir(tmp / name, boot_id="model")
            self.nodes[name] = Node(name, sc.rates[i], sc.offsets[i], cfg, state)

    def now(self) -> float:
        return self.loop.time()

    # ------------------------------------------------------------------ links

    def active(self, kind: str, node: str) -> bool:
        t = self.now()
        return any(
            f.kind == kind and f.node in (node, "*") and f.start <= t < f.start + f.duration
            for f in self.sc.faults
        )

    def redis_up(self, node: str) -> bool:
        return not (self.active("isolate", node) or self.active("redis_cut", node))

    def peer_up(self) -> bool:
        return not any(self.active("isolate", n) for n in NODES) and not self.active(
            "peer_cut", "*"
        )

    def delay(self, node: str, reply: bool) -> float:
        if reply and self.active("slow", node):
            return self.rng.uniform(0.1, 0.45)
        return self.rng.uniform(0.0005, 0.01)

    def live_key(self) -> Key | None:
        if self.key is not None and self.now() >= self.key.expires:
            self.key = None
        return self.key

    async def exchange(self, node: str, link: Callable[[], bool], op: Callable[[], Any]) -> Any:
        """One request and its reply; never answers when the link is cut (either way).

        The request travels as a task of its own: it may be applied after the caller
        gave up, as a real server would."""
        reply: asyncio.Future[Any] = self.loop.create_future()

        async def travel() -> None:
            if not link():
                return
            await asyncio.sleep(self.delay(node, False))
            if not link():
                return
            result = op()
            if asyncio.iscoroutine(result):
                result = await result
            await asyncio.sleep(self.delay(node, True))
            if link() and not reply.done():
                reply.set_result(result)

        task = self.loop.create_task(travel())
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)
        return await reply

    # ------------------------------------------------------------------ running

    def drbd_connected(self) -> bool:
        """The replication link: down while either node is isolated."""
        return not any(self.active("isolate", n) for n in NODES)

    def command_fault(self, node: str, command: str) -> str | None:
        t = self.now()
        for f in self.sc.faults:
            mine = f.kind.startswith("cmd_") and f.node == node and f.command == command
            if mine and f.start <= t < f.start + f.duration:
                return f.kind.removeprefix("cmd_")
        return None

    async def command(self, node: Node, name: str, effect: Callable[[], None] | None) -> None:
        """One model command on ``node``: it takes its time, then ``effect`` happens;
        under a fault it fails or hangs (nothing happens) or its effect lands late."""
        fault = self.command_fault(node.name, name)
        if fault == "hang":
            await asyncio.Event().wait()  # until the step's limit kills it
        await asyncio.sleep(self.rng.uniform(*COMMAND_TIME[name]))
        if fault == "fail":
            raise ActionError(f"{name} on {node.name}: failed (exit 1)")
        if fault == "late" and effect is not None:
            landed = self.loop.create_future()

            async def later() -> None:
                await asyncio.sleep(self.rng.uniform(*LATE))
                effect()
                if not landed.done():
                    landed.set_result(None)

            task = self.loop.create_task(later())
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
            await landed  # cancelled at the step's limit; the change still lands
            return
        if effect is not None:
            effect()

    def start_node(self, node: Node) -> None:
        cfg = node.cfg
        clock = node.clock(self.loop)
        asterisk = ModelAsterisk(cfg.asterisk, self, node)
        model = Takeover(
            # The model's DRBD has one resource (the step limits count resources).
            replace(cfg, drbd=DrbdConfig(resources=["r0"])),
            drbd=ModelDrbd(self, node),  # type: ignore[arg-type]
            vip=ModelVip(self, node),  # type: ignore[arg-type]
            asterisk=asterisk,
            pstn=None,
            ami=None,
            lease_valid=lambda: False,
            clock=clock,
        )
        adapters = Adapters(
            bus=ModelBus(self, node.name, clock, cfg.redis.timeout),  # type: ignore[arg-type]
            state_dir=node.state_dir,
            takeover=model,
            asterisk=asterisk,
            health=ModelHealth(cfg, self, node),
        )
        agent = Agent(cfg, clock=clock, registry=CollectorRegistry(), adapters=adapters)
        model.lease_valid = agent.keeper.valid
        model.on_step = agent.takeovers.on_step
        agent.observer.ami_configured = True  # the model's Asterisk needs no AMI secret
        agent.on_state = lambda state: node.timeline.append((self.now(), state))
        node.timeline.append((self.now(), agent.ha))
        node.agent = agent
        agent.peer_server = agent.peer_channel(PeerTransport(self, node.name))
        node.task = self.loop.create_task(agent.run_core(), name=f"agent-{node.name}")

    def restart(self, node: Node) -> None:
        """The supervisor starts the bot again, unless it runs already: of two crashes
        that overlap, the shorter one's restart comes first, and one host never runs two
        bots (the unit's one main process)."""
        if node.task is not None and not node.task.done():
            return
        self.start_node(node)

    def crash(self, node: Node, fault: Fault) -> None:
        if node.task is None or node.task.done():
            return
        node.task.cancel()
        if node.agent is not None:
            for task in list(node.agent.jobs._all):
                task.cancel()
        node.timeline.append((self.now(), None))
        if fault.fenced:  # ExecStopPost: fence-local
            for service in SERVICES:
                node.set(service, False, self.now())

    async def run(self) -> World:
        at: list[tuple[float, int, Callable[[], None]]] = []
        n = 0
        for f in self.sc.faults:
            node = self.nodes.get(f.node)
            if f.kind == "crash" and node is not None:
                heapq.heappush(at, (f.start, n, lambda nd=node, f=f: self.crash(nd, f)))
                if f.duration < 1e6:
                    heapq.heappush(
                        at, (f.start + f.duration, n + 1, lambda nd=node: self.restart(nd))
                    )
            elif f.kind == "redis_restart":
                heapq.heappush(at, (f.start, n, self.restart_redis))
            elif f.kind == "sick" and node is not None:
                heapq.heappush(at, (f.start, n, lambda nd=node: setattr(nd, "healthy", False)))
                heapq.heappush(
                    at, (f.start + f.duration, n + 1, lambda nd=node: setattr(nd, "healthy", True))
                )
            n += 2
        for node in self.nodes.values():
            self.start_node(node)
        while at:
            t, _, fn = heapq.heappop(at)
            if t > self.sc.horizon:
                break
            await asyncio.sleep(max(0.0, t - self.now()))
            fn()
        await asyncio.sleep(max(0.0, self.sc.horizon - self.now()))
        for node in self.nodes.values():
            if node.task is not None:
                node.task.cancel()
            if node.agent is not None:
                for task in list(node.agent.jobs._all):
                    task.cancel()
        pending = [n.task for n in self.nodes.values() if n.task] + list(self.inflight)
        for task in self.inflight:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return self

    def restart_redis(self) -> None:
        self.key, self.counter, self.run_id = None, 0, self.run_id + 1
        self.records, self.paused = {}, None

    # ------------------------------------------------------------------ the checker

    def primary_intervals(self, name: str) -> list[tuple[float, float]]:
        node = self.nodes[name]
        out = []
        line = node.timeline
        for i, (t0, state) in enumerate(line):
            t1 = line[i + 1][0] if i + 1 < len(line) else self.sc.horizon
            until = primary_until(state) if state is not None else None
            if until is None:
                continue
            end = min(t1, node.real(until))
            if end > t0:
                out.append((t0, end))
        return out

    def service_intervals(self, name: str, service: str) -> list[tuple[float, float]]:
        out = []
        since: float | None = None
        for t, what, on in self.nodes[name].effects:
            if what != service:
                continue
            if on and since is None:
                since = t
            elif not on and since is not None:
                out.append((since, t))
                since = None
        if since is not None:
            out.append((since, self.sc.horizon))
        return out

    def service_overlaps(self) -> list[tuple[str, float, float]]:
        """The verdict on effects: (service, from, to) whenever both nodes held it."""
        found = []
        for service in SERVICES:
            a, b = (self.service_intervals(n, service) for n in NODES)
            for a0, a1 in a:
                for b0, b1 in b:
                    lo, hi = max(a0, b0), min(a1, b1)
                    if hi > lo + 1e-9:
                        found.append((service, lo, hi))
        return found

    def overlaps(self) -> list[tuple[float, float]]:
        """Where both HA states believed they were primary (the lease rules' claim)."""
        a, b = (self.primary_intervals(n) for n in NODES)
        found = []
        for a0, a1 in a:
            for b0, b1 in b:
                lo, hi = max(a0, b0), min(a1, b1)
                if hi > lo + 1e-9:
                    found.append((lo, hi))
        return found

    def closest_approach(self) -> float:
        """How close the two nodes came to being primary at once: the overlap (> 0) or
        minus the shortest gap between one's primary time and the other's. The
        searches steer towards it (hypothesis.target)."""
        a, b = (self.primary_intervals(n) for n in NODES)
        return max(
            (min(a1, b1) - max(a0, b0) for a0, a1 in a for b0, b1 in b), default=-self.sc.horizon
        )

    def primary_from(self, name: str, after: float) -> float | None:
        for t0, t1 in self.primary_intervals(name):
            if t1 > after:
                return max(t0, after)
        return None


def simulate(sc: Scenario, tmp: Path, **kw: Any) -> World:
    """Run one scenario to its horizon on a fresh virtual loop."""

    async def main() -> World:
        world = await World(sc, tmp, **kw).run()
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        return world

    loop = VirtualLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


# --------------------------------------------------------------------------- adapters


class ModelBus:
    """What a node's ``bot.bus.Bus`` does, against the model Redis over its link."""

    def __init__(self, world: World, node: str, clock: Callable[[], float], timeout: float):
        self.world = world
        self.node = node
        self.clock = clock
        self.timeout = timeout
        self.highest_epoch_seen = 0

    async def _call(self, what: str, op: Callable[[], Any]) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                return await self.world.exchange(
                    self.node, lambda: self.world.redis_up(self.node), op
                )
        except TimeoutError:
            raise BusUnavailable(f"{what}: no reply from Redis within {self.timeout}s") from None

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def acquire(self, ttl: float, min_epoch: int) -> LeaseGrant | None:
        """``scripts.ACQUIRE``: a free key, or one released to this node, is taken with
        an epoch above the counter, the floor and the released value's own epoch."""
        floor = max(int(min_epoch), self.highest_epoch_seen)
        sent_at = self.clock()
        w = self.world

        def op() -> tuple[int, int | None]:
            key = w.live_key()
            released = 0
            if key is not None:
                if key.next_node != self.node:
                    return 0, key.epoch
                released = key.epoch
            epoch = max(w.counter, floor, released) + 1
            w.counter = epoch
            w.key = Key(self.node, epoch, w.now() + ttl)
            return epoch, None

        epoch, current = await self._call("acquire lease", op)
        if epoch == 0:
            self._see(current)  # the holder's epoch, as the client reads it from the reply
            return None
        self._see(epoch)
        return LeaseGrant(epoch, sent_at)

    def _see(self, epoch: int | None) -> None:
        if epoch is not None:
            self.highest_epoch_seen = max(self.highest_epoch_seen, epoch)

    async def renew(self, epoch: int, ttl: float) -> RenewResult:
        """``scripts.RENEW``: compare-and-expire on this node's own unreleased value."""
        sent_at = self.clock()
        w = self.world

        def op() -> tuple[str, Key | None]:
            key = w.live_key()
            if key is None:
                return "missing", None
            if key.holder != self.node or key.epoch != epoch or key.next_node is not None:
                return "held_by_other", replace(key)
            key.expires = w.now() + ttl
            return "renewed", None

        outcome, other = await self._call("renew lease", op)
        if other is None:
            return RenewResult(outcome, sent_at, self.node if outcome == "renewed" else None)
        self._see(other.epoch)
        lease = Lease(other.holder, other.epoch, other.next_node)
        return RenewResult(outcome, sent_at, holder=other.holder, lease=lease)

    async def release(
        self, epoch: int, next_node: str | None = None, *, planned: bool = False
    ) -> bool:
        """``scripts.RELEASE``: compare-and-delete of this node's unreleased value; naming
        a next node leaves a released value with the same expiry."""
        w = self.world

        def op() -> bool:
            key = w.live_key()
            if key is None or key.holder != self.node or key.epoch != epoch:
                return False
            if key.next_node is not None:
                return False
            if next_node is None:
                w.key = None
            else:
                key.next_node = next_node
            return True

        return bool(await self._call("release lease", op))

    async def read_lease(self) -> LeaseRead:
        sent_at = self.clock()
        w = self.world

        def op() -> tuple[Lease | None, int | None, str]:
            key = w.live_key()
            if key is None:
                return None, None, str(w.run_id)
            lease = Lease(key.holder, key.epoch, key.next_node)
            return lease, int((key.expires - w.now()) * 1000), str(w.run_id)

        lease, pttl, run_id = await self._call("read lease", op)
        if lease is not None:
            self.highest_epoch_seen = max(self.highest_epoch_seen, lease.epoch)
        return LeaseRead(lease, pttl, sent_at, self.clock(), run_id)

    async def controls(self) -> Controls:
        return await self._call("read controls", lambda: Controls(paused=self.world.paused))

    async def node_records(self) -> dict[str, NodeRecord]:
        return await self._call("read records", lambda: dict(self.world.records))

    async def publish_node_record(self, record: NodeRecord) -> None:
        await self._call(
            "publish record", lambda: self.world.records.__setitem__(record.id, record)
        )

    async def append_event(self, kind: str, message: str, **fields: object) -> None:
        await self._call("append event", lambda: None)

    async def set_paused(self, paused: bool) -> None:
        await self._call("pause", lambda: setattr(self.world, "paused", paused))

    async def set_failed(self, node: str, until_wall: float | None) -> None:
        await self._call("set failed", lambda: None)

    async def clear_switchover(self, request_id: str | None = None) -> bool:
        await self._call("clear switchover", lambda: None)
        return True

    async def wakeups(self) -> AsyncIterator[str]:
        await asyncio.Event().wait()  # no push channel in the model: the cycle polls
        yield "never"


class ModelDrbd:
    """DRBD on one node, as ``bot.actions.drbd.Drbd`` is used by the takeover."""

    def __init__(self, world: World, node: Node) -> None:
        self.world = world
        self.node = node

    def _set(self, on: bool) -> Callable[[], None]:
        return lambda: self.node.set("drbd", on, self.world.now())

    async def is_primary(self) -> bool:
        return self.node.held["drbd"]

    async def readiness_facts(self, outdated: bool) -> ReadinessFacts:
        return ReadinessFacts()

    async def promote(self, *, force: bool = False) -> list[str]:
        if self.node.held["drbd"]:
            return []
        peer = self.world.nodes[NODES[1 - NODES.index(self.node.name)]]
        if peer.held["drbd"] and self.world.drbd_connected():
            raise PromoteRefused(f"refusing to promote: {PEER_PRIMARY} and connected")
        await self.world.command(self.node, "drbd_primary", self._set(True))
        return ["r0 primary"]

    async def demote(self, *, limit: float = 5.0) -> list[str]:
        if not self.node.held["drbd"]:
            return []
        await self.world.command(self.node, "drbd_secondary", self._set(False))
        return ["r0 secondary"]

    async def fence(self, limit: float, *, escalate: bool = False) -> None:
        await self.world.command(self.node, "drbd_secondary", self._set(False))


class ModelVip:
    """The floating address on one node, as ``bot.actions.vip.Vip`` is used."""

    timeout = 2.0

    def __init__(self, world: World, node: Node) -> None:
        self.world = world
        self.node = node
        self.cfg = _Address("192.0.2.100/24")

    def _set(self, on: bool) -> Callable[[], None]:
        return lambda: self.node.set("vip", on, self.world.now())

    async def present(self, *, limit: float | None = None) -> bool:
        return self.node.held["vip"]

    async def up(self, *, limit: float | None = None) -> bool:
        was = self.node.held["vip"]
        await self.world.command(self.node, "vip_add", self._set(True))
        return not was

    async def down(self, *, limit: float | None = None) -> bool:
        was = self.node.held["vip"]
        await self.world.command(self.node, "vip_del", self._set(False))
        return was


@dataclass(frozen=True)
class _Address:
    address: str


class ModelAsterisk(AsteriskService):
    """The real service wrapper over model commands (``asterisk_start`` and so on)."""

    def __init__(self, cfg: Any, world: World, node: Node) -> None:
        super().__init__(cfg, runner=self._run)
        self.world = world
        self.node = node

    async def _run(
        self,
        argv: list[str],
        *,
        timeout: float,  # noqa: ASYNC109 - the runner's interface (bot.actions.runner)
        check: bool = True,
        **kw: Any,
    ) -> CommandResult:
        name = argv[-1]
        try:
            async with asyncio.timeout(timeout):
                if name == "asterisk_status":
                    await self.world.command(self.node, name, None)
                    code = 0 if self.node.held["asterisk"] else 3
                    return CommandResult(argv, code, "", "", 0.0, ok=code == 0)
                on = name == "asterisk_start"
                await self.world.command(
                    self.node, name, lambda: self.node.set("asterisk", on, self.world.now())
                )
        except TimeoutError:
            raise CommandTimeout(f"{name}: killed after {timeout:g}s") from None
        return CommandResult(argv, 0, "", "", 0.0, ok=True)


class ModelHealth(HealthMonitor):
    def __init__(self, cfg: Config, world: World, node: Node) -> None:
        super().__init__(cfg, None, Metrics.for_config(cfg, registry=CollectorRegistry()))
        self.node = node

    def verdict(self, role: str, routed_at: float | None) -> Verdict:
        ok = self.node.healthy or role not in ("primary",)
        self.last = Verdict(True) if ok else Verdict(False, ("test calls failing",))
        return self.last

    async def run(self, wake: Callable[[], None]) -> None:
        await asyncio.Event().wait()

    def spans_up(self) -> bool:
        return True


class PeerTransport:
    """An aiohttp-like session: a heartbeat POST reaches the other node's PeerServer."""

    def __init__(self, world: World, node: str) -> None:
        self.world = world
        self.node = node

    def post(self, url: str, *, data: bytes, headers: dict[str, str]) -> _Response:
        other = self.world.nodes[NODES[1 - NODES.index(self.node)]]
        return _Response(self.world, self.node, other, data, headers)


class _Response:
    def __init__(self, world: World, node: str, other: Node, body: bytes, headers: Any) -> None:
        self.world, self.node, self.other = world, node, other
        self.body, self.headers = body, headers
        self.status = 0
        self._raw = b""

    async def __aenter__(self) -> _Response:
        other = self.other

        async def answer() -> tuple[int, dict[str, Any]]:
            agent = other.agent
            up = other.task is not None and not other.task.done()
            server = agent.peer_server if agent is not None and up else None
            if server is None:
                await asyncio.Event().wait()  # nobody listens: the client times out
            assert server is not None
            return await server.handle(self.body, self.headers.get("X-Failover-Signature"))

        self.status, obj = await self.world.exchange(self.node, self.world.peer_up, answer)
        self._raw = json.dumps(obj).encode()
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def read(self) -> bytes:
        return self._raw
