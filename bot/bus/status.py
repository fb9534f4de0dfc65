"""The cluster status object (``status --json`` and ``GET /status``), built purely."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, cast

from bot.bus.model import Controls, LeaseRead, NodeRecord
from bot.statuscontract import LeaseView, NodeExtra, NodeStatus, Status
from bot.statusview import CLAIMS_PRIMARY, PRIMARY, view_node


def build_status(
    *,
    cluster: str,
    node_ids: Iterable[str],
    lease: LeaseRead | None,
    records: dict[str, NodeRecord],
    controls: Controls | None,
    now_wall: float,
    now_clock: float,
    stale_after: float,
    source: str = "redis",
    redis_ok: bool = True,
    seen: Mapping[str, tuple[float, str | None]] | None = None,
    local: NodeRecord | None = None,
    problems: Iterable[str] = (),
) -> Status:
    """One JSON-ready object; ``lease``/``controls`` None when they could not be read.

    ``seen``: the last-seen wall times (and roles) that outlive expired records; ``local``: the
    answering node's own live record (written now). Roles and ages follow
    ``bot.statusview``.
    """
    current = lease.lease if lease is not None else None
    holder = current.holder if current is not None and not current.released else None
    remaining: float | None = None
    if lease is not None and lease.pttl_ms is not None:
        remaining = max(0.0, lease.pttl_ms / 1000.0 - max(0.0, now_clock - lease.reply_at))
    records = dict(records)
    if local is not None:
        records[local.id] = replace(local, last_seen=now_wall)
    epochs = [r.epoch for r in records.values() if r.epoch is not None]
    epoch = current.epoch if current is not None else max(epochs, default=None)
    ctl = controls or Controls()
    hashes = {r.settings_hash for r in records.values() if r.settings_hash}
    seen = seen or {}
    nodes: list[NodeStatus] = []
    for node_id in sorted({*node_ids, *records}):
        rec = records.get(node_id)
        last_written, last_role = seen.get(node_id, (None, None))
        written = rec.last_seen if rec is not None and rec.last_seen > 0 else last_written
        view = view_node(
            node_id=node_id,
            reported_role=rec.role if rec else None,
            last_role=rec.role if rec else last_role,
            written_at=written,
            holder=holder,
            lease_epoch=current.epoch if current is not None else None,
            writer_lease=rec.lease_view if rec else None,
            now_wall=now_wall,
            stale_after=stale_after,
            redis_ok=redis_ok,
        )
        # A stale record's health and readiness are old news: shown as unknown.
        live = rec is not None and not view.stale
        lease_view: LeaseView = {}
        if rec is not None:
            for key in ("holder", "epoch", "remaining"):
                if key in rec.lease_view:
                    lease_view[key] = rec.lease_view[key]
        nodes.append(
            {
                "id": node_id,
                "role": view.role,
                "reported_role": rec.role if rec else None,
                "freshness": view.freshness,
                "stale": view.stale,
                "note": view.note,
                "holder": node_id == holder,
                "healthy": rec.healthy if rec and live else None,
                "health_reasons": list(rec.health_reasons)
                if rec and live
                else [view.note or "no record on the bus"],
                "ready": rec.ready if rec and live else None,
                "ready_reasons": list(rec.ready_reasons) if rec and live else [],
                "cordoned": node_id in ctl.cordoned,
                "failed_until": ctl.failed.get(node_id),
                "outdated": node_id in ctl.outdated,
                "epoch": rec.epoch if rec else None,
                "version": rec.version if rec else None,
                "settings_hash": rec.settings_hash if rec else None,
                "last_seen_seconds": None
                if view.last_seen_seconds is None
                else round(view.last_seen_seconds, 3),
                "last_seen_at": written,
                "lease_view": lease_view,
                "extra": cast(NodeExtra, rec.extra if rec else {}),
            }
        )
    sw = ctl.switchover
    return {
        "cluster": cluster,
        "source": source,
        "generated_at": now_wall,
        "stale_after_seconds": stale_after,
        "redis_ok": redis_ok,
        "holder": holder,
        "epoch": epoch,
        "lease_remaining_seconds": None if remaining is None else round(remaining, 3),
        "lease_next_node": current.next_node if current is not None else None,
        "redis_run_id": lease.run_id if lease is not None else None,
        "paused": bool(ctl.paused) if controls is not None else None,
        "switchover": None
        if sw is None
        else {
            "target": sw.target,
            "drain_timeout": sw.drain_timeout,
            "requested_at": sw.requested_at,
            "id": sw.request_id,
        },
        "settings_drift": len(hashes) > 1,
        "serving": [n["id"] for n in nodes if n["role"] == PRIMARY],
        "nodes": nodes,
        "problems": list(problems),
    }


def merge_answers(answers: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The status when Redis is down, built from the nodes' own answers (``GET /status``):
    each answering node speaks for itself (its own entry is live); a node is shown as
    primary only where its own answer says it holds the lease (two such answers show
    two primaries: that is what an operator must see)."""
    base = dict(answers[0][1])
    own: dict[str, dict[str, Any]] = {}
    holders: list[tuple[str, dict[str, Any]]] = []
    for _, answer in answers:
        me = answer.get("reported_by")
        for node in answer.get("nodes", []):
            if isinstance(node, dict) and node.get("id") == me and isinstance(me, str):
                own[me] = node
        if isinstance(me, str) and answer.get("holder") == me:
            holders.append((me, answer))
    if holders:
        _, answer = holders[0]
        for key in ("holder", "epoch", "lease_remaining_seconds", "lease_next_node"):
            base[key] = answer.get(key)
    holder_ids = {h for h, _ in holders}
    nodes = []
    for node in base.get("nodes", []):
        entry = dict(own.get(str(node.get("id")), node)) if isinstance(node, dict) else node
        if isinstance(entry, dict):
            if entry.get("role") == PRIMARY and entry.get("id") not in holder_ids:
                entry["role"] = CLAIMS_PRIMARY
            entry["holder"] = entry.get("id") in holder_ids
        nodes.append(entry)
    base["nodes"] = nodes
    base["serving"] = [n["id"] for n in nodes if isinstance(n, dict) and n.get("role") == PRIMARY]
    names = [node for node, _ in answers]
    base["source"] = ("peer " if len(names) == 1 else "peers ") + ", ".join(names)
    return base
