"""Control request bodies: bytes -> a validated request, or a reason (no I/O)."""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

DEFAULT_DRAIN_TIMEOUT = 30.0
MAX_DRAIN_TIMEOUT = 3600.0


class BadRequest(ValueError):
    """The body cannot be used; the message is the reason shown to the client."""


@dataclass(frozen=True)
class SwitchoverRequest:
    to: str
    drain_timeout: float


@dataclass(frozen=True)
class NodeRequest:
    node: str


def _object(body: bytes, allow_empty: bool) -> dict[str, Any]:
    if not body.strip():
        if allow_empty:
            return {}
        raise BadRequest("a JSON object body is required")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _no_extra(data: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise BadRequest(f"unknown fields: {', '.join(extra)}")


def _node(data: dict[str, Any], key: str, nodes: Collection[str]) -> str:
    value = data.get(key)
    if value is None:
        raise BadRequest(f"missing field {key!r}")
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} must be a node id (a non-empty string)")
    if nodes and value not in nodes:
        raise BadRequest(f"{key!r}: unknown node {value[:64]!r} (nodes: {', '.join(nodes)})")
    return value


def parse_switchover(body: bytes, nodes: Collection[str]) -> SwitchoverRequest:
    data = _object(body, allow_empty=False)
    _no_extra(data, {"to", "drain_timeout"})
    to = _node(data, "to", nodes)
    drain = data.get("drain_timeout", DEFAULT_DRAIN_TIMEOUT)
    if isinstance(drain, bool) or not isinstance(drain, (int, float)):
        raise BadRequest("'drain_timeout' must be a number of seconds")
    if not math.isfinite(drain) or not 0 <= drain <= MAX_DRAIN_TIMEOUT:
        raise BadRequest(f"'drain_timeout' must be between 0 and {MAX_DRAIN_TIMEOUT:g} seconds")
    return SwitchoverRequest(to, float(drain))


def parse_node(body: bytes, nodes: Collection[str]) -> NodeRequest:
    data = _object(body, allow_empty=False)
    _no_extra(data, {"node"})
    return NodeRequest(_node(data, "node", nodes))


def parse_empty(body: bytes) -> None:
    """pause / resume take no fields: an empty body or {}."""
    _no_extra(_object(body, allow_empty=True), set())
