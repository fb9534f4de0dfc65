"""The cluster bus on Redis: lease, node records, control requests, events, wake-ups.

Every command runs under ``redis.timeout`` and without redis-py's hidden retries
(their backoff stretched one call to an unreachable server to many seconds).
Errors leave this module only as ``BusError`` subclasses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

import redis.exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from bot.boottime import boottime
from bot.bus import model, scripts
from bot.bus.errors import BusCorrupt, BusError, BusUnavailable, MarkedOutdated
from bot.bus.model import (
    Controls,
    Keys,
    Lease,
    LeaseGrant,
    LeaseRead,
    NodeRecord,
    RenewResult,
    Switchover,
)
from bot.config import Config, RedisConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

# Replies that mean "this server cannot serve the lease right now", not "we misused it".
_UNAVAILABLE_REPLIES = ("NOREPLICAS", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN")

# Blocking reads (event follow, pub/sub) wait this long per round.
_BLOCK_SECONDS = 2.0


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


class Bus:
    """One node's view of the cluster bus."""

    def __init__(
        self,
        cfg: RedisConfig,
        cluster: str,
        node_id: str,
        *,
        clock: Callable[[], float] = boottime,
        lease_ttl: float = 3.0,
        confirm_writes: bool | None = None,
        events_maxlen: int = 10000,
    ) -> None:
        self.cfg = cfg
        self.keys = Keys(cluster)
        self.node_id = node_id
        self.clock = clock
        self.timeout = cfg.timeout
        self.lease_ttl = lease_ttl
        # Rule 6: with Sentinel an acquire or renewal counts only once a replica has it.
        self.confirm_writes = bool(cfg.sentinels) if confirm_writes is None else confirm_writes
        self.events_maxlen = events_maxlen
        self.highest_epoch_seen = 0
        self.last_run_id: str | None = None
        self._redis: Redis | None = None
        self._stream: Redis | None = None  # blocking reads and pub/sub: no socket timeout
        self._sentinel: Sentinel | None = None
        self._stream_sentinel: Sentinel | None = None
        self._last_record_digest: str | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> Bus:
        return cls(cfg.redis, cfg.cluster.name, cfg.node.id, lease_ttl=cfg.cluster.lease_ttl)

    # ------------------------------------------------------------------ connection

    def _client(self, socket_timeout: float | None) -> tuple[Redis, Sentinel | None]:
        cfg = self.cfg
        url = urlparse(cfg.url)
        tls = url.scheme == "rediss"
        kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": cfg.timeout,
            "retry": _no_retry(),
            "client_name": f"failover-bot-{self.node_id}",
        }
        if cfg.username:
            kwargs["username"] = cfg.username
        if cfg.password_file is not None:
            kwargs["password"] = cfg.password_file.reveal()
        tls_kwargs: dict[str, Any] = {}
        if tls and cfg.tls_ca_file and cfg.tls_ca_file.startswith("env:"):
            tls_kwargs["ssl_ca_data"] = os.environ.get(cfg.tls_ca_file[4:], "")
        elif tls and cfg.tls_ca_file:
            tls_kwargs["ssl_ca_certs"] = cfg.tls_ca_file
        if not cfg.sentinels:
            return Redis.from_url(cfg.url, **kwargs, **tls_kwargs), None
        db = (url.path or "/0").lstrip("/") or "0"
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": cfg.timeout,
            "socket_connect_timeout": cfg.timeout,
            "retry": _no_retry(),
        }
        if cfg.sentinel_password_file is not None:
            sentinel_kwargs["password"] = cfg.sentinel_password_file.reveal()
        if tls:
            sentinel_kwargs.update(ssl=True, **tls_kwargs)
            kwargs.update(ssl=True, **tls_kwargs)
        hosts = []
        for item in cfg.sentinels:
            host, _, port = item.rpartition(":")
            hosts.append((host.strip("[]"), int(port)))
        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, db=int(db), **kwargs)
        return sentinel.master_for(cfg.service_name), sentinel

    @property
    def _r(self) -> Redis:
        if self._redis is None:
            self._redis, self._sentinel = self._client(self.timeout)
        return self._redis

    @property
    def _s(self) -> Redis:
        if self._stream is None:
            self._stream, self._stream_sentinel = self._client(None)
        return self._stream

    async def connect(self) -> None:
        """Create the clients and check that Redis answers (BusUnavailable if not).

        The clients stay usable after a failed check: every later command connects again.
        """
        self.last_run_id = await self.server_run_id()

    async def close(self) -> None:
        for client in (self._redis, self._stream):
            if client is not None:
                try:
                    await client.aclose()
                except (rexc.RedisError, OSError) as exc:
                    log.debug("closing redis client: %s", exc)
        for sentinel in (self._sentinel, self._stream_sentinel):
            if sentinel is not None:
                try:
                    await sentinel.aclose()
                except (rexc.RedisError, OSError) as exc:
                    log.debug("closing sentinel client: %s", exc)
        self._redis = self._stream = None
        self._sentinel = self._stream_sentinel = None

    async def _run(
        self, what: str, fn: Callable[[], Awaitable[T]], within: float | None = None
    ) -> T:
        limit = self.timeout if within is None else within
        try:
            async with asyncio.timeout(limit):
                return await fn()
        except TimeoutError:
            raise BusUnavailable(f"{what}: no reply from Redis within {limit:g}s") from None
        except rexc.AuthenticationError as exc:
            raise BusError(f"{what}: Redis refused the credentials ({exc})") from None
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
            raise BusUnavailable(f"{what}: {exc or type(exc).__name__}") from None
        except rexc.ResponseError as exc:
            text = str(exc)
            if text.startswith(_UNAVAILABLE_REPLIES) or isinstance(exc, rexc.ReadOnlyError):
                raise BusUnavailable(f"{what}: {text}") from None
            raise BusError(f"{what}: {text}") from None
        except rexc.RedisError as exc:
            raise BusError(f"{what}: {exc}") from None

    def _see(self, epoch: int | None) -> None:
        if epoch is not None and epoch > self.highest_epoch_seen:
            self.highest_epoch_seen = epoch

    # ------------------------------------------------------------------ lease

    async def server_run_id(self) -> str:
        info = await self._run("INFO server", lambda: self._r.info("server"))
        run_id = str(info.get("run_id", ""))
        self.last_run_id = run_id
        return run_id

    async def read_lease(self) -> LeaseRead:
        key = self.keys.leader

        async def go() -> list[Any]:
            pipe = self._r.pipeline(transaction=True)
            pipe.get(key)
            pipe.pttl(key)
            pipe.info("server")
            return list(await pipe.execute())

        sent_at = self.clock()
        raw, pttl, info = await self._run("read lease", go)
        reply_at = self.clock()
        run_id = str(info.get("run_id", ""))
        self.last_run_id = run_id
        lease = model.decode_lease(key, raw)
        if lease is not None:
            self._see(lease.epoch)
        pttl_ms = int(pttl) if raw is not None and int(pttl) >= 0 else None
        return LeaseRead(lease, pttl_ms, sent_at, reply_at, run_id)

    def _wait_ms(self) -> int:
        # WAIT's own timeout leaves room for its reply inside the command timeout.
        return max(1, int(self.timeout * 1000 * 0.6))

    async def _script_confirmed(
        self, what: str, script: str, keys: list[str], args: list[Any]
    ) -> tuple[Any, int | None]:
        """Run a script and, with confirmation on, WAIT 1 on the same connection."""

        async def go() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            pipe.eval(script, len(keys), *keys, *args)
            if self.confirm_writes:
                pipe.execute_command("WAIT", 1, self._wait_ms())
            return list(await pipe.execute())

        replies = await self._run(what, go)
        return replies[0], (int(replies[1]) if self.confirm_writes else None)

    async def acquire(self, ttl: float, min_epoch: int) -> LeaseGrant | None:
        """Take a free lease (or one released to this node). None: the key is not free."""
        floor = max(int(min_epoch), self.highest_epoch_seen)
        sent_at = self.clock()
        reply, replicas = await self._script_confirmed(
            "acquire lease",
            scripts.ACQUIRE,
            [self.keys.leader, self.keys.epoch, self.keys.control],
            [self.node_id, _ms(ttl), floor, self.keys.wake],
        )
        epoch, value = int(reply[0]), reply[1]
        if epoch == -1:
            raise MarkedOutdated(
                f"acquire refused: {self.node_id} is marked outdated on the cluster bus "
                f"({_text(value)})"
            )
        if epoch == 0:
            current = model.decode_lease(self.keys.leader, value)  # corrupt: BusCorrupt
            if current is not None:
                self._see(current.epoch)
            return None
        self._see(epoch)
        if replicas is not None and replicas < 1:
            await self._drop_unconfirmed(epoch)
            raise BusUnavailable(f"acquire of epoch {epoch}: no replica confirmed it in time")
        return LeaseGrant(epoch=epoch, sent_at=sent_at)

    async def _drop_unconfirmed(self, epoch: int) -> None:
        # Best effort: a lease no replica has must not linger as ours.
        try:
            await self.release(epoch)
        except BusError as exc:
            log.debug("dropping unconfirmed lease: %s", exc)

    async def renew(self, epoch: int, ttl: float) -> RenewResult:
        sent_at = self.clock()
        reply, replicas = await self._script_confirmed(
            "renew lease", scripts.RENEW, [self.keys.leader], [self.node_id, epoch, _ms(ttl)]
        )
        outcome = _text(reply[0])
        if outcome == "missing":
            return RenewResult("missing", sent_at)
        if outcome == "other":
            lease = model.decode_lease(self.keys.leader, reply[1])
            assert lease is not None
            self._see(lease.epoch)
            return RenewResult("held_by_other", sent_at, holder=lease.holder, lease=lease)
        if replicas is not None and replicas < 1:
            raise BusUnavailable(f"renewal of epoch {epoch}: no replica confirmed it in time")
        return RenewResult("renewed", sent_at, holder=self.node_id)

    async def release(
        self, epoch: int, next_node: str | None = None, *, planned: bool = False
    ) -> bool:
        """Compare-and-delete; naming ``next_node`` lets that node take the lease at once.
        ``planned``: a hand-over that is no health failover (no hold-down after it)."""
        reply = await self._run(
            "release lease",
            lambda: self._r.eval(
                scripts.RELEASE,
                2,
                self.keys.leader,
                self.keys.released,
                self.node_id,
                epoch,
                next_node or "",
                self.keys.wake,
                "1" if planned and next_node else "",
            ),
        )
        return bool(int(reply))

    # ------------------------------------------------------------------ node records

    async def released_epoch(self) -> int | None:
        """The epoch its holder last gave up by a release (None: none since Redis started)."""
        raw: Any = await self._run("read released mark", lambda: self._r.get(self.keys.released))
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            raise BusCorrupt(self.keys.released, f"not an epoch: {raw!r}") from None

    async def publish_node_record(self, record: NodeRecord) -> None:
        value = model.encode_record(record)
        # Wake the others only when something besides last_seen changed.
        digest = hashlib.sha256(
            model.encode_record(_without_last_seen(record)).encode()
        ).hexdigest()
        changed = digest != self._last_record_digest

        async def go() -> None:
            pipe = self._r.pipeline(transaction=True)
            pipe.set(self.keys.node(record.id), value, px=_ms(3 * self.lease_ttl))
            pipe.sadd(self.keys.nodes, record.id)
            if record.last_seen > 0:
                seen = json.dumps({"t": record.last_seen, "role": record.role})
                pipe.hset(self.keys.seen, record.id, seen)
            if changed:
                pipe.publish(self.keys.wake, "record")
            await pipe.execute()

        await self._run("publish node record", go)
        self._see(record.epoch)
        self._last_record_digest = digest

    async def node_records(self) -> dict[str, NodeRecord]:
        async def go() -> tuple[list[str], list[Any]]:
            ids = sorted(_text(i) for i in await self._r.smembers(self.keys.nodes))
            if not ids:
                return [], []
            return ids, list(await self._r.mget([self.keys.node(i) for i in ids]))

        ids, values = await self._run("read node records", go)
        records: dict[str, NodeRecord] = {}
        for node_id, raw in zip(ids, values, strict=True):
            if raw is None:
                continue  # expired: not seen for three lease times
            record = model.decode_record(self.keys.node(node_id), raw)
            self._see(record.epoch)
            records[node_id] = record
        return records

    async def last_seen_times(self) -> dict[str, tuple[float, str | None]]:
        """Node id -> (wall time of its last record, the role it said), also for records
        that have expired."""
        raw: Any = await self._run("read last-seen times", lambda: self._r.hgetall(self.keys.seen))
        times: dict[str, tuple[float, str | None]] = {}
        for key, value in dict(raw).items():
            try:
                obj = json.loads(_text(value))
                at, role = float(obj["t"]), obj.get("role")
            except (ValueError, TypeError, KeyError):
                continue  # not ours to repair; the record itself still counts
            times[_text(key)] = (at, role if isinstance(role, str) else None)
        return times

    # ------------------------------------------------------------------ controls

    async def controls(self) -> Controls:
        raw: Any = await self._run("read controls", lambda: self._r.hgetall(self.keys.control))
        return model.decode_controls(self.keys.control, raw)

    async def _control(self, set_fields: dict[str, str], del_fields: list[str]) -> None:
        async def go() -> None:
            pipe = self._r.pipeline(transaction=True)
            if set_fields:
                pipe.hset(self.keys.control, mapping=set_fields)  # type: ignore[arg-type]
            if del_fields:
                pipe.hdel(self.keys.control, *del_fields)
            pipe.publish(self.keys.wake, "control")
            await pipe.execute()

        await self._run("write control", go)

    async def request_switchover(
        self, target: str, drain_timeout: float, *, request_id: str | None = None
    ) -> None:
        """Ask the HA loop to hand the lease to ``target`` (a newer request replaces it)."""
        request = Switchover(
            target, float(drain_timeout), time.time(), request_id or uuid.uuid4().hex[:12]
        )
        value = model.dumps(
            {
                "target": request.target,
                "drain_timeout": request.drain_timeout,
                "requested_at": request.requested_at,
                "id": request.request_id,
                "by": self.node_id,
            }
        )
        await self._control({model.SWITCHOVER_FIELD: value}, [])

    async def clear_switchover(self, request_id: str | None = None) -> bool:
        """Clear the switchover request (only ``request_id``'s, when given)."""
        reply = await self._run(
            "clear switchover",
            lambda: self._r.eval(
                scripts.CLEAR_SWITCHOVER, 1, self.keys.control, request_id or "", self.keys.wake
            ),
        )
        return bool(int(reply))

    async def set_paused(self, paused: bool) -> None:
        # A resume is written, not deleted, so that a flag lost with a Redis restart
        # (no field) is told apart from an explicit resume (design §3 rule 8).
        value = model.dumps({"on": paused, "at": time.time(), "by": self.node_id})
        await self._control({model.PAUSED_FIELD: value}, [])

    async def _per_node(self, kind: str, node: str, value: dict[str, Any] | None) -> None:
        name = f"{kind}:{node}"
        if value is None:
            await self._control({}, [name])
        else:
            await self._control({name: model.dumps(value)}, [])

    async def set_cordon(self, node: str, on: bool) -> None:
        await self._per_node("cordon", node, {"at": time.time()} if on else None)

    async def set_failed(self, node: str, until_wall: float | None) -> None:
        await self._per_node("failed", node, None if until_wall is None else {"until": until_wall})

    async def set_outdated(self, node: str, on: bool, *, by: str | None = None) -> int | None:
        """Mark ``node``'s data outdated (or clear the mark), confirmed as the lease is:
        with confirmation on (Sentinel), only once ``WAIT 1`` says a replica has it,
        so a Sentinel switch cannot lose it. Returns the replicas that confirmed (None
        without confirmation); BusUnavailable when none did in time."""
        name = f"outdated:{node}"
        value = model.dumps({"at": time.time(), "by": by or self.node_id}) if on else None

        async def go() -> list[Any]:
            pipe = self._r.pipeline(transaction=False)
            if value is None:
                pipe.hdel(self.keys.control, name)
            else:
                pipe.hset(self.keys.control, name, value)
            pipe.publish(self.keys.wake, "control")
            if self.confirm_writes:
                pipe.execute_command("WAIT", 1, self._wait_ms())
            return list(await pipe.execute())

        replies = await self._run("write outdated mark", go)
        if not self.confirm_writes:
            return None
        replicas = int(replies[-1])
        if replicas < 1:
            raise BusUnavailable(f"outdated mark for {node}: no replica confirmed it in time")
        return replicas

    async def mark_outdated(self, node: str, *, by: str) -> tuple[Lease | None, int | None]:
        """DRBD's fence-peer handler: mark ``node``'s data outdated unless it holds the
        lease, in one script. Returns (the lease ``node`` holds, None) when refused, else
        (None, the replicas that confirmed: None without confirmation); BusUnavailable
        when no replica confirmed the mark in time."""
        value = model.dumps({"at": time.time(), "by": by})
        reply, replicas = await self._script_confirmed(
            "mark outdated",
            scripts.MARK_OUTDATED,
            [self.keys.leader, self.keys.control],
            [node, value, self.keys.wake],
        )
        if _text(reply[0]) == "holder":
            lease = model.decode_lease(self.keys.leader, reply[1])
            assert lease is not None
            return lease, None
        if replicas is not None and replicas < 1:
            raise BusUnavailable(f"outdated mark for {node}: no replica confirmed it in time")
        return None, replicas

    async def outdated_mark(self, node: str) -> str | None:
        """The raw value of ``node``'s outdated mark, or None."""
        raw = await self._run(
            "read outdated mark", lambda: self._r.hget(self.keys.control, f"outdated:{node}")
        )
        return None if raw is None else _text(raw)

    async def clear_outdated_mark(self, node: str, seen: str) -> bool:
        """Clear ``node``'s outdated mark if it is still ``seen`` (compare-and-delete)."""
        reply = await self._run(
            "clear outdated mark",
            lambda: self._r.eval(
                scripts.CLEAR_OUTDATED, 1, self.keys.control, node, seen, self.keys.wake
            ),
        )
        return bool(int(reply))

    # ------------------------------------------------------------------ events

    async def append_event(self, kind: str, message: str, **fields: object) -> None:
        """Add to the capped event stream. Never put secrets in fields (Secret shows as ***)."""
        payload = model.encode_event(self.node_id, kind, message, time.time(), dict(fields))
        await self._run(
            "append event",
            lambda: self._r.xadd(
                self.keys.events, {"e": payload}, maxlen=self.events_maxlen, approximate=True
            ),
        )

    async def read_events(self, count: int = 100) -> list[dict[str, Any]]:
        """The last ``count`` events, oldest first."""
        entries: Any = await self._run(
            "read events", lambda: self._r.xrevrange(self.keys.events, count=count)
        )
        return [_event(entry) for entry in reversed(entries)]

    async def follow_events(self, since: str = "$") -> AsyncIterator[dict[str, Any]]:
        """Events as they are appended (after ``since``, a stream id; "$": only new ones)."""
        last = since
        if last == "$":
            # Resolve "$" once, so that nothing appended between two reads is lost.
            newest: Any = await self._run(
                "read events", lambda: self._r.xrevrange(self.keys.events, count=1)
            )
            last = _text(newest[0][0]) if newest else "0-0"
        while True:
            reply: Any = await self._run(
                "follow events",
                lambda last=last: self._s.xread(  # type: ignore[misc]
                    {self.keys.events: last}, count=100, block=int(_BLOCK_SECONDS * 1000)
                ),
                within=_BLOCK_SECONDS + self.timeout,
            )
            for _stream, entries in reply or []:
                for entry in entries:
                    event = _event(entry)
                    last = event["id"]
                    yield event

    # ------------------------------------------------------------------ wake-ups

    async def wakeups(self) -> AsyncIterator[str]:
        """Pub/sub wake-ups: "subscribed" first (re-read everything then), then
        "lease_acquired", "lease_released", "control", "record", ... as they are pushed.

        Raises BusUnavailable when the subscription breaks; subscribe again after it.
        """
        pubsub = self._s.pubsub()
        try:
            await self._run("subscribe", lambda: pubsub.subscribe(self.keys.wake))
            # Wait for the server's confirmation, so that "subscribed" means it.
            while True:
                msg = await self._run(
                    "subscribe",
                    lambda: pubsub.get_message(timeout=self.timeout),
                    within=2 * self.timeout,
                )
                if msg is not None and msg.get("type") == "subscribe":
                    break
                if msg is None:
                    raise BusUnavailable("subscribe: no confirmation from Redis")
            yield "subscribed"
            while True:
                msg = await self._run(
                    "wake-ups",
                    lambda: pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_BLOCK_SECONDS
                    ),
                    within=_BLOCK_SECONDS + self.timeout,
                )
                if msg is not None and msg.get("type") == "message":
                    yield _text(msg["data"])
        finally:
            try:
                await asyncio.wait_for(pubsub.aclose(), self.timeout)
            except (TimeoutError, rexc.RedisError, OSError) as exc:
                log.debug("closing pub/sub: %s", exc)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _event(entry: Any) -> dict[str, Any]:
    entry_id, fields = entry
    payload = fields.get(b"e", fields.get("e"))
    return model.decode_event(_text(entry_id), payload)


def _without_last_seen(record: NodeRecord) -> NodeRecord:
    from dataclasses import replace

    # The lease view's remaining time changes with every write, like last_seen.
    return replace(record, last_seen=0.0, lease_view={})


__all__ = ["Bus", "BusCorrupt", "BusError", "BusUnavailable"]
