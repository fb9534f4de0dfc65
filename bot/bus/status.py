"""The cluster status object (``status --json`` and ``GET /status``), built purely."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bot.bus.model import Controls, LeaseRead, NodeRecord


def build_status(
    *,
    cluster: str,
    node_ids: Iterable[str],
    lease: LeaseRead | None,
    records: dict[str, NodeRecord],
    controls: Controls | None,
    now_wall: float,
    now_clock: float,
    source: str = "redis",
    problems: Iterable[str] = (),
) -> dict[str, Any]:
    """One JSON-ready object; ``lease``/``controls`` None when they could not be read."""
    current = lease.lease if lease is not None else None
    holder = current.holder if current is not None and not current.released else None
    remaining: float | None = None
    if lease is not None and lease.pttl_ms is not None:
        remaining = max(0.0, lease.pttl_ms / 1000.0 - max(0.0, now_clock - lease.reply_at))
    epochs = [r.epoch for r in records.values() if r.epoch is not None]
    epoch = current.epoch if current is not None else max(epochs, default=None)
    ctl = controls or Controls()
    hashes = {r.settings_hash for r in records.values() if r.settings_hash}
    nodes = []
    for node_id in sorted({*node_ids, *records}):
        rec = records.get(node_id)
        nodes.append(
            {
                "id": node_id,
                "role": rec.role if rec else "unknown",
                "holder": node_id == holder,
                "healthy": rec.healthy if rec else None,
                "health_reasons": rec.health_reasons if rec else ["no record on the bus"],
                "ready": rec.ready if rec else None,
                "ready_reasons": rec.ready_reasons if rec else [],
                "cordoned": node_id in ctl.cordoned,
                "failed_until": ctl.failed.get(node_id),
                "outdated": node_id in ctl.outdated,
                "epoch": rec.epoch if rec else None,
                "version": rec.version if rec else None,
                "settings_hash": rec.settings_hash if rec else None,
                "last_seen_seconds": round(max(0.0, now_wall - rec.last_seen), 3) if rec else None,
                "extra": rec.extra if rec else {},
            }
        )
    sw = ctl.switchover
    return {
        "cluster": cluster,
        "source": source,
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
        "nodes": nodes,
        "problems": list(problems),
    }
