"""The independent checker: judges what the outside world saw, never what a bot reported.

Every input is a list of per-node intervals ``[start, end)`` on one clock, the
system-wide ``CLOCK_MONOTONIC`` (``time.monotonic()`` in any process of this
machine). An open interval ends at ``math.inf``; the checker clips everything to
the window it is asked about.

Safety: two nodes must never hold an exclusive resource (floating IP, running
Asterisk, DRBD Primary) at the same time. Sampled histories carry an error of
up to one sampling period, so callers pass that as ``tolerance``; synthetic and
logged histories use 0. The R-Series relays route to one host by construction,
so for them the rule is that the spans never stayed on a node while another
node held the lease for longer than a stated tolerance.

Liveness: within a window the cluster must not be without a working primary
(floating IP and a fully booted Asterisk on the same node) for longer than the
scenario allows.

Soundness of the witnesses: a sampled history is only as good as its sampler. A
sampler that failed to probe, or whose real gap between two samples (up to the
moment of the verdict: one that stopped sampling has an ever-growing gap) went
above its tolerance, could have missed an overlap shorter than that gap; every
verdict fails then. The overlap tolerance of a sampled resource is the gap its
sampler really had, never a number that held on a quiet machine.

Pure functions only: no files, no clock, no sockets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Interval:
    """``node`` held something from ``start`` (inclusive) to ``end`` (exclusive)."""

    start: float
    end: float
    node: str

    def __post_init__(self) -> None:
        if math.isnan(self.start) or math.isnan(self.end):
            raise ValueError(f"interval with NaN: {self!r}")
        if self.end < self.start:
            raise ValueError(f"interval ends before it starts: {self!r}")

    @property
    def duration(self) -> float:
        return self.end - self.start

    def clip(self, lo: float, hi: float) -> Interval | None:
        start, end = max(self.start, lo), min(self.end, hi)
        return Interval(start, end, self.node) if end > start else None


@dataclass(frozen=True)
class Violation:
    kind: str  # "overlap" | "outage" | "follow"
    resource: str
    nodes: tuple[str, ...]
    start: float
    end: float
    detail: str = ""

    @property
    def duration(self) -> float:
        return self.end - self.start

    def __str__(self) -> str:
        who = "+".join(self.nodes) if self.nodes else "nobody"
        text = (
            f"{self.kind} of {self.resource}: {who} for {self.duration * 1000:.1f} ms "
            f"[{self.start:.3f}, {self.end:.3f})"
        )
        return f"{text}: {self.detail}" if self.detail else text


@dataclass
class Verdict:
    violations: list[Violation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def extend(self, other: Verdict) -> None:
        self.violations.extend(other.violations)
        self.notes.extend(other.notes)

    def report(self) -> str:
        lines = [f"{len(self.violations)} violation(s)"]
        lines += [f"  {v}" for v in self.violations]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def assert_ok(self) -> None:
        if not self.ok:
            raise AssertionError(self.report())


def by_node(intervals: Iterable[Interval]) -> dict[str, list[Interval]]:
    out: dict[str, list[Interval]] = {}
    for iv in intervals:
        out.setdefault(iv.node, []).append(iv)
    return out


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Union per node: overlapping or touching intervals of one node become one."""
    out: list[Interval] = []
    for node, ivs in sorted(by_node(intervals).items()):
        current: Interval | None = None
        for iv in sorted(ivs):
            if iv.end == iv.start:
                continue
            if current is None:
                current = iv
            elif iv.start <= current.end:
                current = Interval(current.start, max(current.end, iv.end), node)
            else:
                out.append(current)
                current = iv
        if current is not None:
            out.append(current)
    return sorted(out)


def clip_all(intervals: Iterable[Interval], lo: float, hi: float) -> list[Interval]:
    return [c for iv in intervals if (c := iv.clip(lo, hi)) is not None]


def intersect(
    a: Sequence[Interval], b: Sequence[Interval], node: str | None = None
) -> list[Interval]:
    """Where both histories hold; same node only unless ``node`` names the result's node."""
    out = []
    for x in merge(a):
        for y in merge(b):
            if node is None and x.node != y.node:
                continue
            start, end = max(x.start, y.start), min(x.end, y.end)
            if end > start:
                out.append(Interval(start, end, node if node is not None else x.node))
    return merge(out)


def held_together(*histories: Sequence[Interval]) -> list[Interval]:
    """Per node: when that node held every one of the given resources at once."""
    if not histories:
        return []
    result = merge(histories[0])
    for h in histories[1:]:
        result = intersect(result, h)
    return result


def check_exclusive(
    resource: str,
    intervals: Sequence[Interval],
    *,
    tolerance: float = 0.0,
    window: tuple[float, float] = (-math.inf, math.inf),
) -> Verdict:
    """Fail when two different nodes held ``resource`` together for more than ``tolerance``."""
    ivs = clip_all(merge(intervals), *window)
    verdict = Verdict()
    for i, x in enumerate(ivs):
        for y in ivs[i + 1 :]:
            if y.node == x.node:
                continue
            start, end = max(x.start, y.start), min(x.end, y.end)
            if end - start > tolerance:
                verdict.violations.append(
                    Violation(
                        "overlap",
                        resource,
                        tuple(sorted((x.node, y.node))),
                        start,
                        end,
                        f"{x.node} held it [{x.start:.3f}, {x.end:.3f}), "
                        f"{y.node} held it [{y.start:.3f}, {y.end:.3f})",
                    )
                )
    return verdict


def gaps(intervals: Sequence[Interval], lo: float, hi: float) -> list[tuple[float, float]]:
    """The parts of ``[lo, hi)`` that no interval of any node covers."""
    covered = sorted((iv.start, iv.end) for iv in clip_all(intervals, lo, hi))
    out = []
    cursor = lo
    for start, end in covered:
        if start > cursor:
            out.append((cursor, start))
        cursor = max(cursor, end)
    if hi > cursor:
        out.append((cursor, hi))
    return out


def check_available(
    primary: Sequence[Interval],
    *,
    window: tuple[float, float],
    max_outage: float,
    resource: str = "working primary",
) -> Verdict:
    """Fail when no node was primary for longer than ``max_outage`` inside ``window``."""
    lo, hi = window
    if not hi > lo or math.isinf(hi) or math.isinf(lo):
        raise ValueError(f"window must be finite and non-empty: {window!r}")
    verdict = Verdict()
    for start, end in gaps(primary, lo, hi):
        if end - start > max_outage:
            verdict.violations.append(
                Violation(
                    "outage",
                    resource,
                    (),
                    start,
                    end,
                    f"allowed {max_outage * 1000:.0f} ms in window [{lo:.3f}, {hi:.3f})",
                )
            )
    return verdict


def check_follows(
    resource: str,
    follower: Sequence[Interval],
    leader: Sequence[Interval],
    *,
    tolerance: float,
    window: tuple[float, float] = (-math.inf, math.inf),
) -> Verdict:
    """Fail when ``follower`` sat on one node while another node held ``leader`` too long.

    A time when nobody holds ``leader`` is no disagreement: after a primary fails,
    the spans stay where they are until the next lease holder routes them.
    """
    disagreement = []
    for f in merge(follower):
        for lead in merge(leader):
            if f.node == lead.node:
                continue
            start, end = max(f.start, lead.start), min(f.end, lead.end)
            if end > start:
                disagreement.append(Interval(start, end, f"{f.node}<>{lead.node}"))
    verdict = Verdict()
    # One node name for all pieces, so that touching pieces join into one stretch.
    joined = merge(Interval(d.start, d.end, "any") for d in disagreement)
    for stretch in clip_all(joined, *window):
        if stretch.duration > tolerance:
            parts = sorted(
                {d.node for d in disagreement if d.start < stretch.end and d.end > stretch.start}
            )
            verdict.violations.append(
                Violation(
                    "follow",
                    resource,
                    tuple(parts),
                    stretch.start,
                    stretch.end,
                    f"{resource} on a node that did not hold the lease (route<>lease: "
                    f"{', '.join(parts)}); allowed {tolerance * 1000:.0f} ms",
                )
            )
    return verdict


@dataclass(frozen=True)
class RecorderHealth:
    """What one sampler measured about itself: its probe errors and its longest gap."""

    name: str
    samples: int
    errors: tuple[str, ...]
    max_gap: float  # the longest time without a sample, up to the verdict
    tolerance: float  # the longest gap that still resolves what the scenario claims

    def problems(self) -> list[str]:
        out = []
        if self.samples == 0:
            out.append("took no sample")
        if self.errors:
            shown = "; ".join(self.errors[:3])
            out.append(f"{len(self.errors)} probe error(s): {shown}")
        if self.max_gap > self.tolerance:
            out.append(
                f"gap of {self.max_gap * 1000:.0f} ms between samples, above its tolerance "
                f"of {self.tolerance * 1000:.0f} ms: an overlap shorter than that is invisible"
            )
        return out


def check_recorders(health: Iterable[RecorderHealth]) -> Verdict:
    """Fail on any recorder that erred or went blind for longer than its tolerance."""
    verdict = Verdict()
    for h in health:
        for problem in h.problems():
            verdict.violations.append(
                Violation("recorder", h.name, (), 0.0, 0.0, f"{h.name}: {problem}")
            )
    return verdict


@dataclass
class Observations:
    """Everything the recorders saw during one scenario, on one monotonic clock."""

    vip: list[Interval] = field(default_factory=list)
    asterisk_running: list[Interval] = field(default_factory=list)
    asterisk_booted: list[Interval] = field(default_factory=list)
    drbd_primary: list[Interval] = field(default_factory=list)
    routes: list[Interval] = field(default_factory=list)
    lease: list[Interval] | None = None
    # The samplers' own health, and per sampled resource the real gap of its sampler.
    recorders: list[RecorderHealth] = field(default_factory=list)
    sample_gaps: dict[str, float] = field(default_factory=dict)

    def tolerance(self, resource: str, floor: float) -> float:
        """The sampling error of ``resource``: its sampler's real gap, at least ``floor``."""
        return max(floor, self.sample_gaps.get(resource, 0.0))

    def primary(self) -> list[Interval]:
        """A working primary: the floating IP and a fully booted Asterisk on one node."""
        return held_together(self.vip, self.asterisk_booted)

    def timeline(self, t0: float) -> str:
        """A readable dump for failure messages, times relative to ``t0``."""

        def fmt(ivs: Sequence[Interval]) -> str:
            return ", ".join(
                f"{iv.node}[{iv.start - t0:+.3f},{iv.end - t0:+.3f})" for iv in merge(ivs)
            )

        rows = [
            ("vip", self.vip),
            ("asterisk", self.asterisk_running),
            ("booted", self.asterisk_booted),
            ("drbd", self.drbd_primary),
            ("routes", self.routes),
            ("lease", self.lease or []),
        ]
        return "\n".join(f"  {name:9} {fmt(ivs) or '-'}" for name, ivs in rows)


@dataclass(frozen=True)
class Allowance:
    """What one scenario allows: outage within a window, how long spans may lag the lease."""

    window: tuple[float, float] | None = None
    max_outage: float = 0.0
    route_tolerance: float = 1.0
    sample_tolerance: float = 0.0  # sampling error of sampled histories (VIP, pids)


def check(obs: Observations, allowance: Allowance) -> Verdict:
    """All rules at once; an empty ``Verdict.violations`` means the scenario was safe."""
    verdict = Verdict()
    everywhere = (-math.inf, math.inf)
    verdict.extend(check_recorders(obs.recorders))
    floor = allowance.sample_tolerance
    verdict.extend(check_exclusive("floating IP", obs.vip, tolerance=obs.tolerance("vip", floor)))
    verdict.extend(
        check_exclusive(
            "Asterisk", obs.asterisk_running, tolerance=obs.tolerance("asterisk_running", floor)
        )
    )
    verdict.extend(check_exclusive("DRBD Primary", obs.drbd_primary))
    if obs.lease is not None:
        verdict.extend(
            check_follows(
                "R-Series spans",
                obs.routes,
                obs.lease,
                tolerance=allowance.route_tolerance,
                window=allowance.window or everywhere,
            )
        )
    else:
        verdict.notes.append("no lease history: the R-Series route rule was not checked")
    if allowance.window is not None:
        verdict.extend(
            check_available(obs.primary(), window=allowance.window, max_outage=allowance.max_outage)
        )
    return verdict
