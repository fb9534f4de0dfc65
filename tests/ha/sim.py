"""A discrete-event model of two bots around one Redis, for the HA invariant.

Modelled: the leader key with PTTL, the epoch counter and Redis's run_id
(restarts lose all three); each node's CLOCK_BOOTTIME (offset and rate, bounded
drift); one-way message delays; process stalls (SIGSTOP), crashes and restarts;
partitions of a node from Redis and of the nodes from each other; the renewal
task, the acquire Lua script, release and adoption as the agent runs them; and
the peer channel's heartbeat and promise. The nodes decide with the real
``bot.ha.step``. ``Bugs`` seeds known mistakes into the model's glue so that the
tests can show the invariant checker catches them.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bot.ha import (
    Action,
    HaConfig,
    HaState,
    LeaseView,
    LocalServices,
    Observation,
    OwnLease,
    PeerView,
    may_promise,
    primary_until,
    step,
)

NODES = ("a", "b")
CYCLE = 0.1  # the agent's loop period (own clock)
REDIS_TIMEOUT = 0.5
TAKEOVER_TIME = 0.3
DEMOTE_TIME = 0.1


@dataclass(frozen=True)
class Bugs:
    validity_from_reply: bool = False
    ignore_promise: bool = False
    adopt_without_renewal: bool = False


@dataclass(frozen=True)
class Fault:
    kind: str  # slow | isolate | redis_cut | peer_cut | stall | crash | redis_restart | sick
    node: str
    start: float
    duration: float
    fenced: bool = True  # crash: did ExecStopPost fence the node?


@dataclass(frozen=True)
class Scenario:
    rates: tuple[float, float]
    offsets: tuple[float, float]
    faults: tuple[Fault, ...]
    seed: int
    horizon: float = 20.0


@dataclass
class Key:
    holder: str | None
    epoch: int
    expires: float  # real time
    released_to: str | None = None


class Redis:
    def __init__(self) -> None:
        self.key: Key | None = None
        self.counter = 0
        self.run_id = 0

    def live(self, t: float) -> Key | None:
        if self.key is not None and t >= self.key.expires:
            self.key = None
        return self.key

    def restart(self) -> None:
        self.key, self.counter, self.run_id = None, 0, self.run_id + 1


@dataclass
class Node:
    name: str
    rate: float
    offset: float
    cfg: HaConfig
    bugs: Bugs
    alive: bool = True
    incarnation: int = 0
    stalled_until: float = 0.0
    ha: HaState | None = None
    started_at: float = 0.0
    own: OwnLease | None = None
    renew_result: str | None = None
    acquire_result: str | None = None
    lease: LeaseView | None = None
    read_ok: bool = False
    run_id: str | None = None
    promise_given_until: float | None = None  # persisted (state directory)
    promise_valid_until: float | None = None
    persisted_epoch: int | None = None
    services: bool = False
    takeover_result: str | None = None
    demote_result: str | None = None
    healthy: bool = True
    renewing: bool = False
    # (real start, own-clock end or None) of each step's state, for the checker
    timeline: list[tuple[float, HaState]] = field(default_factory=list)

    def local(self, t: float) -> float:
        return self.offset + self.rate * t

    def real(self, local: float) -> float:
        return (local - self.offset) / self.rate


class Sim:
    def __init__(self, scenario: Scenario, cfg: HaConfig | None = None, bugs: Bugs = Bugs()):
        self.sc = scenario
        base = cfg or HaConfig(node_id="a", peers=("b",))
        self.rng = random.Random(scenario.seed)
        self.t = 0.0
        self.queue: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.redis = Redis()
        self.nodes = {
            n: Node(
                n,
                scenario.rates[i],
                scenario.offsets[i],
                replace(base, node_id=n, peers=(NODES[1 - i],)),
                bugs,
            )
            for i, n in enumerate(NODES)
        }
        self.deaths: dict[str, float] = {}

    # ------------------------------------------------------------------ plumbing
    def at(self, t: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.queue, (t, next(self.seq), fn))

    def fault_active(self, kind: str, node: str, t: float) -> bool:
        return any(
            f.kind == kind and f.node in (node, "*") and f.start <= t < f.start + f.duration
            for f in self.sc.faults
        )

    def redis_link(self, node: str, t: float) -> bool:
        return not (
            self.fault_active("isolate", node, t) or self.fault_active("redis_cut", node, t)
        )

    def peer_link(self, t: float) -> bool:
        return not any(
            self.fault_active(k, n, t) for n in NODES for k in ("isolate",)
        ) and not self.fault_active("peer_cut", "*", t)

    def delay(self, node: str, reply: bool) -> float:
        if reply and self.fault_active("slow", node, self.t):
            return self.rng.uniform(0.1, 0.45)
        return self.rng.uniform(0.0005, 0.01)

    def on_node(self, node: Node, fn: Callable[[], None]) -> Callable[[], None]:
        """Run fn on the node's process: not while crashed, deferred while stalled."""
        inc = node.incarnation

        def run() -> None:
            if not node.alive or node.incarnation != inc:
                return
            if self.t < node.stalled_until:
                self.at(node.stalled_until, run)
                return
            fn()

        return run

    def redis_call(
        self,
        node: Node,
        op: Callable[[float], Any],
        on_reply: Callable[[Any, float], None],
        on_error: Callable[[], None],
    ) -> None:
        """A request/response with a timeout; the request may apply though the reply is lost."""
        sent_local = node.local(self.t)
        state = {"done": False}
        if self.redis_link(node.name, self.t):
            arrive = self.t + self.delay(node.name, False)

            def apply() -> None:
                result = op(arrive)
                back = arrive + self.delay(node.name, True)

                def reply() -> None:
                    if state["done"] or not self.redis_link(node.name, self.t):
                        return
                    if node.local(self.t) - sent_local > REDIS_TIMEOUT:
                        return
                    state["done"] = True
                    on_reply(result, sent_local)

                self.at(back, self.on_node(node, reply))

            self.at(arrive, apply)

        def timeout() -> None:
            if not state["done"]:
                state["done"] = True
                on_error()

        self.at(node.real(sent_local + REDIS_TIMEOUT), self.on_node(node, timeout))

    # ------------------------------------------------------------------ Redis ops
    def op_read(self, t: float) -> tuple[Key | None, float, int]:
        key = self.redis.live(t)
        return (replace(key) if key else None), (key.expires - t if key else 0.0), self.redis.run_id

    def op_acquire(self, name: str, floor: int) -> Callable[[float], int | None]:
        def op(t: float) -> int | None:
            key = self.redis.live(t)
            if key is not None and key.released_to != name:
                return None
            epoch = max(self.redis.counter, floor) + 1
            self.redis.counter = epoch
            self.redis.key = Key(name, epoch, t + self.nodes[name].cfg.lease_ttl)
            return epoch

        return op

    def op_renew(self, name: str, epoch: int) -> Callable[[float], str]:
        def op(t: float) -> str:
            key = self.redis.live(t)
            if key is None:
                return "missing"
            if key.holder != name or key.epoch != epoch:
                return "held_by_other"
            key.expires = t + self.nodes[name].cfg.lease_ttl
            return "renewed"

        return op

    def op_release(self, name: str, epoch: int, to: str | None) -> Callable[[float], None]:
        def op(t: float) -> None:
            key = self.redis.live(t)
            if key is None or key.holder != name or key.epoch != epoch:
                return
            if to is None:
                self.redis.key = None
            else:
                key.holder, key.released_to = None, to

        return op

    # ------------------------------------------------------------------ node behaviour
    def start_node(self, node: Node) -> None:
        node.alive = True
        node.incarnation += 1
        node.started_at = node.local(self.t)
        node.ha = HaState.initial(node.cfg, node.started_at)
        node.own = None
        node.renew_result = node.acquire_result = None
        node.lease, node.read_ok = None, False
        node.promise_valid_until = None
        node.takeover_result = node.demote_result = None
        node.renewing = False
        self.at(self.t + self.rng.uniform(0, CYCLE), self.on_node(node, lambda: self.cycle(node)))

    def cycle(self, node: Node) -> None:
        def got(result: tuple[Key | None, float, int], sent: float) -> None:
            key, pttl, run_id = result
            now = node.local(self.t)
            if key is None:
                node.lease = LeaseView(None)
            else:
                node.lease = LeaseView(
                    key.holder, key.epoch, now + pttl, key.released_to, sent + pttl
                )
            node.read_ok, node.run_id = True, str(run_id)
            self.run_step(node)

        def failed() -> None:
            node.read_ok = False
            self.run_step(node)

        self.redis_call(node, self.op_read, got, failed)
        nxt = node.real(node.local(self.t) + CYCLE)
        self.at(nxt, self.on_node(node, lambda: self.cycle(node)))

    def observation(self, node: Node) -> Observation:
        other = self.nodes[node.cfg.peers[0]]
        reachable = self.peer_link(self.t) and other.alive
        promise = node.promise_given_until
        if node.bugs.ignore_promise:
            promise = None
        obs = Observation(
            lease=node.lease,
            lease_read_ok=node.read_ok,
            redis_run_id=node.run_id if node.read_ok else None,
            own_lease=node.own,
            renew_result=node.renew_result,  # type: ignore[arg-type]
            acquire_result=node.acquire_result,  # type: ignore[arg-type]
            healthy=node.healthy,
            health_reasons=() if node.healthy else ("test calls failing",),
            ready=True,
            peer=PeerView(
                node_id=other.name,
                healthy=other.healthy,
                ready=True,
                reachable=reachable,
                promise_valid_until=node.promise_valid_until,
            ),
            promise_given_until=promise,
            local_services=LocalServices(asterisk=node.services),
            takeover_result=node.takeover_result,  # type: ignore[arg-type]
            demote_result=node.demote_result,  # type: ignore[arg-type]
            started_at=node.started_at,
            persisted_epoch=node.persisted_epoch,
        )
        node.renew_result = node.acquire_result = None
        node.takeover_result = node.demote_result = None
        return obs

    def run_step(self, node: Node) -> None:
        assert node.ha is not None
        now = node.local(self.t)
        node.ha, actions, _reason = step(node.ha, self.observation(node), now)
        node.timeline.append((self.t, node.ha))
        for action in actions:
            self.execute(node, action)

    def execute(self, node: Node, action: Action) -> None:
        kind = action.kind
        if kind == "acquire":
            floor = node.persisted_epoch or 0

            def acquired(epoch: int | None, sent: float) -> None:
                if epoch is None:
                    node.acquire_result = "busy"
                else:
                    at = node.local(self.t) if node.bugs.validity_from_reply else sent
                    node.own = OwnLease(epoch, at)
                    node.persisted_epoch = max(floor, epoch)
                    self.start_renewal(node)
                self.run_step(node)

            def error() -> None:
                node.acquire_result = "error"

            self.redis_call(node, self.op_acquire(node.name, floor), acquired, error)
        elif kind == "adopt":
            epoch = int(action.args["epoch"])
            if node.bugs.adopt_without_renewal:
                node.own = OwnLease(epoch, node.local(self.t))
                self.start_renewal(node)
                return
            self.renew_once(node, epoch, adopting=True)
        elif kind == "promote":
            node.services = True

            def done() -> None:
                node.takeover_result = "succeeded"
                self.run_step(node)

            self.at(self.t + TAKEOVER_TIME, self.on_node(node, done))
        elif kind == "demote":

            def demoted() -> None:
                node.services = False
                node.demote_result = "succeeded"
                self.run_step(node)

            self.at(self.t + DEMOTE_TIME, self.on_node(node, demoted))
        elif kind == "fence":
            # Fencing stops renewal at once and takes up to the fence budget to finish.
            node.own = None
            node.renewing = False

            def fenced() -> None:
                node.services = False
                node.demote_result = "succeeded"
                self.run_step(node)

            fence_time = self.rng.uniform(0.5, 1.0) * node.cfg.fence_budget
            self.at(self.t + fence_time, self.on_node(node, fenced))
        elif kind == "release":
            own = node.own
            node.own, node.renewing = None, False
            if own is not None:
                to = action.args.get("to")
                self.redis_call(
                    node, self.op_release(node.name, own.epoch, to), lambda r, s: None, lambda: None
                )
        elif kind == "drop_lease":
            node.own, node.renewing = None, False
        elif kind == "record_epoch":
            node.persisted_epoch = max(node.persisted_epoch or 0, int(action.args["epoch"]))

    def start_renewal(self, node: Node) -> None:
        if node.renewing:
            return
        node.renewing = True
        inc = node.incarnation

        def tick() -> None:
            if not node.renewing or node.own is None or node.incarnation != inc:
                node.renewing = False
                return
            self.renew_once(node, node.own.epoch, adopting=False)
            self.heartbeat(node)
            self.at(
                node.real(node.local(self.t) + node.cfg.renew_interval), self.on_node(node, tick)
            )

        self.at(node.real(node.local(self.t) + node.cfg.renew_interval), self.on_node(node, tick))

    def renew_once(self, node: Node, epoch: int, adopting: bool) -> None:
        def answered(result: str, sent: float) -> None:
            if not adopting and (not node.renewing or node.own is None or node.own.epoch != epoch):
                return  # renewing stopped (release, fence) while this one was in flight
            if result == "renewed":
                at = node.local(self.t) if node.bugs.validity_from_reply else sent
                node.own = OwnLease(epoch, at)
                if adopting:
                    self.start_renewal(node)
            elif result == "missing" and not adopting:
                self.reacquire(node)
            else:
                node.renew_result = result
                if not adopting:
                    node.own, node.renewing = None, False
            if adopting:
                node.renew_result = result if result != "renewed" else None
            self.run_step(node)

        self.redis_call(node, self.op_renew(node.name, epoch), answered, lambda: None)

    def reacquire(self, node: Node) -> None:
        floor = max(node.persisted_epoch or 0, node.own.epoch if node.own else 0)

        def got(epoch: int | None, sent: float) -> None:
            if epoch is None:
                node.renew_result = "held_by_other"
                node.own, node.renewing = None, False
            else:
                node.own = OwnLease(
                    epoch, node.local(self.t) if node.bugs.validity_from_reply else sent
                )
                node.persisted_epoch = epoch
            self.run_step(node)

        self.redis_call(node, self.op_acquire(node.name, floor), got, lambda: None)

    def heartbeat(self, node: Node) -> None:
        other = self.nodes[node.cfg.peers[0]]
        sent = node.local(self.t)
        if not self.peer_link(self.t):
            return

        def arrive() -> None:
            assert other.ha is not None
            if not may_promise(other.ha):
                return
            until = other.local(self.t) + other.cfg.lease_ttl
            other.promise_given_until = max(other.promise_given_until or until, until)

            def back() -> None:
                if not self.peer_link(self.t):
                    return
                valid = sent + node.cfg.lease_ttl - node.cfg.drift_margin
                node.promise_valid_until = max(node.promise_valid_until or valid, valid)

            self.at(self.t + self.delay(other.name, False), self.on_node(node, back))

        self.at(self.t + self.delay(node.name, False), self.on_node(other, arrive))

    # ------------------------------------------------------------------ faults and run
    def schedule_faults(self) -> None:
        for f in self.sc.faults:
            if f.kind == "stall":
                node = self.nodes[f.node]
                self.at(f.start, lambda n=node, f=f: self.stall(n, f.start + f.duration))
            elif f.kind == "crash":
                node = self.nodes[f.node]
                self.at(f.start, lambda n=node, f=f: self.crash(n, f))
            elif f.kind == "redis_restart":
                self.at(f.start, self.redis.restart)
            elif f.kind == "sick":
                node = self.nodes[f.node]
                self.at(f.start, lambda n=node: setattr(n, "healthy", False))
                self.at(f.start + f.duration, lambda n=node: setattr(n, "healthy", True))

    def stall(self, node: Node, until: float) -> None:
        node.stalled_until = max(node.stalled_until, until)

    def crash(self, node: Node, f: Fault) -> None:
        if not node.alive:
            return
        node.alive = False
        node.incarnation += 1
        node.timeline.append((self.t, HaState.initial(node.cfg, 0.0)))
        if f.fenced:
            node.services = False
        if f.duration < 1e6:
            self.at(f.start + f.duration, lambda: self.start_node(node))
        else:
            self.deaths[node.name] = self.t

    def run(self) -> Sim:
        for node in self.nodes.values():
            self.start_node(node)
        self.schedule_faults()
        while self.queue:
            t, _, fn = heapq.heappop(self.queue)
            if t > self.sc.horizon:
                break
            self.t = t
            fn()
        return self

    # ------------------------------------------------------------------ the checker
    def primary_intervals(self, name: str) -> list[tuple[float, float]]:
        node = self.nodes[name]
        out = []
        line = node.timeline
        for i, (t0, state) in enumerate(line):
            t1 = line[i + 1][0] if i + 1 < len(line) else self.sc.horizon
            until = primary_until(state)
            if until is None:
                continue
            end = min(t1, node.real(until))
            if end > t0:
                out.append((t0, end))
        return out

    def overlaps(self) -> list[tuple[float, float]]:
        a, b = (self.primary_intervals(n) for n in NODES)
        found = []
        for a0, a1 in a:
            for b0, b1 in b:
                lo, hi = max(a0, b0), min(a1, b1)
                if hi > lo + 1e-9:
                    found.append((lo, hi))
        return found

    def primary_from(self, name: str, after: float) -> float | None:
        """First real time after ``after`` at which the node acts as primary."""
        for t0, t1 in self.primary_intervals(name):
            if t1 > after:
                return max(t0, after)
        return None
