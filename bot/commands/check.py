"""``failover-bot check``: a monitoring plugin in the Nagios/Icinga convention.

Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; one status line with perfdata
(``lease_remaining``, ``failover_seconds``, ``ami_ping_ms``). It reads the same
status object as ``status`` (Redis, or the bots' APIs when Redis is down) and
judges it purely (``judge``):

- CRITICAL: no node serves, or two nodes claim to be primary;
- WARNING: a standby is not ready, the cluster is paused, the primary is
  degraded or unhealthy, a node is stale or missing, or Redis is unreachable;
- UNKNOWN: nothing answers (or the check itself failed).
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from typing import Any

from bot.commands.base import CannotRun, add_config_arg, config_from_args
from bot.config import BUS_SECRETS

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
LABELS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
PREFIX = "FAILOVER-BOT"


@dataclass(frozen=True)
class CheckResult:
    code: int
    summary: str
    perfdata: tuple[tuple[str, float | None, str], ...] = ()

    def line(self) -> str:
        perf = " ".join(
            f"{name}={'U' if value is None else f'{value:g}'}{'' if value is None else unit};;;0"
            for name, value, unit in self.perfdata
        )
        text = f"{PREFIX} {LABELS[self.code]} - {self.summary}"
        return f"{text} | {perf}" if perf else text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="monitoring plugin: exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, with perfdata",
    )
    add_config_arg(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(_check(args))
    except Exception as exc:  # a plugin that fails says UNKNOWN, never CRITICAL
        result = CheckResult(UNKNOWN, f"check failed: {type(exc).__name__}: {exc}")
    print(result.line())
    return result.code


async def _check(args: argparse.Namespace) -> CheckResult:
    from bot.commands.cluster import gather_status

    try:
        cfg = config_from_args(args, secrets=BUS_SECRETS)
        obj = await gather_status(cfg)
    except CannotRun as exc:
        return CheckResult(UNKNOWN, str(exc).replace("\n", " "))
    return judge(obj)


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def judge(st: dict[str, Any]) -> CheckResult:
    """The plugin's verdict on one status object."""
    nodes = [n for n in st.get("nodes", []) if isinstance(n, dict)]
    serving = [n for n in nodes if n.get("role") == "primary"]
    claims = [n for n in nodes if n.get("reported_role") == "primary" and not n.get("stale")]
    primary = serving[0] if len(serving) == 1 else None
    extra = (primary or {}).get("extra") or {}
    takeover = st.get("last_takeover") or extra.get("last_takeover") or {}
    perf = (
        ("lease_remaining", _num(st.get("lease_remaining_seconds")), "s"),
        ("failover_seconds", _num(takeover.get("duration")), "s"),
        ("ami_ping_ms", _num((extra.get("asterisk") or {}).get("ami_ping_ms")), "ms"),
    )
    ids = ", ".join(f"{n.get('id')} {n.get('role')}" for n in nodes) or "no nodes"
    if len(claims) > 1 or len(serving) > 1:
        who = ", ".join(str(n.get("id")) for n in (claims if len(claims) > 1 else serving))
        return CheckResult(CRITICAL, f"two nodes claim to be primary: {who} ({ids})", perf)
    if primary is None:
        return CheckResult(CRITICAL, f"no node serves ({ids})", perf)
    warnings: list[str] = []
    if st.get("paused"):
        warnings.append("cluster paused")
    if extra.get("degraded"):
        warnings.append(f"{primary.get('id')} degraded")
    if primary.get("healthy") is False:
        why = "; ".join(primary.get("health_reasons") or []) or "no reason given"
        warnings.append(f"{primary.get('id')} unhealthy: {why}")
    for n in nodes:
        if n is primary:
            continue
        if n.get("stale"):
            seen = n.get("last_seen_seconds")
            age = f"last seen {seen:.0f} s ago" if isinstance(seen, (int, float)) else "never seen"
            warnings.append(f"{n.get('id')} {n.get('role')} ({age})")
        elif n.get("ready") is False:
            why = "; ".join(n.get("ready_reasons") or []) or "no reason given"
            warnings.append(f"standby {n.get('id')} not ready: {why}")
    if st.get("redis_error") or st.get("redis_ok") is False:
        warnings.append("Redis unreachable (answered by a node)")
    lease = _num(st.get("lease_remaining_seconds"))
    head = f"{primary.get('id')} primary, epoch {st.get('epoch')}" + (
        f", lease {lease:.1f} s left" if lease is not None else ""
    )
    if warnings:
        return CheckResult(WARNING, f"{head}; " + "; ".join(warnings), perf)
    return CheckResult(OK, f"{head}; {ids}", perf)
