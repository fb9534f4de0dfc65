"""What the operator is shown of each node: freshness and role, decided purely.

One rule for ``status``, ``GET /status``, the status page and ``check``:

- a node record says when it was written (the writer's wall clock) and how the
  writer saw the lease; it is stale once older than ``lease_ttl +
  renew_interval`` (a live node rewrites it every renewal interval);
- a stale or missing record shows the node as ``down`` (``down (was primary)``
  if it said primary), or as ``unknown`` when Redis could not be read: then
  the answer comes from a peer whose copy may simply be old;
- only the lease holder is ever shown as ``primary``; a fresh record that says
  primary without the lease shows ``claims primary``;
- a record written in the future (the writer's clock is ahead by more than
  the tolerance) has no age we can trust: its last-seen is unknown, and it
  shows its role only when its writer's lease view matches the current lease.

Time is an argument (``now_wall``): the tests control it.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Freshness = Literal["live", "stale", "missing", "skewed"]

PRIMARY = "primary"
DOWN = "down"
DOWN_WAS_PRIMARY = "down (was primary)"
UNKNOWN = "unknown"
UNKNOWN_WAS_PRIMARY = "unknown (was primary)"
CLAIMS_PRIMARY = "claims primary"
SKEW_TOLERANCE = 1.0  # seconds a record may be "from the future" (clock skew) and still count


@dataclass(frozen=True)
class NodeView:
    role: str  # what is shown
    freshness: Freshness
    last_seen_seconds: float | None  # None: never seen, or no age can be trusted
    note: str | None = None  # why the role is not the record's own

    @property
    def stale(self) -> bool:
        return self.freshness != "live"


def view_node(
    *,
    node_id: str,
    reported_role: str | None,
    written_at: float | None,
    last_role: str | None = None,
    holder: str | None,
    lease_epoch: int | None,
    writer_lease: dict[str, Any] | None,
    now_wall: float,
    stale_after: float,
    redis_ok: bool,
) -> NodeView:
    """The shown role and freshness of one node.

    ``reported_role`` is None when there is no record (it expired, or never was);
    ``written_at`` and ``last_role`` may still be known then (they outlive the record).
    """
    age = None if written_at is None or written_at <= 0 else now_wall - written_at
    if age is None:
        return NodeView(DOWN if redis_ok else UNKNOWN, "missing", None, "never seen")
    if age < -SKEW_TOLERANCE:
        note = f"record written {-age:.1f} s in the future: clock skew between the nodes"
        lease_agrees = (
            writer_lease is not None
            and writer_lease.get("holder") == holder
            and writer_lease.get("epoch") == lease_epoch
            and lease_epoch is not None
        )
        if reported_role is not None and lease_agrees:
            return NodeView(_only_holder(node_id, reported_role, holder), "skewed", None, note)
        return NodeView(UNKNOWN, "skewed", None, note)
    age = max(0.0, age)
    if reported_role is None or age > stale_after:
        was_primary = (reported_role or last_role) == PRIMARY
        if redis_ok:
            role = DOWN_WAS_PRIMARY if was_primary else DOWN
        else:
            role = UNKNOWN_WAS_PRIMARY if was_primary else UNKNOWN
        note = f"no record for {age:.1f} s (stale after {stale_after:g} s)"
        return NodeView(role, "stale" if reported_role is not None else "missing", age, note)
    role = _only_holder(node_id, reported_role, holder)
    claim = None if role == reported_role else "says primary but does not hold the lease"
    return NodeView(role, "live", age, claim)


def _only_holder(node_id: str, reported_role: str, holder: str | None) -> str:
    if reported_role == PRIMARY and holder != node_id:
        return CLAIMS_PRIMARY
    return reported_role


# ------------------------------------------------------------------ the page without script

PAGE_TABLE_MARK = b"<!--STATUS-TABLE-->"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return html.escape(str(value))


def status_table_html(st: Mapping[str, Any]) -> str:
    """The status as a plain HTML table: what the page shows without JavaScript."""
    nodes = [n for n in st.get("nodes", []) if isinstance(n, Mapping)]
    lease = st.get("lease_remaining_seconds")
    head = (
        f"<p>cluster {_cell(st.get('cluster'))}: holder {_cell(st.get('holder') or 'none')}, "
        f"epoch {_cell(st.get('epoch'))}, lease "
        f"{'-' if not isinstance(lease, (int, float)) else f'{lease:.1f} s'} left "
        f"(as of the page load), paused {_cell(st.get('paused'))}</p>"
    )
    banners = []
    if not any(n.get("role") == PRIMARY for n in nodes):
        banners.append("no node is serving")
    if st.get("paused"):
        banners.append("cluster paused: no automatic action")
    banners += [f"problem: {p}" for p in st.get("problems", []) if isinstance(p, str)]
    rows = []
    for n in nodes:
        seen = n.get("last_seen_seconds")
        seen_text = "never" if seen is None else f"{seen:.1f} s ago"
        if n.get("stale"):
            seen_text += " (stale)"
        reasons = [*n.get("health_reasons", []), *n.get("ready_reasons", [])]
        rows.append(
            f'<tr data-node="{_cell(n.get("id"))}" data-role="{_cell(n.get("role"))}">'
            f"<td>{_cell(n.get('id'))}</td><td>{_cell(n.get('role'))}</td>"
            f"<td>{_cell(n.get('healthy'))}</td><td>{_cell(n.get('ready'))}</td>"
            f"<td>{html.escape(seen_text)}</td>"
            f"<td>{'; '.join(_cell(r) for r in reasons)}</td></tr>"
        )
    return (
        head
        + "".join(f'<p class="banner">{_cell(b)}</p>' for b in banners)
        + '<table id="plain-nodes"><thead><tr><th>node</th><th>role</th><th>healthy</th>'
        "<th>ready</th><th>last seen</th><th>reasons</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )
