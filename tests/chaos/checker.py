"""The chaos run's independent checker (pure): what the outside world saw, judged.

Inputs are what the recorders and the DRBD stand-in kept (harness/checker.py's
``Observations``; the client's acknowledged writes; the data at each promotion),
and the nemesis's fault log. The report says, like Jepsen's: dual primaries (the
floating IP, Asterisk, DRBD Primary, and the spans routed to a node while another
held the lease), acknowledged writes lost, the longest and the total outage,
failovers per fault, and the seed. It fails on any dual primary or lost write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from harness.checker import (
    Interval,
    Observations,
    Violation,
    check_exclusive,
    check_follows,
    gaps,
    merge,
)
from tests.e2e.writes import Ack, LostWrite, Promotion, lost_writes

SAMPLE = 0.05  # sampling error of the VIP and pid recorders
SPAN_TOLERANCE = 5.0  # spans may lag the lease while the new primary routes them


@dataclass(frozen=True)
class FaultRecord:
    start: float
    end: float
    kind: str
    node: str | None


@dataclass
class ChaosReport:
    seed: int
    seconds: float
    faults: list[FaultRecord]
    start: float = 0.0
    dual_primaries: list[Violation] = field(default_factory=list)
    lost: list[LostWrite] = field(default_factory=list)
    acked: int = 0
    outages: list[tuple[float, float]] = field(default_factory=list)
    failovers: dict[str, int] = field(default_factory=dict)
    recovered: bool = True

    @property
    def ok(self) -> bool:
        return not self.dual_primaries and not self.lost

    def cause(self, t: float) -> str:
        """The fault active at ``t``, or else the latest one before it."""
        before = [f for f in self.faults if f.start <= t]
        if not before:
            return "no fault (start-up)"
        f = max(before, key=lambda f: f.start)
        where = f" on {f.node}" if f.node else ""
        return f"{f.kind}{where} at +{f.start - self.start:.1f} s"

    @property
    def longest_outage(self) -> float:
        return max((e - s for s, e in self.outages), default=0.0)

    @property
    def total_outage(self) -> float:
        return sum(e - s for s, e in self.outages)

    def table(self) -> str:
        counts: dict[str, int] = {}
        for f in self.faults:
            counts[f.kind] = counts.get(f.kind, 0) + 1
        rows = [
            ("seed", str(self.seed)),
            ("duration", f"{self.seconds:.0f} s"),
            ("faults injected", f"{len(self.faults)}"),
        ]
        rows += [(f"  {k}", f"{n} ({self.failovers.get(k, 0)} failovers)")
                 for k, n in sorted(counts.items())]  # fmt: skip
        rows += [
            ("failovers", f"{sum(self.failovers.values())}"),
            ("outages", f"{len(self.outages)}"),
            ("longest outage", f"{self.longest_outage:.1f} s"),
            ("total outage", f"{self.total_outage:.1f} s"),
            ("acknowledged writes", f"{self.acked}"),
            ("lost acknowledged writes", f"{len(self.lost)}"),
            ("dual primaries", f"{len(self.dual_primaries)}"),
            ("recovered at the end", "yes" if self.recovered else "NO"),
            ("verdict", "PASS" if self.ok else "FAIL"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"| {k:{width}} | {v:>16} |" for k, v in rows]
        detail = [f"  dual primary: {v}" for v in self.dual_primaries[:10]]
        for lo, hi in sorted(self.outages, key=lambda o: o[0] - o[1])[:5]:
            cause = self.cause(lo)
            detail.append(f"  outage at +{lo - self.start:.1f} s for {hi - lo:.1f} s after {cause}")
        detail += [f"  lost: {w}" for w in self.lost[:10]]
        return "\n".join(lines + detail)


def check_chaos(
    *,
    seed: int,
    window: tuple[float, float],
    obs: Observations,
    acks: Sequence[Ack],
    promotions: Sequence[Promotion],
    final_data: Mapping[str, frozenset[str]],
    faults: Sequence[FaultRecord],
    recovered: bool = True,
) -> ChaosReport:
    lo, hi = window
    report = ChaosReport(
        seed, hi - lo, list(faults), start=lo, acked=len(acks), recovered=recovered
    )
    for name, ivs, tol in (
        ("floating IP", obs.vip, SAMPLE),
        ("Asterisk", obs.asterisk_running, SAMPLE),
        ("DRBD Primary", obs.drbd_primary, 0.0),
    ):
        report.dual_primaries += check_exclusive(name, ivs, tolerance=tol).violations
    if obs.lease is not None:
        report.dual_primaries += check_follows(
            "R-Series spans", obs.routes, obs.lease, tolerance=SPAN_TOLERANCE, window=window
        ).violations
    report.lost = lost_writes(acks, promotions, final_data)
    primary = obs.primary()
    served = [iv for iv in merge(primary) if iv.end > lo]
    start = served[0].start if served else lo  # outages count once the cluster first served
    report.outages = gaps(primary, max(lo, start), hi)
    report.failovers = failovers_per_fault(primary, faults)
    return report


def failovers_per_fault(
    primary: Sequence[Interval], faults: Sequence[FaultRecord]
) -> dict[str, int]:
    """A failover: the working primary changes node. It is put down to the fault that
    was active, or else the latest one that started before it."""
    changes = []
    previous: str | None = None
    ordered = sorted(merge(primary), key=lambda i: i.start)
    for iv in ordered:
        if previous is not None and iv.node != previous:
            changes.append(iv.start)
        previous = iv.node
    result: dict[str, int] = {}
    ordered_faults = sorted(faults, key=lambda f: f.start)
    for t in changes:
        cause = "none"
        for f in ordered_faults:
            if f.start <= t:
                cause = f.kind
        result[cause] = result.get(cause, 0) + 1
    return result
