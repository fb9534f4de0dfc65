"""The production drill's logic: when it may run, what each step saw, the report.

`failover-bot drill` (bot/commands/drill.py) moves the service to the standby with
a drain, proves the new primary with its test call, and moves it back. Everything
here is pure: the status objects it judges and the times it reports are arguments.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any


def refusals(status: dict[str, Any]) -> list[str]:
    """Why the drill must not start on this cluster (empty: it may)."""
    out: list[str] = []
    if status.get("paused"):
        out.append("the cluster is paused")
    if status.get("switchover"):
        out.append("a switchover is already pending")
    if status.get("redis_error"):
        out.append("Redis is unreachable")
    nodes = [n for n in status.get("nodes", []) if isinstance(n, dict)]
    if len(nodes) != 2:
        out.append(f"a drill needs a pair, found {len(nodes)} node(s)")
    primaries = [n for n in nodes if n.get("role") == "primary"]
    if len(primaries) != 1:
        out.append(f"{len(primaries)} primary node(s), not one")
    for n in nodes:
        who = n.get("id", "?")
        if n.get("stale") or n.get("freshness") == "missing":
            out.append(f"{who} is not reporting")
            continue
        if n.get("healthy") is not True:
            why = "; ".join(n.get("health_reasons") or []) or "not healthy"
            out.append(f"{who} is not healthy: {why}")
        if n.get("role") != "primary" and n.get("ready") is not True:
            why = "; ".join(n.get("ready_reasons") or []) or "not ready"
            out.append(f"standby {who} is not ready: {why}")
        if n.get("cordoned"):
            out.append(f"{who} is cordoned")
    return out


def serving(status: dict[str, Any]) -> str | None:
    """The node that serves: primary and healthy (None during a hand-over)."""
    for n in status.get("nodes", []):
        if isinstance(n, dict) and n.get("role") == "primary" and n.get("healthy") is True:
            return str(n.get("id"))
    return None


def answering(status: dict[str, Any]) -> str | None:
    """The node whose Asterisk takes calls as far as the status shows: a primary, or a
    primary still draining (role demoting), with Asterisk fully booted. The outage a
    drill reports is the time with none (a drain is not an outage)."""
    for n in status.get("nodes", []):
        if not isinstance(n, dict) or n.get("role") not in ("primary", "demoting"):
            continue
        if asterisk(status, str(n.get("id"))).get("fully_booted") is True:
            return str(n.get("id"))
    return None


def node(status: dict[str, Any], node_id: str) -> dict[str, Any]:
    for n in status.get("nodes", []):
        if isinstance(n, dict) and n.get("id") == node_id:
            return n
    return {}


def asterisk(status: dict[str, Any], node_id: str) -> dict[str, Any]:
    extra = node(status, node_id).get("extra") or {}
    found = extra.get("asterisk") if isinstance(extra, dict) else None
    return found if isinstance(found, dict) else {}


def test_call_since(status: dict[str, Any], node_id: str, since_wall: float) -> str | None:
    """The outcome of ``node_id``'s first test call reported after ``since_wall``."""
    ast = asterisk(status, node_id)
    last, at = ast.get("last_test_call"), ast.get("last_test_call_at")
    if isinstance(last, dict) and isinstance(at, (int, float)) and at >= since_wall:
        return str(last.get("outcome"))
    return None


_LEFT = re.compile(r"(\d+) channel\(s\) left after drain")


def channels_left(drain_message: str) -> int | None:
    """Channels still up when the drain ended, from its step event's message."""
    if "no calls left" in drain_message:
        return 0
    match = _LEFT.search(drain_message)
    return int(match[1]) if match else None


class OutageMeter:
    """Time without a serving node, as sampled (each sample: time, serving node)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._since: float | None = None

    def sample(self, now: float, server: str | None) -> None:
        if server is None and self._since is None:
            self._since = now
        elif server is not None and self._since is not None:
            self.total += now - self._since
            self._since = None

    def finish(self, now: float) -> float:
        self.sample(now, "end")
        return self.total


@dataclass
class Step:
    name: str
    source: str
    target: str
    ok: bool = False
    seconds: float = 0.0  # request to the target serving
    outage_seconds: float = 0.0  # no Asterisk answering (drill.answering), as polled
    calls_at_start: int | None = None  # channels up on the source when requested
    calls_left: int | None = None  # still up when the drain ended (then dropped)
    test_call: str | None = None  # the target's first test call as primary
    reason: str = ""

    @property
    def calls_drained(self) -> int | None:
        if self.calls_at_start is None:
            return None
        return self.calls_at_start - (self.calls_left or 0)


@dataclass
class Report:
    cluster: str
    started: float  # wall clock
    refused: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    serving_at_end: str | None = None
    original_primary: str | None = None

    @property
    def ok(self) -> bool:
        return (
            not self.refused
            and len(self.steps) == 2
            and all(s.ok for s in self.steps)
            and self.serving_at_end == self.original_primary
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "started": self.started,
            "ok": self.ok,
            "refused": self.refused,
            "original_primary": self.original_primary,
            "serving_at_end": self.serving_at_end,
            "steps": [{**asdict(s), "calls_drained": s.calls_drained} for s in self.steps],
        }

    def summary(self) -> str:
        if self.refused:
            return "drill refused: " + "; ".join(self.refused)
        verdict = "passed" if self.ok else "FAILED"
        parts = [f"{s.name} {'ok' if s.ok else 'FAILED'} in {s.seconds:.1f} s" for s in self.steps]
        return f"drill {verdict}: " + ", ".join(parts)

    def lines(self) -> list[str]:
        out = [self.summary()]
        for s in self.steps:
            calls = "-" if s.calls_at_start is None else str(s.calls_at_start)
            drained = "-" if s.calls_drained is None else str(s.calls_drained)
            out.append(
                f"  {s.name}: {'ok' if s.ok else 'FAILED'}, {s.seconds:.2f} s, outage seen "
                f"{s.outage_seconds:.2f} s, calls {calls} up / {drained} drained / "
                f"{s.calls_left if s.calls_left is not None else '-'} cut, test call "
                f"{s.test_call or 'none'}" + (f": {s.reason}" if s.reason else "")
            )
        if not self.refused:
            out.append(f"  serving at the end: {self.serving_at_end or 'nobody'}")
        return out

    def textfile(self) -> str:
        """The report as Prometheus text (node_exporter's textfile collector)."""
        c = f'cluster="{self.cluster}"'
        out = [
            "# HELP failoverbot_drill_last_run_timestamp_seconds When the last drill started.",
            "# TYPE failoverbot_drill_last_run_timestamp_seconds gauge",
            f"failoverbot_drill_last_run_timestamp_seconds{{{c}}} {self.started:.3f}",
            "# HELP failoverbot_drill_success 1 if the last drill passed, 0 if it failed "
            "or was refused.",
            "# TYPE failoverbot_drill_success gauge",
            f"failoverbot_drill_success{{{c}}} {1 if self.ok else 0}",
        ]
        series = (
            ("step_seconds", "Request to the target serving, per step.", "seconds"),
            ("outage_seconds", "Time with no Asterisk answering, per step.", "outage_seconds"),
            ("calls_drained", "Calls that ended during the drain, per step.", "calls_drained"),
        )
        for name, text, attr in series:
            out += [
                f"# HELP failoverbot_drill_{name} {text}",
                f"# TYPE failoverbot_drill_{name} gauge",
            ]
            for s in self.steps:
                value = getattr(s, attr)
                if value is not None:
                    out.append(f'failoverbot_drill_{name}{{{c},to="{s.target}"}} {value:g}')
        return "\n".join(out) + "\n"
