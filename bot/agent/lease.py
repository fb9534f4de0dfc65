"""The lease keeper: acquire, adopt, renew, release, and the peer's promise (design §3).

It owns the node's view of its lease (``own``) and of the peer's promise, and
decides "keep, take again or fence" only through the pure ``bot.ha.lease``
functions. Renewal runs in its own task that nothing else delays (rule 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import cast

from bot.actions.runner import run_command
from bot.agent.events import Events
from bot.agent.fencer import Fencer
from bot.agent.inbox import Inbox
from bot.agent.jobs import Jobs
from bot.bus import Bus, BusError
from bot.config import Config
from bot.ha import (
    HaConfig,
    HaState,
    OwnLease,
    holder_valid_until,
    is_holder,
    may_promise,
    renewal_decision,
)
from bot.ha.types import RenewOutcome
from bot.metrics import Metrics
from bot.peer import PeerClient
from bot.state import StateDir

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(
        self,
        cfg: Config,
        ha_cfg: HaConfig,
        *,
        bus: Bus,
        state_dir: StateDir,
        fencer: Fencer,
        events: Events,
        inbox: Inbox,
        jobs: Jobs,
        metrics: Metrics,
        clock: Callable[[], float],
        ha_state: Callable[[], HaState],
        wake: Callable[[], None],
    ) -> None:
        self.cfg = cfg
        self.ha_cfg = ha_cfg
        self.bus = bus
        self.state_dir = state_dir
        self.fencer = fencer
        self.events = events
        self.inbox = inbox
        self.jobs = jobs
        self.metrics = metrics
        self.clock = clock
        self.ha_state = ha_state
        self.wake = wake
        self.own: OwnLease | None = None
        self.promise_until: float | None = None  # the peer's promise, our clock
        self.peer_reachable = False
        self.peer_client: PeerClient | None = None
        self._changed = asyncio.Event()
        self._renewed = asyncio.Event()  # a renewal succeeded: ask for a promise now
        self._fencing_peer = False  # cluster.fence_command runs after an acquire
        self._paused_alerted: int | None = None  # the epoch whose expiry while paused was said

    # ------------------------------------------------------------------ queries

    def valid_until(self) -> float | None:
        return holder_valid_until(self.own, self.promise_until, self.ha_cfg)

    def valid(self) -> bool:
        """Rule 1, checked right before each primary action."""
        until = self.valid_until()
        return until is not None and self.clock() < until - self.ha_cfg.fence_budget

    def min_epoch(self) -> int:
        return max(self.state_dir.highest_epoch, self.state_dir.held_epoch or 0)

    def may_promise(self, peer: str, epoch: int) -> str | None:
        """Why this node may not promise the peer to stay away (None: it may)."""
        state = self.ha_state()
        if not may_promise(state):
            return f"{self.ha_cfg.node_id} is {state.role}"
        if self.jobs.running("acquire") or self.own is not None:
            return f"{self.ha_cfg.node_id} is taking the lease"
        return None

    # ------------------------------------------------------------------ acquire, adopt, release

    async def acquire(self, fence_peer: bool) -> None:
        """Take the key; then, with ``fence_peer`` and ``cluster.fence_command`` set, fence
        a peer that did not give the last lease up, before the step may promote (rule 10).

        The key comes first: at a cold start only the node that got it fences, and the
        other hears "busy". While the command runs the renewal keeps the key, but the
        step does not see it (``granted``) and so does not promote yet."""
        cluster = self.cfg.cluster
        held_before = self.state_dir.held_epoch
        try:
            grant = await self.bus.acquire(cluster.lease_ttl, self.min_epoch())
        except Exception as exc:
            log.warning("acquire failed: %s", exc)
            self.inbox.acquire_result = "error"
            return
        if grant is None:
            self.inbox.acquire_result = "busy"
            return
        self.state_dir.record_epoch(grant.epoch)
        self.state_dir.set_held(grant.epoch)
        own = OwnLease(grant.epoch, grant.sent_at)
        self.own = own
        self._changed.set()
        if fence_peer and self.cfg.cluster.fence_command and self.ha_cfg.peer:
            self._fencing_peer = True
            try:
                fenced = await self._fence_peer_after_acquire(grant.epoch, held_before)
            finally:
                self._fencing_peer = False
            if not fenced or self.own is not own:
                # Never promote without the fence: the key is left to expire (a release
                # would tell the peer this node gave it up, and it would not be fenced).
                if self.own is own:
                    self.drop()
                self.inbox.acquire_result = "error"
                return
        self.inbox.acquire_result = "acquired"
        self.events("lease", f"took the lease, epoch {grant.epoch}", epoch=grant.epoch)

    @property
    def granted(self) -> OwnLease | None:
        """The lease as the HA step may use it: not while the peer is being fenced."""
        return None if self._fencing_peer else self.own

    async def _fence_peer_after_acquire(self, epoch: int, held_before: int | None) -> bool:
        """Fence the peer unless the lease before ``epoch`` was given up or was ours; True
        when promoting may go on."""
        peer = self.ha_cfg.peer
        if held_before is not None and epoch == held_before + 1:
            log.info("not fencing %s: the last lease (epoch %d) was this node's", peer, held_before)
            return True
        try:
            released = await self.bus.released_epoch()
        except BusError as exc:
            log.warning("released mark unreadable (%s): fencing %s", exc, peer)
            released = None
        if released == epoch - 1:
            log.info("not fencing %s: epoch %d was released by its holder", peer, released)
            return True
        self.events(
            "fence_peer",
            f"fencing {peer} (cluster.fence_command) before promoting: the lease before "
            f"epoch {epoch} was not released",
            alert=True,
        )
        try:
            await self.fence_peer()
        except Exception as exc:
            self.events(
                "fence_peer",
                f"fencing {peer} failed: {exc}; not promoting, the lease is left to expire",
                alert=True,
            )
            return False
        return True

    async def fence_peer(self) -> None:
        """Run ``cluster.fence_command`` against the peer, if one is configured."""
        peer = self.ha_cfg.peer
        if self.cfg.cluster.fence_command and peer:
            argv = [a.replace("{peer}", peer) for a in self.cfg.cluster.fence_command]
            await run_command(argv, timeout=30.0)

    async def adopt(self, epoch: int) -> None:
        try:
            result = await self.bus.renew(epoch, self.cfg.cluster.lease_ttl)
        except BusError as exc:
            log.warning("adopt: renewal failed: %s", exc)
            return
        if result.outcome == "renewed":
            self.own = OwnLease(epoch, result.sent_at)
            self._changed.set()
            self.events("lease", f"adopted own lease, epoch {epoch}", epoch=epoch)
        else:
            self.inbox.renew_result = cast(RenewOutcome, result.outcome)

    async def release(self, to: str | None, *, planned: bool = False) -> None:
        """Give the lease up (``to``: the node that may take it at once; ``planned``: a
        hand-over that is no health failover)."""
        own = self.own
        self.drop()
        if own is None:
            return
        try:
            await self.bus.release(own.epoch, next_node=to, planned=planned)
            self.events(
                "lease", f"released the lease, epoch {own.epoch}" + (f", to {to}" if to else "")
            )
        except BusError as exc:
            log.warning("release failed (the lease will expire): %s", exc)

    def drop(self) -> None:
        """Stop renewing, without touching the key."""
        self.own = None
        self.promise_until = None
        self.state_dir.set_held(None)
        self._changed.set()

    # ------------------------------------------------------------------ renewal (rule 2)

    async def run_renewal(self) -> None:
        cluster = self.cfg.cluster
        last_attempt = -1e9
        while True:
            own = self.own
            if own is None:
                self._changed.clear()
                await self._changed.wait()
                last_attempt = self.clock()
                continue
            now = self.clock()
            expiring = renewal_decision(own, None, now, self.ha_cfg, self.promise_until) == "fence"
            if expiring and self.ha_state().role == "paused":
                # Rule 8: paused means no automatic action, on this path too. The services
                # stay; the renewal goes on, so that a Redis that comes back keeps (or,
                # empty, gives again) the key, and the heartbeats go on collecting the
                # peer's promise. A key found held by another node is fenced by the step.
                self._paused_expired(own, now)
                next_renew = last_attempt + cluster.renew_interval
                if now < next_renew:
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(next_renew - now):
                            await self._changed.wait()
                    continue
                last_attempt = now
                await self._renew_once(own, now + cluster.renew_interval)
                continue
            if expiring:
                log.warning("lease about to run out: fencing")
                detail = f"lease renewal failed for {now - own.sent_at:.1f} s"
                await self.fencer.fence("lease_expiring", detail)
                if self.own is own:
                    self.drop()
                self.wake()
                continue
            fence_at = (self.valid_until() or now) - cluster.fence_budget
            next_renew = last_attempt + cluster.renew_interval
            if now < next_renew:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(next_renew, fence_at) - now):
                        await self._changed.wait()
                continue
            last_attempt = now
            await self._renew_once(own, fence_at)

    def _paused_expired(self, own: OwnLease, now: float) -> None:
        """Say once per lease that it ran out while paused (the services stay)."""
        if self._paused_alerted == own.epoch:
            return
        self._paused_alerted = own.epoch
        self.events(
            "paused_lease_lost",
            f"paused: lease epoch {own.epoch} not renewed for {now - own.sent_at:.1f} s and "
            "no promise from the peer; services stay until an operator resumes",
            alert=True,
        )

    def _bounded(self, fence_at: float) -> float:
        """A Redis call's limit: its timeout, and never past the moment to fence (rule 3):
        a renewal sent just before ``fence_at`` must not delay the fence."""
        return max(0.0, min(self.cfg.redis.timeout * 2, fence_at - self.clock()))

    async def _renew_once(self, own: OwnLease, fence_at: float) -> None:
        ttl = self.cfg.cluster.lease_ttl
        try:
            async with asyncio.timeout(self._bounded(fence_at)):
                result = await self.bus.renew(own.epoch, ttl)
        except (BusError, TimeoutError) as exc:
            log.debug("renewal failed: %s", exc)
            return
        if self.own is not own:
            return  # released or replaced meanwhile
        if result.outcome == "renewed":
            self.own = OwnLease(own.epoch, result.sent_at)
            self._renewed.set()
        decision = renewal_decision(
            self.own,
            cast(RenewOutcome, result.outcome),
            self.clock(),
            self.ha_cfg,
            self.promise_until,
        )
        if result.outcome == "held_by_other":
            self.inbox.renew_result = "held_by_other"
            log.error("renewal found the lease held by %s: fencing now", result.holder)
            await self.fencer.fence("lease_taken", f"lease taken by {result.holder}")
            self.drop()
            self.wake()
        elif decision == "reacquire":  # the key is missing: take it again (rule 4)
            await self._reacquire(own, fence_at)
        # "fence" after a renewal means the lease ran out meanwhile: the loop fences.

    async def _reacquire(self, own: OwnLease, fence_at: float) -> None:
        try:
            async with asyncio.timeout(self._bounded(fence_at)):
                grant = await self.bus.acquire(self.cfg.cluster.lease_ttl, self.min_epoch())
        except (BusError, TimeoutError):
            grant = None
        if grant is not None and self.own is own:
            self.state_dir.record_epoch(grant.epoch)
            self.state_dir.set_held(grant.epoch)
            self.own = OwnLease(grant.epoch, grant.sent_at)
            self.events("lease", f"lease key was missing: took it again, epoch {grant.epoch}")
        self.wake()

    # ------------------------------------------------------------------ peer channel

    async def run_heartbeat(self) -> None:
        """Collect the peer's promise while this node holds the lease.

        A heartbeat follows each renewal at once, so that the promise and the key run out
        together: a standby waits for the later of the two, and with independent phases
        that is up to a renewal interval after the key could have been taken. Without
        renewals (Redis down: the node serves on the promise alone) it keeps its own
        pace of one per renewal interval."""
        client = self.peer_client
        assert client is not None
        while True:
            self._renewed.clear()
            start = self.clock()
            own = self.own
            if own is not None and is_holder(self.ha_state()):
                try:
                    receipt = await client.heartbeat(own.epoch)
                except Exception as exc:  # never let the peer channel stop
                    log.debug("peer heartbeat failed: %s", exc)
                    receipt = None
                self.peer_reachable = receipt is not None or client.last is not None
                if receipt is not None and self.own is own:
                    self.promise_until = receipt.valid_until - self.cfg.cluster.drift_margin
                    self._changed.set()
                self.metrics.peer_up.set(1 if receipt is not None else 0)
            else:
                self.promise_until = None
            delay = self.cfg.cluster.renew_interval - (self.clock() - start)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, delay)):
                    await self._renewed.wait()
