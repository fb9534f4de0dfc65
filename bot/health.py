"""The local health verdict and readiness (design section 4), pure.

The caller gathers plain values (AMI link state, Ping, FullyBooted/Shutdown,
the critical spans' alarms, test-call streak, ARI) with the times they changed,
and asks for a verdict at ``now``. Each signal has its own grace period, so a
blip does not count; every "no" comes with a reason sentence that has numbers.

Every one of these signals depends on Asterisk running, so each is judged by one
rule (``counts_from``): from the later of its own last change and the current
Asterisk's start. A failure that began before this Asterisk started (on a
standby, whose Asterisk is stopped by design, or before a restart) belongs to
an Asterisk that is gone; it counts only once its grace has passed since the
start.

The grace is for ambiguous signals (the link lost while the process may run, a
slow Ping). A certain death needs none: the link closed and a status check begun
after that found no Asterisk process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from ami.spans import classify_spans

if TYPE_CHECKING:
    from bot.config import Config

OK_DISK_STATE = "UpToDate"


@dataclass(frozen=True)
class SpanState:
    """One critical span as ``ami.spans`` classifies it: alarm kind (None: clear) and since."""

    span: int
    alarm: str | None
    since: float


@dataclass(frozen=True)
class PendingShutdown:
    """The last AMI ``Shutdown`` event not yet followed by ``FullyBooted``."""

    restart: bool
    at: float


@dataclass(frozen=True)
class HealthInputs:
    """Plain values gathered by the caller, with the times they changed (caller's clock)."""

    ami_up: bool  # connected and logged in
    ami_since: float  # when ami_up last changed
    last_ping_ok_at: float | None = None  # when a Ping was last answered in time
    ping_rtt: float | None = None
    fully_booted: bool = False
    asterisk_started_at: float | None = None  # when Asterisk was (re)started, or serving began
    shutdown: PendingShutdown | None = None
    spans: tuple[SpanState, ...] = ()
    spans_routed_at: float | None = None  # when the spans were last routed here
    test_call_failures: int = 0  # failed test calls in a row
    test_call_failing_since: float | None = None  # when the first of them failed
    ari_ok: bool | None = None  # None: ARI not configured
    ari_since: float = 0.0  # when ari_ok last changed
    # When the last status check that found Asterisk's process gone began (None: the
    # last check found it running, or could not tell, or none ran).
    process_gone_at: float | None = None
    # The status command said "not running" while the AMI link was up all through its
    # check, and has not said "running" since: it is not believed.
    status_disagrees: bool = False


def _policy_default() -> Mapping[str, str]:
    from bot.config import DEFAULT_SPAN_POLICY

    return MappingProxyType(dict(DEFAULT_SPAN_POLICY))


@dataclass(frozen=True)
class HealthPolicy:
    ami_grace: float = 3.0
    ping_interval: float = 1.0
    ping_timeout: float = 1.0
    ari_grace: float = 5.0
    boot_timeout: float = 60.0
    boot_grace: float = 0.0
    critical_spans: tuple[int, ...] = ()
    span_policy: Mapping[str, str] = field(default_factory=_policy_default)
    span_grace: float = 15.0
    test_call_failures: int = 3  # 0: test calls off

    @classmethod
    def from_config(cls, cfg: Config) -> HealthPolicy:
        return cls(
            ami_grace=cfg.health.ami_grace,
            ping_interval=cfg.ami.ping_interval,
            ping_timeout=cfg.ami.ping_timeout,
            ari_grace=cfg.health.ari_grace,
            boot_timeout=cfg.asterisk.boot_timeout,
            boot_grace=cfg.health.boot_grace,
            critical_spans=tuple(cfg.spans.critical),
            span_policy=MappingProxyType(dict(cfg.spans.policy)),
            span_grace=cfg.spans.grace,
            test_call_failures=cfg.test_call.failures if cfg.test_call else 0,
        )


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    reasons: tuple[str, ...] = ()  # why unhealthy (failover-worthy)
    alerts: tuple[str, ...] = ()  # worth telling people, not worth a failover
    notes: tuple[str, ...] = ()  # what was not judged, and why (shown in status)


STANDBY_NOTE = "Asterisk stopped on this standby by design: AMI, ARI and test calls not judged"


def standby_verdict(role: str = "standby") -> Verdict:
    """A node that is not primary runs no Asterisk of its own on purpose (or is starting
    or stopping it): its AMI and ARI failing is no problem of its own (its readiness is
    what it reports)."""
    if role == "standby":
        return Verdict(True, notes=(STANDBY_NOTE,))
    return Verdict(True, notes=(f"Asterisk not judged while {role}",))


def counts_from(changed_at: float, started_at: float | None) -> float:
    """When an Asterisk-dependent signal's current state starts to count: the later of
    its own last change and the current Asterisk's start (None: not known)."""
    return changed_at if started_at is None else max(changed_at, started_at)


def evaluate(inputs: HealthInputs, policy: HealthPolicy, now: float) -> Verdict:
    reasons: list[str] = []
    alerts: list[str] = []
    _ami(inputs, policy, now, reasons)
    if inputs.status_disagrees:
        alerts.append(STATUS_DISAGREES)
    _asterisk(inputs, policy, now, reasons, alerts)
    _spans(inputs, policy, now, reasons, alerts)
    _test_calls(inputs, policy, reasons)
    if inputs.ari_ok is False:
        down = now - counts_from(inputs.ari_since, inputs.asterisk_started_at)
        if down >= policy.ari_grace:
            reasons.append(f"ARI ping failing for {down:.1f} s")
    return Verdict(not reasons, tuple(reasons), tuple(alerts))


PROCESS_GONE = "Asterisk process gone (status check) and the AMI link closed"
STATUS_DISAGREES = (
    "asterisk.status says Asterisk is not running while its AMI answers: not believed, "
    "a closed AMI link waits for health.ami_grace"
)


def process_gone(i: HealthInputs) -> bool:
    """Asterisk is certainly dead: the link is closed and a check begun after it closed
    (and after the current Asterisk started) found no process. A check from while the
    link was up, or a status command that said so of a live AMI, is not believed."""
    gone = i.process_gone_at
    if i.ami_up or i.status_disagrees or gone is None or gone < i.ami_since:
        return False
    return counts_from(gone, i.asterisk_started_at) == gone


def _ami(i: HealthInputs, p: HealthPolicy, now: float, reasons: list[str]) -> None:
    started = i.asterisk_started_at
    if process_gone(i):
        reasons.append(PROCESS_GONE)
        return
    if not i.ami_up:
        down = now - counts_from(i.ami_since, started)
        if down >= p.ami_grace:
            reasons.append(f"AMI link down for {down:.1f} s")
        return
    # A link that is up but stopped answering Ping is dead from when the reply was due.
    last = counts_from(i.last_ping_ok_at if i.last_ping_ok_at is not None else i.ami_since, started)
    dead_since = last + p.ping_interval + p.ping_timeout
    if now - dead_since >= p.ami_grace:
        reasons.append(f"AMI Ping unanswered for {now - last:.1f} s")


def _test_calls(i: HealthInputs, p: HealthPolicy, reasons: list[str]) -> None:
    limit = p.test_call_failures
    if not limit or i.test_call_failures < limit:
        return
    since = i.test_call_failing_since
    if since is not None and counts_from(since, i.asterisk_started_at) != since:
        return  # the streak began on an Asterisk that is gone: each start begins afresh
    reasons.append(f"{i.test_call_failures} test calls failed in a row (limit {limit})")


def _asterisk(
    i: HealthInputs, p: HealthPolicy, now: float, reasons: list[str], alerts: list[str]
) -> None:
    if i.fully_booted:
        return
    shutdown = i.shutdown
    if shutdown is not None and counts_from(shutdown.at, i.asterisk_started_at) != shutdown.at:
        shutdown = None  # said by an Asterisk stopped before the current one started
    if shutdown is not None:
        if not shutdown.restart:
            reasons.append("Asterisk shut down (Shutdown with Restart: False)")
            return
        waited = now - shutdown.at
        if waited > p.boot_timeout + p.boot_grace:
            reasons.append(f"Asterisk restart not FullyBooted after {waited:.1f} s")
        else:
            alerts.append(f"Asterisk restarting ({waited:.1f} s)")
        return
    if i.asterisk_started_at is not None:
        waited = now - i.asterisk_started_at
        if waited > p.boot_timeout + p.boot_grace:
            reasons.append(f"Asterisk not FullyBooted {waited:.1f} s after start")


def _spans(
    i: HealthInputs, p: HealthPolicy, now: float, reasons: list[str], alerts: list[str]
) -> None:
    if not p.critical_spans:
        return
    if i.spans_routed_at is None:
        return
    if now - counts_from(i.spans_routed_at, i.asterisk_started_at) < p.span_grace:
        # Framing takes time after a route (and after Asterisk starts): a fresh red
        # alarm must not bounce the service.
        return
    states = {s.span: s for s in i.spans}
    spans: dict[int, tuple[str, float | None]] = {}
    for span in p.critical_spans:
        state = states.get(span)
        if state is None or state.alarm is None:
            spans[span] = ("none", None)
        else:
            spans[span] = (state.alarm, counts_from(state.since, i.asterisk_started_at))
    verdict = classify_spans(spans, p.span_policy, now)
    if verdict.action == "failover":
        reasons.append(verdict.reason)
    elif verdict.action == "alert":
        alerts.append(verdict.reason)


@dataclass(frozen=True)
class ReadinessFacts:
    """What the I/O parts found; ``None`` for a part that is not configured here."""

    drbd_disks: tuple[tuple[str, str], ...] | None = None  # (resource, disk state)
    drbd_error: str | None = None  # the DRBD state could not be read
    drbd_local_mark: str | None = None  # this node's own outdated mark, described
    drbd_outdated_on_bus: bool = False  # the peer's fence-peer handler outdated us
    drbd_forced: bool = False  # an operator accepted this node's data as it is
    rseries_link_up: bool | None = None
    asterisk_commands_missing: tuple[str, ...] = ()
    ami_configured: bool = True


def readiness(f: ReadinessFacts) -> tuple[bool, tuple[str, ...]]:
    """Ready to take over (design §4), with every reason when not: the one rule."""
    reasons: list[str] = []
    if f.drbd_disks is not None or f.drbd_error is not None:
        if not f.drbd_forced:
            if f.drbd_local_mark:
                mark = f.drbd_local_mark
                reasons.append(f"drbd: this node's data is {mark} (waiting for resync)")
            if f.drbd_outdated_on_bus:
                reasons.append("drbd: this node is marked outdated on the cluster bus")
        if f.drbd_error is not None:
            reasons.append(f"drbd: {f.drbd_error}")
        for name, disk in f.drbd_disks or ():
            if f.drbd_forced and disk not in ("Diskless", "DUnknown"):
                continue  # an operator accepted this data as it is
            if disk != OK_DISK_STATE:
                reasons.append(f"drbd {name}: disk {disk}")
    if f.rseries_link_up is False:
        reasons.append("R-Series link down")
    reasons += f.asterisk_commands_missing
    if not f.ami_configured:
        reasons.append("no AMI secret configured")
    return not reasons, tuple(reasons)
