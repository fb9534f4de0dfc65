"""Values on the bus and their codec (pure: no I/O).

Every value is JSON with a schema version ``"v": 1``. Decoding is strict: a value
that does not parse, has an unknown version or a field of the wrong type raises
``BusCorrupt`` naming the key and the reason. A corrupt lease is never "free".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from bot.bus.errors import BusCorrupt

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Keys:
    """Key names of one cluster; ``{NAME}`` is a Redis Cluster hash tag, kept literally."""

    cluster: str

    @property
    def prefix(self) -> str:
        return f"failover:{{{self.cluster}}}"

    @property
    def leader(self) -> str:
        return f"{self.prefix}:leader"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}:epoch"

    @property
    def released(self) -> str:
        """The epoch last given up by its holder (a release, not an expiry)."""
        return f"{self.prefix}:released"

    @property
    def control(self) -> str:
        return f"{self.prefix}:control"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    @property
    def wake(self) -> str:
        return f"{self.prefix}:wake"

    @property
    def nodes(self) -> str:
        """Set of node ids that ever published a record (the records themselves expire)."""
        return f"{self.prefix}:nodes"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    @property
    def seen(self) -> str:
        """Hash node id -> wall time of its last record; kept when the record expires, so
        a dead node is still shown with how long ago it was last seen."""
        return f"{self.prefix}:seen"


@dataclass(frozen=True)
class Lease:
    """The value on the lease key.

    ``next_node`` is set only by a release that names the next node: the lease is then
    no longer held by ``holder``; only ``next_node`` may take it before it expires.
    """

    holder: str
    epoch: int
    next_node: str | None = None
    # A release naming the next node for a planned reason (switchover, failback, cordon,
    # stop), not a health failover: the next holder arms no failover hold-down.
    planned: bool = False

    @property
    def released(self) -> bool:
        return self.next_node is not None

    def held_by(self, node_id: str) -> bool:
        return self.holder == node_id and self.next_node is None


@dataclass(frozen=True)
class LeaseRead:
    lease: Lease | None
    pttl_ms: int | None  # None: no key, or a key without expiry
    sent_at: float  # lease clock, before the read was sent
    reply_at: float  # lease clock, when the reply arrived
    run_id: str  # the Redis server that answered

    def predicted_expiry(self) -> float | None:
        """Lease-clock time by which the key will have expired (rule 5), None if no key."""
        if self.lease is None or self.pttl_ms is None:
            return None
        return self.reply_at + self.pttl_ms / 1000.0


@dataclass(frozen=True)
class LeaseGrant:
    epoch: int
    sent_at: float  # t_sent of rule 1: lease clock taken before the command was sent


@dataclass(frozen=True)
class RenewResult:
    outcome: str  # "renewed" | "held_by_other" | "missing"
    sent_at: float
    holder: str | None = None  # the other holder when held_by_other
    lease: Lease | None = None  # the value found when held_by_other


@dataclass(frozen=True)
class NodeRecord:
    id: str
    role: str
    healthy: bool
    health_reasons: list[str] = field(default_factory=list)
    ready: bool = False
    ready_reasons: list[str] = field(default_factory=list)
    epoch: int | None = None
    version: str = ""
    settings_hash: str = ""
    last_seen: float = 0.0  # wall clock when written, for display only
    extra: dict[str, Any] = field(default_factory=dict)
    # The writer's own view of the lease when it wrote: holder, epoch, remaining seconds.
    lease_view: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Switchover:
    target: str
    drain_timeout: float
    requested_at: float  # wall clock, for display
    request_id: str


@dataclass(frozen=True)
class Controls:
    # None: no flag on the bus (a fresh cluster, or a Redis that lost it: rule 8
    # then keeps a pause the node remembers); False: explicitly resumed.
    paused: bool | None = None
    cordoned: frozenset[str] = frozenset()
    failed: dict[str, float] = field(default_factory=dict)  # node -> until (wall clock)
    switchover: Switchover | None = None
    outdated: frozenset[str] = frozenset()


# --------------------------------------------------------------------------- encoding


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps({"v": SCHEMA_VERSION, **obj}, separators=(",", ":"), sort_keys=True)


def encode_lease(lease: Lease) -> str:
    body: dict[str, Any] = {"holder": lease.holder, "epoch": lease.epoch}
    if lease.next_node is not None:
        body["next"] = lease.next_node
        if lease.planned:
            body["planned"] = True
    return dumps(body)


def encode_record(record: NodeRecord) -> str:
    return dumps(
        {
            "id": record.id,
            "role": record.role,
            "healthy": record.healthy,
            "health_reasons": list(record.health_reasons),
            "ready": record.ready,
            "ready_reasons": list(record.ready_reasons),
            "epoch": record.epoch,
            "version": record.version,
            "settings_hash": record.settings_hash,
            "last_seen": record.last_seen,
            "extra": record.extra,
            "lease_view": record.lease_view,
        }
    )


# --------------------------------------------------------------------------- decoding


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else raw


def load_versioned(key: str, raw: bytes | str) -> dict[str, Any]:
    """Parse one JSON value and check its schema version."""
    try:
        obj = json.loads(_text(raw))
    except (UnicodeDecodeError, ValueError):
        raise BusCorrupt(key, f"not JSON: {_preview(raw)}") from None
    if not isinstance(obj, dict):
        raise BusCorrupt(key, f"not a JSON object: {_preview(raw)}")
    version = obj.get("v")
    if "v" not in obj:
        raise BusCorrupt(key, "no schema version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise BusCorrupt(key, f"unknown schema version {version!r}")
    return obj


def _preview(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


class _Fields:
    """Typed access to the fields of one decoded value; wrong types are BusCorrupt."""

    def __init__(self, key: str, obj: dict[str, Any]) -> None:
        self.key = key
        self.obj = obj

    def _bad(self, name: str, want: str) -> BusCorrupt:
        return BusCorrupt(self.key, f"field {name!r} must be {want}, got {self.obj.get(name)!r}")

    def opt_str(self, name: str, *, optional: bool = False) -> str | None:
        value = self.obj.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self._bad(name, "a non-empty string")
        return value

    def req_str(self, name: str) -> str:
        value = self.opt_str(name)
        assert value is not None
        return value

    def text(self, name: str, default: str = "") -> str:
        value = self.obj.get(name, default)
        if not isinstance(value, str):
            raise self._bad(name, "a string")
        return value

    def integer(self, name: str, *, optional: bool = False, minimum: int = 0) -> int | None:
        value = self.obj.get(name)
        if value is None and optional:
            return None
        # cjson writes integers as such; a float with an integral value is accepted too
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if type(value) is not int or value < minimum:
            raise self._bad(name, f"an integer >= {minimum}")
        return value

    def number(self, name: str, default: float | None = None) -> float:
        value = self.obj.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(name, "a number")
        if not math.isfinite(value):
            raise self._bad(name, "a finite number")
        return float(value)

    def flag(self, name: str, default: bool | None = None) -> bool:
        value = self.obj.get(name, default)
        if not isinstance(value, bool):
            raise self._bad(name, "true or false")
        return value

    def strlist(self, name: str) -> list[str]:
        value = self.obj.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(name, "a list of strings")
        return list(value)

    def mapping(self, name: str) -> dict[str, Any]:
        value = self.obj.get(name, {})
        if not isinstance(value, dict):
            raise self._bad(name, "an object")
        return dict(value)


def decode_lease(key: str, raw: bytes | str | None) -> Lease | None:
    """None for a missing key; BusCorrupt for anything that is not a lease of this schema."""
    if raw is None:
        return None
    f = _Fields(key, load_versioned(key, raw))
    epoch = f.integer("epoch", minimum=1)
    assert epoch is not None
    return Lease(
        holder=f.req_str("holder"),
        epoch=epoch,
        next_node=f.opt_str("next", optional=True),
        planned=f.obj.get("planned") is True,
    )


def decode_record(key: str, raw: bytes | str) -> NodeRecord:
    f = _Fields(key, load_versioned(key, raw))
    return NodeRecord(
        id=f.req_str("id"),
        role=f.req_str("role"),
        healthy=f.flag("healthy"),
        health_reasons=f.strlist("health_reasons"),
        ready=f.flag("ready"),
        ready_reasons=f.strlist("ready_reasons"),
        epoch=f.integer("epoch", optional=True),
        version=f.text("version"),
        settings_hash=f.text("settings_hash"),
        last_seen=f.number("last_seen"),
        extra=f.mapping("extra"),
        lease_view=f.mapping("lease_view"),
    )


# Fields of the control hash: "paused", "switchover", "cordon:ID", "failed:ID", "outdated:ID".
PAUSED_FIELD = "paused"
SWITCHOVER_FIELD = "switchover"
PER_NODE_FIELDS = ("cordon", "failed", "outdated")


def decode_controls(key: str, raw: dict[bytes, bytes] | dict[str, str]) -> Controls:
    paused: bool | None = None
    cordoned: set[str] = set()
    outdated: set[str] = set()
    failed: dict[str, float] = {}
    switchover: Switchover | None = None
    for raw_name, raw_value in raw.items():
        name = _text(raw_name)
        where = f"{key} field {name}"
        f = _Fields(where, load_versioned(where, raw_value))
        if name == PAUSED_FIELD:
            paused = f.flag("on")
        elif name == SWITCHOVER_FIELD:
            switchover = Switchover(
                target=f.req_str("target"),
                drain_timeout=f.number("drain_timeout"),
                requested_at=f.number("requested_at"),
                request_id=f.req_str("id"),
            )
        else:
            kind, _, node = name.partition(":")
            if kind not in PER_NODE_FIELDS or not node:
                raise BusCorrupt(where, "unknown control field")
            if kind == "cordon":
                cordoned.add(node)
            elif kind == "outdated":
                outdated.add(node)
            else:
                failed[node] = f.number("until")
    return Controls(
        paused=paused,
        cordoned=frozenset(cordoned),
        failed=failed,
        switchover=switchover,
        outdated=frozenset(outdated),
    )


def encode_event(node: str, kind: str, message: str, time: float, fields: dict[str, Any]) -> str:
    return json.dumps(
        {
            "v": SCHEMA_VERSION,
            "node": node,
            "kind": kind,
            "message": message,
            "time": time,
            "fields": fields,
        },
        separators=(",", ":"),
        sort_keys=True,
        default=_redacting_default,
    )


def _redacting_default(value: object) -> object:
    # Secrets stringify as "***"; anything else that is not JSON becomes its str().
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def decode_event(entry_id: str, payload: bytes | str | None) -> dict[str, Any]:
    """One stream entry as a dict; a corrupt entry becomes kind "corrupt" (nothing is lost)."""
    where = f"event {entry_id}"
    try:
        if payload is None:
            raise BusCorrupt(where, "no payload")
        f = _Fields(where, load_versioned(where, payload))
        return {
            "id": entry_id,
            "time": f.number("time"),
            "node": f.text("node"),
            "kind": f.req_str("kind"),
            "message": f.text("message"),
            "fields": f.mapping("fields"),
        }
    except BusCorrupt as exc:
        return {
            "id": entry_id,
            "time": None,
            "node": "",
            "kind": "corrupt",
            "message": exc.reason,
            "fields": {},
        }
