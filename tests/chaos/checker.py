"""The chaos run's independent checker (pure): what the outside world saw, judged.

Inputs are what the recorders and the DRBD stand-in kept (harness/checker.py's
``Observations``; the client's acknowledged writes; the data at each promotion),
and the nemesis's fault log. The report says, like Jepsen's: dual primaries (the
floating IP, Asterisk, DRBD Primary, and the spans routed to a node while another
held the lease), acknowledged writes lost, the longest and the total outage,
failovers per fault, and the seed.

It fails on any dual primary or lost write, and also when the run proves nothing
or the cluster did not serve: fewer faults applied than drawn (each one that could
not be applied is listed with why), none at all, no acknowledged write, a recorder
that erred or went blind for longer than its tolerance, no working primary at the
end, or an outage beyond its bound after a fault healed (liveness: once the fault
is gone both nodes are healthy, ready and not paused, so someone must serve within
``lease_ttl + 2 s`` plus the takeover's budget, plus what the fault's kind adds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from harness.checker import (
    Interval,
    Observations,
    RecorderHealth,
    Violation,
    check_exclusive,
    check_follows,
    gaps,
    merge,
)
from tests.e2e.writes import Ack, LostWrite, Promotion, lost_writes

SAMPLE = 0.05  # least sampling error of the VIP and pid recorders (their real gap if more)
SPAN_TOLERANCE = 5.0  # spans may lag the lease while the new primary routes them


@dataclass(frozen=True)
class Bounds:
    """How long the cluster may be without a working primary once a fault has healed."""

    lease_ttl: float = 3.0
    # The takeover's own time in the lab: the promotion may wait for the old primary's
    # fence steps (bot.actions.takeover.PEER_DEMOTION_MIN_WAIT, 4.5 s), then the VIP,
    # the Asterisk's boot (0.5 s) and the first test call (1 s interval).
    takeover: float = 7.0
    # What a fault's kind adds: a bot started again (supervisor, start-up checks), a
    # switchover's drain, a replication link's resync before the standby is ready.
    extra: Mapping[str, float] = field(
        default_factory=lambda: {
            "bot_kill": 3.0,
            "bot_restart_paused": 3.0,
            "host_death": 3.0,
            "replication_cut": 3.0,
            # A switchover may drain calls (the lab's requests name no drain time, so
            # the API's default applies) and its target may fail; then the request ends
            # and the old primary serves again.
            "switchover": 5.0,
            "switchover_failing": 5.0,
            "vip_del_fail": 5.0,
            "drbd_secondary_fail": 5.0,
        }
    )

    def bound(self, kind: str) -> float:
        return self.lease_ttl + 2.0 + self.takeover + self.extra.get(kind, 0.0)


@dataclass(frozen=True)
class Breach:
    """No working primary from ``start`` (the heal, or the outage's start if later) to
    ``end``, longer than ``bound`` allows after the fault named by ``cause``."""

    start: float
    end: float
    bound: float
    cause: str
    began: str = ""  # when the outage began earlier: the fault it began after

    def describe(self, t0: float) -> str:
        text = (
            f"no working primary for {self.end - self.start:.1f} s from +{self.start - t0:.1f} s "
            f"(bound {self.bound:.1f} s) after {self.cause} healed"
        )
        return f"{text}; the outage began {self.began}" if self.began else text


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
    drawn: int = 0  # faults the schedule drew (each applied one is in ``faults``)
    not_applied: list[tuple[str, str]] = field(default_factory=list)  # (fault, why)
    dual_primaries: list[Violation] = field(default_factory=list)
    lost: list[LostWrite] = field(default_factory=list)
    acked: int = 0
    outages: list[tuple[float, float]] = field(default_factory=list)
    breaches: list[Breach] = field(default_factory=list)
    recorders: list[str] = field(default_factory=list)  # recorder problems
    failovers: dict[str, int] = field(default_factory=dict)
    recovered: bool = True

    def problems(self) -> list[str]:
        """Every reason for a FAIL; empty means PASS."""
        out = [f"dual primary: {v}" for v in self.dual_primaries]
        out += [f"lost acknowledged write: {w}" for w in self.lost]
        if not self.faults:
            out.append("no fault was applied: the run proves nothing")
        if len(self.faults) < self.drawn:
            why = "; ".join(f"{f}: {reason}" for f, reason in self.not_applied) or "unknown"
            out.append(f"{len(self.faults)} of {self.drawn} faults applied (not applied: {why})")
        if self.acked == 0:
            out.append("no write was acknowledged: nothing was shown to be kept")
        out += [f"liveness: {b.describe(self.start)}" for b in self.breaches]
        out += [f"recorder: {r}" for r in self.recorders]
        if not self.recovered:
            out.append("no working primary at the end: the cluster did not recover")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()

    def cause(self, t: float) -> str:
        """The fault active at ``t``, or else the latest one before it."""
        before = [f for f in self.faults if f.start <= t]
        if not before:
            return "no fault (start-up)"
        return describe_fault(max(before, key=lambda f: f.start), self.start)

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
            ("faults drawn", f"{self.drawn}"),
            ("faults injected", f"{len(self.faults)}"),
        ]
        rows += [(f"  {k}", f"{n} ({self.failovers.get(k, 0)} failovers)")
                 for k, n in sorted(counts.items())]  # fmt: skip
        rows += [
            ("failovers", f"{sum(self.failovers.values())}"),
            ("outages", f"{len(self.outages)}"),
            ("longest outage", f"{self.longest_outage:.1f} s"),
            ("total outage", f"{self.total_outage:.1f} s"),
            ("outages beyond bound", f"{len(self.breaches)}"),
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
        detail += [f"  FAIL: {p}" for p in self.problems() if not p.startswith(("dual", "lost"))]
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
    drawn: int | None = None,
    not_applied: Sequence[tuple[str, str]] = (),
    bounds: Bounds | None = None,
    client_problems: Sequence[str] = (),
) -> ChaosReport:
    lo, hi = window
    report = ChaosReport(
        seed,
        hi - lo,
        list(faults),
        start=lo,
        drawn=len(faults) + len(not_applied) if drawn is None else drawn,
        not_applied=list(not_applied),
        acked=len(acks),
        recovered=recovered,
    )
    report.recorders = [f"{h.name}: {p}" for h in obs.recorders for p in RecorderHealth.problems(h)]
    report.recorders += list(client_problems)  # e.g. a writer that stopped writing
    for name, ivs, tol in (
        ("floating IP", obs.vip, obs.tolerance("vip", SAMPLE)),
        ("Asterisk", obs.asterisk_running, obs.tolerance("asterisk_running", SAMPLE)),
        ("DRBD Primary", obs.drbd_primary, 0.0),
    ):
        report.dual_primaries += check_exclusive(name, ivs, tolerance=tol).violations
    if obs.lease is not None:
        report.dual_primaries += check_follows(
            "R-Series spans", obs.routes, obs.lease, tolerance=SPAN_TOLERANCE, window=window
        ).violations
    report.lost = lost_writes(acks, promotions, final_data)
    primary = obs.primary()
    # Recovered: what the bots say is not enough, the recorders must see a working primary.
    report.recovered = recovered and any(iv.end >= hi for iv in merge(primary))
    served = [iv for iv in merge(primary) if iv.end > lo]
    start = served[0].start if served else lo  # outages count once the cluster first served
    report.outages = gaps(primary, max(lo, start), hi)
    report.breaches = liveness_breaches(primary, faults, hi, bounds or Bounds(), t0=lo)
    report.failovers = failovers_per_fault(primary, faults)
    return report


def describe_fault(f: FaultRecord, t0: float) -> str:
    where = f" on {f.node}" if f.node else ""
    return f"{f.kind}{where} at +{f.start - t0:.1f} s"


def liveness_breaches(
    primary: Sequence[Interval],
    faults: Sequence[FaultRecord],
    end: float,
    bounds: Bounds,
    *,
    t0: float = 0.0,
) -> list[Breach]:
    """After each fault heals, and until the next one starts (or the run ends), every
    stretch without a working primary must end within the fault's bound, counted from
    the heal (or from the stretch's start when it began later)."""
    ordered = sorted(faults, key=lambda f: f.start)
    lo = min((f.start for f in ordered), default=end)
    whole = gaps(primary, lo, end)  # to say when a breached outage really began
    out = []
    for i, f in enumerate(ordered):
        judged_until = ordered[i + 1].start if i + 1 < len(ordered) else end
        if judged_until <= f.end:
            continue
        bound = bounds.bound(f.kind)
        for g0, g1 in gaps(primary, f.end, judged_until):
            if g1 - g0 > bound:
                began = ""
                first = next((w0 for w0, w1 in whole if w0 < g0 < w1 or w0 == g0), g0)
                if first < g0:
                    before = [x for x in ordered if x.start <= first]
                    at = f"at +{first - t0:.1f} s"
                    began = f"{at}, after {describe_fault(before[-1], t0)}" if before else at
                out.append(Breach(g0, g1, bound, describe_fault(f, t0), began))
    return out


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
