"""The direct bot-to-bot channel: signed heartbeats and lease promises (design §3).

A heartbeat is a JSON body ``{"node", "epoch", "nonce", "sent_at_wall"}`` signed
with HMAC-SHA256 over the exact bytes (hex, header ``X-Failover-Signature``).

A standby that answers ``{"promise": true}`` promises not to take the lease for
``lease_ttl``.  The two sides count that time from different instants so that the
primary's view always ends first: the primary from when it *sent* the heartbeat
(taken before sending), the standby from after it received it.  The standby
persists the promise (fsync'd by the state directory) before it answers, so a
restart cannot forget it.

Wall time in the body only bounds replays (with the nonce cache); it is never
used for safety.  Lease arithmetic uses the injected boot-time clock.

The same channel carries DRBD's fencing: the fence-peer handler on the node that
lost the replication link asks the peer to outdate itself (``POST /peer/outdate``,
``{"node", "resource", "nonce", "sent_at_wall"}``, signed the same way). The peer
refuses while it is Primary; otherwise it makes its outdated mark durable and runs
``drbdadm outdate`` before it answers ``{"outdated": true}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from bot.boottime import boottime
from bot.config import Secret

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Failover-Signature"
HEARTBEAT_PATH = "/peer/heartbeat"
OUTDATE_PATH = "/peer/outdate"
SCHEMA_VERSION = 1
_BODY_KEYS = {"node", "epoch", "nonce", "sent_at_wall"}
_MAX_NONCE_LEN = 128


def sign(secret: Secret, body: bytes) -> str:
    return hmac.new(secret.reveal().encode(), body, hashlib.sha256).hexdigest()


def verify(secret: Secret, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body), signature.strip().lower())


class PromiseStore(Protocol):
    """The node's state directory (``bot.state.StateDir``)."""

    async def give_promise_off_loop(self, peer: str, until_boottime: float) -> None: ...

    def promise_until(self) -> float | None: ...


# Returns None when this node may promise, else the reason it must not
# (it is primary itself, or about to take the lease).
PromisePolicy = Callable[[str, int], str | None]


class OutdateResult(Protocol):
    @property
    def outdated(self) -> bool: ...

    @property
    def primary(self) -> bool: ...

    @property
    def reason(self) -> str: ...


# (requesting peer, resource or None, the request's wall time) -> this node's answer.
Outdater = Callable[[str, str | None, float], Awaitable[OutdateResult]]


@dataclass(frozen=True)
class PromiseReceipt:
    """A standby's promise as the primary counts it (its own boot-time clock)."""

    peer: str
    epoch: int
    sent_at: float
    valid_until: float
    round_trip: float


@dataclass
class HeartbeatResult:
    """What the last heartbeat to a peer showed (for status and metrics)."""

    reachable: bool
    promise: bool
    reason: str
    at: float


class PeerServer:
    """The answering side of ``POST /peer/heartbeat``; used by the API handler."""

    def __init__(
        self,
        node_id: str,
        secret: Secret,
        *,
        peers: Collection[str],
        store: PromiseStore,
        may_promise: PromisePolicy,
        lease_ttl: float,
        clock: Callable[[], float] = boottime,
        wall_clock: Callable[[], float] = time.time,
        max_skew: float = 30.0,
        nonce_capacity: int = 4096,
        outdate: Outdater | None = None,
    ) -> None:
        self.node_id = node_id
        self._secret = secret
        self._peers = frozenset(peers)
        self._store = store
        self._may_promise = may_promise
        self._lease_ttl = lease_ttl
        self._clock = clock
        self._wall = wall_clock
        self._max_skew = max_skew
        self._capacity = nonce_capacity
        self._outdate = outdate
        self._nonces: OrderedDict[str, float] = OrderedDict()
        # Evicting a nonce raises this floor, so an evicted nonce cannot be replayed.
        self._floor = -math.inf
        self._lock = asyncio.Lock()
        self.last_seen: dict[str, float] = {}

    async def handle(self, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
        """Verify, decide, persist, answer: returns (HTTP status, JSON object)."""
        refused = self._authentic(body, signature)
        if refused is not None:
            return refused
        try:
            msg = _parse_heartbeat(body)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        peer, epoch, nonce, sent_wall = msg
        if peer not in self._peers:
            return 403, {"error": f"unknown node {peer!r}"}
        async with self._lock:
            refused = self._fresh(nonce, sent_wall, "heartbeat")
            if refused is not None:
                return refused
            self.last_seen[peer] = self._clock()
            refusal = self._may_promise(peer, epoch)
            if refusal is not None:
                return 200, {"node": self.node_id, "promise": False, "reason": refusal}
            # Counted from after receipt: never shorter than the sender's view.
            until = self._clock() + self._lease_ttl
            try:
                await self._store.give_promise_off_loop(peer, until)
            except Exception as exc:
                log.error("could not persist the promise to %s: %s", peer, type(exc).__name__)
                return 200, {
                    "node": self.node_id,
                    "promise": False,
                    "reason": "could not persist the promise",
                }
        return 200, {"node": self.node_id, "promise": True, "ttl": self._lease_ttl}

    async def handle_outdate(
        self, body: bytes, signature: str | None
    ) -> tuple[int, dict[str, Any]]:
        """The peer's fence-peer handler: outdate this node's data, durably, or refuse."""
        if self._outdate is None:
            return 404, {"error": "no DRBD resource on this node"}
        refused = self._authentic(body, signature)
        if refused is not None:
            return refused
        try:
            peer, resource, nonce, sent_wall = _parse_outdate(body)
        except ValueError as exc:
            return 400, {"error": str(exc)}
        if peer not in self._peers:
            return 403, {"error": f"unknown node {peer!r}"}
        async with self._lock:
            refused = self._fresh(nonce, sent_wall, "request")
            if refused is not None:
                return refused
        try:
            answer = await self._outdate(peer, resource, sent_wall)
        except Exception as exc:  # the answer must say "not outdated", never crash the API
            log.error("outdate requested by %s failed: %s", peer, exc)
            return 200, {"node": self.node_id, "outdated": False, "primary": False,
                         "reason": f"failed: {type(exc).__name__}"}  # fmt: skip
        return 200, {
            "node": self.node_id,
            "outdated": bool(answer.outdated),
            "primary": bool(answer.primary),
            "reason": str(answer.reason)[:300],
        }

    def _authentic(self, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]] | None:
        """The refusal of a request not signed with the cluster secret (None: signed)."""
        if not signature:
            return 401, {"error": f"missing {SIGNATURE_HEADER} header"}
        if not verify(self._secret, body, signature):
            return 403, {"error": "bad signature"}
        return None

    def _fresh(self, nonce: str, sent_wall: float, what: str) -> tuple[int, dict[str, Any]] | None:
        """Under the lock: the refusal of a stale or replayed request, else remember it."""
        now_wall = self._wall()
        self._expire(now_wall)
        if abs(now_wall - sent_wall) > self._max_skew:
            return 409, {"error": f"stale {what}: timestamp outside the replay window"}
        if nonce in self._nonces or sent_wall <= self._floor:
            return 409, {"error": f"replayed {what}"}
        self._remember(nonce, sent_wall)
        return None

    def _remember(self, nonce: str, sent_wall: float) -> None:
        self._nonces[nonce] = sent_wall
        while len(self._nonces) > self._capacity:
            _, evicted = self._nonces.popitem(last=False)
            self._floor = max(self._floor, evicted)

    def _expire(self, now_wall: float) -> None:
        # Nonces older than the window are refused by the timestamp check anyway.
        horizon = now_wall - self._max_skew
        stale = [n for n, ts in self._nonces.items() if ts < horizon]
        for n in stale:
            del self._nonces[n]


def _parse_heartbeat(body: bytes) -> tuple[str, int, str, float]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("body is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    missing = _BODY_KEYS - data.keys()
    if missing:
        raise ValueError(f"missing fields: {', '.join(sorted(missing))}")
    node, epoch, nonce, sent = (data[k] for k in ("node", "epoch", "nonce", "sent_at_wall"))
    if not isinstance(node, str) or not node:
        raise ValueError("node must be a non-empty string")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise ValueError("epoch must be a non-negative integer")
    if not isinstance(nonce, str) or not 8 <= len(nonce) <= _MAX_NONCE_LEN:
        raise ValueError("nonce must be a string of 8..128 characters")
    if not isinstance(sent, (int, float)) or isinstance(sent, bool) or not math.isfinite(sent):
        raise ValueError("sent_at_wall must be a number")
    return node, epoch, nonce, float(sent)


def _parse_outdate(body: bytes) -> tuple[str, str | None, str, float]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("body is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    missing = {"node", "nonce", "sent_at_wall"} - data.keys()
    if missing:
        raise ValueError(f"missing fields: {', '.join(sorted(missing))}")
    node, nonce, sent = data["node"], data["nonce"], data["sent_at_wall"]
    resource = data.get("resource")
    if not isinstance(node, str) or not node:
        raise ValueError("node must be a non-empty string")
    if resource is not None and (not isinstance(resource, str) or len(resource) > 128):
        raise ValueError("resource must be a string of at most 128 characters")
    if not isinstance(nonce, str) or not 8 <= len(nonce) <= _MAX_NONCE_LEN:
        raise ValueError("nonce must be a string of 8..128 characters")
    if not isinstance(sent, (int, float)) or isinstance(sent, bool) or not math.isfinite(sent):
        raise ValueError("sent_at_wall must be a number")
    return node, resource or None, nonce, float(sent)


@dataclass(frozen=True)
class PeerOutdate:
    """What the peer answered to "outdate yourself" (``reached``: it answered at all)."""

    reached: bool
    outdated: bool
    primary: bool
    reason: str


async def request_outdate(
    node_id: str,
    peer_api: str,
    secret: Secret,
    resource: str | None,
    *,
    session: aiohttp.ClientSession,
    limit: float,
    wall_clock: Callable[[], float] = time.time,
) -> PeerOutdate:
    """Ask the peer bot to outdate its data; never raises for network trouble."""
    body = json.dumps(
        {
            "v": SCHEMA_VERSION,
            "node": node_id,
            "resource": resource,
            "nonce": secrets.token_hex(16),
            "sent_at_wall": wall_clock(),
        },
        separators=(",", ":"),
    ).encode()
    url = peer_api.rstrip("/") + OUTDATE_PATH
    headers = {SIGNATURE_HEADER: sign(secret, body), "Content-Type": "application/json"}
    try:
        async with asyncio.timeout(limit):
            async with session.post(url, data=body, headers=headers) as resp:
                status = resp.status
                raw = await resp.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return PeerOutdate(False, False, False, f"unreachable: {type(exc).__name__}")
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return PeerOutdate(True, False, False, f"HTTP {status}: answer is not a JSON object")
    if status != 200:
        return PeerOutdate(True, False, False, f"HTTP {status}: {answer.get('error', '')}"[:300])
    return PeerOutdate(
        True,
        answer.get("outdated") is True,
        answer.get("primary") is True,
        str(answer.get("reason", ""))[:300],
    )


class PeerClient:
    """The sending side: one heartbeat to one peer, returning its promise if any."""

    def __init__(
        self,
        node_id: str,
        peer_id: str,
        peer_api: str,
        secret: Secret,
        *,
        session: aiohttp.ClientSession,
        lease_ttl: float,
        timeout: float,
        clock: Callable[[], float] = boottime,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id
        self.peer_id = peer_id
        self._url = peer_api.rstrip("/") + HEARTBEAT_PATH
        self._secret = secret
        self._session = session
        self._lease_ttl = lease_ttl
        self._timeout = timeout
        self._clock = clock
        self._wall = wall_clock
        self.last: HeartbeatResult | None = None

    def build(self, epoch: int) -> tuple[bytes, str]:
        """The body and its signature (separate for tests and replays)."""
        body = json.dumps(
            {
                "v": SCHEMA_VERSION,
                "node": self.node_id,
                "epoch": epoch,
                "nonce": secrets.token_hex(16),
                "sent_at_wall": self._wall(),
            },
            separators=(",", ":"),
        ).encode()
        return body, sign(self._secret, body)

    async def heartbeat(self, epoch: int) -> PromiseReceipt | None:
        body, signature = self.build(epoch)
        sent_at = self._clock()  # before sending: the promise counts from here
        try:
            async with asyncio.timeout(self._timeout):
                async with self._session.post(
                    self._url,
                    data=body,
                    headers={SIGNATURE_HEADER: signature, "Content-Type": "application/json"},
                ) as resp:
                    status = resp.status
                    raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._record(False, False, f"unreachable: {type(exc).__name__}")
            return None
        answered_at = self._clock()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self._record(True, False, f"HTTP {status}: answer is not a JSON object")
            return None
        if status != 200:
            reason = str(answer.get("error", ""))[:200]
            self._record(True, False, f"HTTP {status}: {reason}")
            return None
        if answer.get("promise") is not True:
            self._record(True, False, str(answer.get("reason", "no promise"))[:200])
            return None
        self._record(True, True, "promised")
        return PromiseReceipt(
            peer=self.peer_id,
            epoch=epoch,
            sent_at=sent_at,
            valid_until=sent_at + self._lease_ttl,
            round_trip=answered_at - sent_at,
        )

    def _record(self, reachable: bool, promise: bool, reason: str) -> None:
        if not reachable or not promise:
            log.debug("heartbeat to %s: %s", self.peer_id, reason)
        self.last = HeartbeatResult(reachable, promise, reason, self._clock())
