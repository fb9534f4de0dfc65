"""The status object's one definition: ``status --json``, ``GET /status``, the status
page's data and the SSE snapshots all have this shape.

The JSON Schema (``docs/status.schema.json``) is generated from these types by
``json_schema()``; a test checks the committed file matches, and producers are
validated against it. Regenerate with ``python -m bot.statuscontract > docs/status.schema.json``.
"""

import json
import sys
import types
import typing
from typing import Any, Literal, NotRequired, TypedDict, Union, get_args, get_origin

Freshness = Literal["live", "stale", "missing", "skewed"]


class SwitchoverStatus(TypedDict):
    target: str
    drain_timeout: float
    requested_at: float
    id: str


class LeaseView(TypedDict, total=False):
    """How a node saw the lease when it wrote its record."""

    holder: str | None
    epoch: int | None
    remaining: float | None


class TakeoverStep(TypedDict):
    name: str
    duration: float
    ok: bool
    detail: str


class Takeover(TypedDict):
    outcome: Literal["succeeded", "failed", "degraded", "aborted"]
    epoch: int
    duration: float
    reason: str
    steps: list[TakeoverStep]
    at: float


class SpanStatus(TypedDict):
    kind: str
    since: float | None


class RSeriesStatus(TypedDict):
    connected: bool
    active: str | None
    mode: str | None
    host: str
    heartbeat: NotRequired[bool]  # this node is sending heartbeats


class DrbdResource(TypedDict):
    name: str
    role: str
    disk: str
    connection: str


class Services(TypedDict):
    vip: bool | None
    asterisk: bool | None
    drbd_primary: bool | None


class AsteriskStatus(TypedDict):
    expected: bool
    ami_up: bool
    fully_booted: bool
    ami_ping_ms: float | None
    ari_ok: bool | None
    started_seconds_ago: float | None
    active_calls: int | None
    test_call_streak: int
    last_test_call: dict[str, Any] | None
    last_test_call_at: float | None
    notes: list[str]


class NodeExtra(TypedDict, total=False):
    """What a node adds about itself (open: a newer node may add more)."""

    spans: dict[str, SpanStatus]
    rseries: RSeriesStatus | None
    last_takeover: Takeover | None
    services: Services
    drbd: list[DrbdResource]
    degraded: bool
    asterisk: AsteriskStatus


class NodeStatus(TypedDict):
    id: str
    role: str  # shown role (bot.statusview): only the lease holder is ever "primary"
    reported_role: str | None  # what the node's record says; None without a record
    freshness: Freshness
    stale: bool
    note: str | None
    holder: bool
    healthy: bool | None
    health_reasons: list[str]
    ready: bool | None
    ready_reasons: list[str]
    cordoned: bool
    failed_until: float | None
    outdated: bool
    epoch: int | None
    version: str | None
    settings_hash: str | None
    last_seen_seconds: float | None
    last_seen_at: float | None  # the writer's wall clock
    lease_view: LeaseView
    extra: NodeExtra


class Event(TypedDict, total=False):
    """An event as the hub and the bus carry it (open: fields vary by kind)."""

    id: str
    node: str
    kind: str
    message: str
    time: float
    fields: dict[str, Any]


class FenceState(TypedDict):
    """A fence that has not completed yet (it is retried until it does)."""

    incomplete_for_seconds: float
    failing: str


class Status(TypedDict):
    cluster: str
    source: str
    generated_at: float  # wall clock of the answer
    stale_after_seconds: float
    redis_ok: bool
    holder: str | None
    epoch: int | None
    lease_remaining_seconds: float | None
    lease_next_node: str | None
    redis_run_id: str | None
    paused: bool | None
    switchover: SwitchoverStatus | None
    settings_drift: bool
    serving: list[str]  # nodes shown as primary (at most the lease holder)
    nodes: list[NodeStatus]
    problems: list[str]
    # Added by a running agent (GET /status), absent when read from Redis by the CLI:
    reported_by: NotRequired[str]
    last_takeover: NotRequired[Takeover | None]
    events: NotRequired[list[Event]]
    rseries_active: NotRequired[str | None]
    features: NotRequired[dict[str, bool]]
    fence: NotRequired[FenceState | None]
    # Added by the CLI when Redis was unreachable and a peer answered:
    redis_error: NotRequired[str]


OPEN = {NodeExtra, Event, LeaseView}  # objects that may carry more keys than listed

SCHEMA_ID = "https://failover-bot.invalid/status.schema.json"


def json_schema() -> dict[str, Any]:
    defs: dict[str, Any] = {}
    root = _schema(Status, defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "failover-bot status",
        **root,
        "$defs": dict(sorted(defs.items())),
    }


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def _schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    if tp is Any:
        return {}
    if tp is type(None):
        return {"type": "null"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    origin = get_origin(tp)
    if origin is Literal:
        return {"enum": list(get_args(tp))}
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema(a, defs) for a in get_args(tp)]}
    if origin is list:
        (item,) = get_args(tp)
        return {"type": "array", "items": _schema(item, defs)}
    if origin is dict:
        _, value = get_args(tp)
        return {"type": "object", "additionalProperties": _schema(value, defs)}
    if _is_typeddict(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            hints = typing.get_type_hints(tp)
            props = {}
            for key, hint in hints.items():
                if get_origin(hint) is NotRequired:
                    (hint,) = get_args(hint)
                props[key] = _schema(hint, defs)
            body: dict[str, Any] = {
                "type": "object",
                "properties": props,
                "required": sorted(tp.__required_keys__),
                "additionalProperties": tp in OPEN,
            }
            if tp.__doc__:
                body["description"] = " ".join(tp.__doc__.split())
            defs[name] = body
        return {"$ref": f"#/$defs/{name}"}
    raise TypeError(f"no JSON Schema for {tp!r}")


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
