"""What a bot reports after a scenario: its /status and /metrics, read and checked exactly.

A scenario takes a ``Snapshot`` of the node that will take over before the fault and one
after; the checks compare the two, so each counter must have moved by exactly one with
the expected label, and every duration and timestamp must fall inside the scenario.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from prometheus_client.parser import text_string_to_metric_families

from bot.lab.cluster import Cluster, Node, pid_alive
from bot.metrics import FAILOVER_REASONS, SELF_FENCE_REASONS, TAKEOVER_OUTCOMES
from tests.helpers import wait_for_sync

RUN_ID = re.compile(r"^[0-9a-f]{40}$")
EVENTS_SHOWN = 50  # /status shows a node's last 50 events (bot/agent/reporter.py)


Series = tuple[str, tuple[tuple[str, str], ...]]
SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schema"


@dataclass(frozen=True)
class Snapshot:
    node: str
    status: dict[str, Any]
    metrics: dict[Series, float] = field(repr=False)
    wall: float
    mono: float

    def value(self, name: str, **labels: str) -> float:
        """One sample; a series the bot does not export is an error, never a zero."""
        key = (name, tuple(sorted(labels.items())))
        assert key in self.metrics, f"{self.node} exports no {name}{labels or ''}"
        return self.metrics[key]

    def delta(self, before: Snapshot, name: str, **labels: str) -> float:
        return self.value(name, **labels) - before.value(name, **labels)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.status.get("events", []) if e.get("kind") == kind]


def read_metrics(node: Node) -> dict[Series, float]:
    with urllib.request.urlopen(node.api + "/metrics", timeout=2) as resp:
        text = resp.read().decode()
    out: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def snapshot(node: Node) -> Snapshot:
    status = node.status()
    assert status is not None, f"{node.id} does not answer /status"
    return Snapshot(node.id, status, read_metrics(node), time.time(), time.monotonic())


def after_takeover(c: Cluster, node_id: str, epoch: int, within: float = 20.0) -> Snapshot:
    """The node's reports once its takeover at ``epoch`` is recorded."""
    node = c.nodes[node_id]

    def recorded() -> bool:
        status = node.status() or {}
        last = status.get("last_takeover") or {}
        return bool(last.get("epoch") == epoch and status.get("holder") == node_id)

    wait_for_sync(recorded, within, f"{node_id}'s takeover at epoch {epoch} in /status")
    # A switchover request is cleared once it is done (by a later cycle than the takeover).
    wait_for_sync(
        lambda: (node.status() or {}).get("switchover", 0) is None,
        within,
        "no switchover request pending",
    )
    return snapshot(node)


def assert_took_over(
    before: Snapshot, after: Snapshot, *, reason: str, epoch: int, lease_ttl: float
) -> None:
    """``after`` (the new primary) took over once, for ``reason``, at exactly ``epoch``."""
    st = after.status
    me = after.node
    # The lease: held by the new primary at the expected epoch, nobody named next.
    assert (st["holder"], st["epoch"]) == (me, epoch)
    assert 0 < st["lease_remaining_seconds"] <= lease_ttl, st["lease_remaining_seconds"]
    assert st["lease_next_node"] is None
    assert RUN_ID.match(str(st["redis_run_id"])), st["redis_run_id"]
    assert st["switchover"] is None
    assert st["settings_drift"] is False
    # The takeover report: one, succeeded, inside the scenario's window.
    last = st["last_takeover"]
    window = after.mono - before.mono
    assert (last["outcome"], last["epoch"], last["reason"]) == ("succeeded", epoch, "promoted"), (
        last
    )
    assert 0 < last["duration"] <= window, (last["duration"], window)
    assert before.wall <= last["at"] <= after.wall, (before.wall, last["at"], after.wall)
    assert last["steps"] and all(s["ok"] for s in last["steps"]), last["steps"]
    assert_events_match_schema(after)
    completed = [e for e in after.events("failover_completed") if e.get("epoch") == epoch]
    assert len(completed) == 1, after.events("failover_completed")
    event = completed[0]
    assert event["node"] == me and event["steps"] == last["steps"]
    assert before.wall <= event["time"] <= after.wall
    assert [e for e in after.events("failover_started") if f"epoch {epoch} " in e["message"]]
    # The counters: exactly one failover, one successful takeover.
    failovers = {
        r: after.delta(before, "failoverbot_failovers_total", reason=r) for r in FAILOVER_REASONS
    }
    assert sum(failovers.values()) == 1, failovers
    for o in TAKEOVER_OUTCOMES:
        want = 1 if o == "succeeded" else 0
        got = after.delta(before, "failoverbot_takeovers_total", outcome=o)
        assert got == want, f"takeovers_total{{outcome={o}}} moved by {got}, not {want}"
    assert after.delta(before, "failoverbot_takeover_duration_seconds_count") == 1
    took = after.delta(before, "failoverbot_takeover_duration_seconds_sum")
    assert abs(took - last["duration"]) < 1e-3 and 0 < took <= window, (took, last)
    assert_no_self_fence(before, after)
    assert after.value("failoverbot_lease_epoch") == epoch
    assert after.value("failoverbot_lease_holder", node=me) == 1
    assert after.value("failoverbot_role", node=me, role="primary") == 1
    assert after.value("failoverbot_config_drift") == 0
    counted = next(r for r, n in failovers.items() if n == 1)
    assert counted == reason, (
        f"failover counted as {counted!r}, not {reason!r}",
        [e["message"] for e in after.events("failover_started")],
    )


def self_fences(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """How often the node fenced itself between the snapshots, by reason; a reason outside
    the exported label set (a series that appears from nothing) is an error."""
    seen = {
        dict(labels)["reason"]
        for (name, labels) in after.metrics
        if name == "failoverbot_self_fences_total"
    }
    assert seen == set(SELF_FENCE_REASONS), f"{after.node}: self-fence reasons {sorted(seen)}"
    return {
        r: after.delta(before, "failoverbot_self_fences_total", reason=r)
        for r in SELF_FENCE_REASONS
    }


def assert_no_self_fence(before: Snapshot, after: Snapshot) -> None:
    moved = self_fences(before, after)
    assert not any(moved.values()), f"{after.node} fenced itself: {moved}"


def assert_rseries_agrees(c: Cluster, node_id: str, within: float = 10.0) -> None:
    """The appliance routes to the lease holder: the disagreement gauge reads 0."""
    node = c.nodes[node_id]
    wait_for_sync(
        lambda: read_metrics(node).get(("failoverbot_rseries_lease_disagreement", ())) == 0.0,
        within,
        f"{node_id}: R-Series and lease agree",
    )


def assert_events_match_schema(snap: Snapshot) -> None:
    """Every event the bot shows matches docs/schema/event.schema.json."""
    schema = json.loads((SCHEMAS / "event.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    events = snap.status.get("events", [])
    assert events, f"{snap.node} shows no events"
    bad = [(e, err.message[:200]) for e in events for err in validator.iter_errors(e)]
    assert not bad, bad[:3]


# ----------------------------------------------------------------------------- every scenario


def report_mismatches(c: Cluster, node: Node) -> list[str]:
    """What ``node`` reports that is not so: its /status against the schema, its role
    against its own role gauge, its lease epoch against its gauge, its own record's age
    against the staleness bound, and the services it says it runs against what the
    harness's recorders see on the machine (the address, the Asterisk pid, DRBD)."""
    status = node.status()
    if status is None:
        return [f"{node.id}: /status does not answer"]
    try:
        metrics = read_metrics(node)
    except OSError as exc:
        return [f"{node.id}: /metrics does not answer: {exc}"]
    out: list[str] = []
    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "status.schema.json")
                        .read_text())  # fmt: skip
    bad = [e.message[:160] for e in jsonschema.Draft202012Validator(schema).iter_errors(status)]
    out += [f"{node.id}: /status breaks its schema: {m}" for m in bad[:3]]
    me = next((n for n in status.get("nodes", []) if n.get("id") == node.id), None)
    if me is None:
        return [*out, f"{node.id}: /status shows no entry for itself"]
    role = me["role"]
    gauges = {
        dict(labels)["role"]: value
        for (name, labels), value in metrics.items()
        if name == "failoverbot_role" and dict(labels).get("node") == node.id
    }
    holder_gauge = metrics.get(("failoverbot_lease_holder", (("node", node.id),)))
    if role == "primary" and holder_gauge != 1:
        out.append(f"{node.id}: primary, but failoverbot_lease_holder is {holder_gauge}")
    if {r for r, v in gauges.items() if v == 1} != {role}:
        on = sorted(r for r, v in gauges.items() if v == 1)
        out.append(f"{node.id}: /status role {role!r}, failoverbot_role says {on}")
    # The epoch gauge is the node's own lease's (a standby exports 0): a primary's only. A
    # node that has just let its key go, or cannot read Redis, may still show the key's last
    # holder as itself until the key expires or Redis answers.
    epoch = status.get("epoch")
    gauge_epoch = metrics.get(("failoverbot_lease_epoch", ()))
    if role == "primary" and epoch is not None and gauge_epoch != epoch:
        out.append(f"{node.id}: /status epoch {epoch}, failoverbot_lease_epoch {gauge_epoch}")
    if me["freshness"] != "live" or (me["last_seen_seconds"] or 0) > status["stale_after_seconds"]:
        out.append(
            f"{node.id}: its own record is {me['freshness']}, "
            f"{me['last_seen_seconds']} s old (stale after {status['stale_after_seconds']} s)"
        )
    # The self-fence counter against the self_fence events this process showed (both
    # start from zero with the process; /status shows its last 50 events).
    fenced = sum(v for (name, _), v in metrics.items() if name == "failoverbot_self_fences_total")
    events = status.get("events", [])
    shown = sum(1 for e in events if e.get("kind") == "self_fence" and e.get("node") == node.id)
    if shown > fenced or (len(events) < EVENTS_SHOWN and shown != fenced):
        out.append(
            f"{node.id}: failoverbot_self_fences_total is {fenced:g}, "
            f"its events show {shown} self_fence"
        )
    said = (me.get("extra") or {}).get("services")
    seen = {
        "vip": _holds(getattr(c, "vip_sampler", None), node.id),
        "asterisk": _holds(getattr(c, "pid_sampler", None), node.id),
        "drbd_primary": _holds(getattr(c, "drbd_sampler", None), node.id),
    }
    for service, held in seen.items():
        if held is None:
            continue
        reported = (said or {}).get(service)
        if reported is not held:
            out.append(
                f"{node.id}: reports {service}={reported}, the recorders see {held} (role {role!r})"
            )
    return out


def _holds(sampler: Any, node: str) -> bool | None:
    """Whether the harness's sampler sees ``node`` hold its resource (None: no sampler)."""
    if sampler is None:
        return None
    return node in sampler.holders()


def assert_reports_true(c: Cluster, within: float = 15.0) -> None:
    """After a scenario: every node whose bot runs (the old primary too) reports exactly
    what is so, within ``within`` seconds (a report may trail a change by a cycle)."""
    last: dict[str, list[str]] = {}

    def agree() -> bool:
        for node in c.nodes.values():
            pid = node.bot_pid()
            if pid is None or not pid_alive(pid):
                last[node.id] = []
                continue
            last[node.id] = report_mismatches(c, node)
        return not any(last.values())

    try:
        wait_for_sync(agree, within, "every running node's reports to be true")
    except (TimeoutError, AssertionError):
        found = [m for ms in last.values() for m in ms]
        raise AssertionError(
            f"reports that are not so after {within:g} s:\n  " + "\n  ".join(found)
        ) from None
