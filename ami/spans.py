"""Span alarm state and its classification (pure: time is an argument).

Fed by ``SpanAlarm``/``SpanAlarmClear`` (chan_dahdi ``reportalarms = spans``
or ``all``), per-channel ``Alarm``/``AlarmClear`` (the default ``channels``)
and periodic ``DAHDIShowStatus`` snapshots, which replace what events said
about the spans they list. A span's kind is the worst of its span-level alarm
and its channels' alarms, in chan_dahdi's order (red first).

Classification (design §4): red on *every* critical span points at our side
(card, cable, appliance port) -> the ``failover`` policy; blue (AIS) and
yellow (remote alarm) point at the carrier or the far end -> ``alert``.
The table is ``spans.policy``; a red alarm on only some critical spans cannot
be our card as a whole, so it alerts instead of failing over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ami.events import (
    AmiEvent,
    ChannelAlarm,
    ChannelAlarmClear,
    DahdiShowStatus,
    SpanAlarm,
    SpanAlarmClear,
    SpanStatus,
    worst_kind,
)

KINDS = ("red", "yellow", "blue", "recovering", "loopback", "notopen", "unknown", "none")

# Where each kind points (for the reason sentence and the status page).
KIND_SIDE = {
    "red": "our side (loss of signal at our card: card, cable or appliance port)",
    "yellow": "the far end (remote alarm)",
    "blue": "the carrier (AIS)",
    "recovering": "a span that is recovering",
    "loopback": "a loopback test (carrier or maintenance)",
    "notopen": "our side (span not opened by DAHDI)",
    "unknown": "an unknown alarm",
}
# Kinds missing from the configured policy.
FALLBACK_POLICY = {"unknown": "alert"}


@dataclass(frozen=True)
class SpanVerdict:
    action: str  # "failover" | "alert" | "none"
    reason: str
    kinds: dict[int, str] = field(default_factory=dict)


@dataclass
class _Span:
    span_kind: str = "none"
    channels: dict[int, str] = field(default_factory=dict)
    kind: str = "none"
    since: float | None = None


class SpanModel:
    """Current alarm kind per span, and since when."""

    def __init__(
        self,
        channels_per_span: int = 24,
        channel_map: Mapping[int, int] | None = None,
    ) -> None:
        # Alarm events name a DAHDI channel; T1 spans hold 24 channels, E1 spans 31.
        self.channels_per_span = channels_per_span
        self.channel_map = dict(channel_map or {})
        self._spans: dict[int, _Span] = {}

    def span_of_channel(self, channel: int) -> int:
        if channel in self.channel_map:
            return self.channel_map[channel]
        return (channel - 1) // self.channels_per_span + 1

    def _get(self, span: int) -> _Span:
        s = self._spans.get(span)
        if s is None:
            s = self._spans[span] = _Span()
        return s

    def _update(self, span: int, now: float) -> bool:
        s = self._spans[span]
        kind = worst_kind([s.span_kind, *s.channels.values()])
        if kind != s.kind or s.since is None:
            changed = kind != s.kind
            s.kind, s.since = kind, now
            return changed
        return False

    def feed(self, event: AmiEvent, now: float) -> bool:
        """Apply one event; True when a span's kind changed."""
        if isinstance(event, SpanAlarm):
            self._get(event.span).span_kind = event.kind
            return self._update(event.span, now)
        if isinstance(event, SpanAlarmClear):
            self._get(event.span).span_kind = "none"
            return self._update(event.span, now)
        if isinstance(event, ChannelAlarm):
            span = self.span_of_channel(event.channel)
            s = self._get(span)
            if event.kind == "none":
                s.channels.pop(event.channel, None)
            else:
                s.channels[event.channel] = event.kind
            return self._update(span, now)
        if isinstance(event, ChannelAlarmClear):
            span = self.span_of_channel(event.channel)
            self._get(span).channels.pop(event.channel, None)
            return self._update(span, now)
        if isinstance(event, DahdiShowStatus):
            return self.snapshot([event.status], now)
        return False

    def snapshot(self, rows: Iterable[SpanStatus], now: float) -> bool:
        """Apply a ``DAHDIShowStatus`` answer: it is the truth for the spans it lists."""
        changed = False
        for row in rows:
            s = self._get(row.span)
            s.span_kind = row.kind
            s.channels.clear()
            changed |= self._update(row.span, now)
        return changed

    def kind(self, span: int) -> str:
        s = self._spans.get(span)
        return s.kind if s else "none"

    def since(self, span: int) -> float | None:
        s = self._spans.get(span)
        return s.since if s else None

    def known(self, span: int) -> bool:
        return span in self._spans

    def spans(self) -> dict[int, str]:
        return {n: s.kind for n, s in sorted(self._spans.items())}

    def classify(
        self, critical: list[int], policy: Mapping[str, str], now: float | None = None
    ) -> SpanVerdict:
        """What the critical spans ask for: ``failover``, ``alert`` or ``none``."""
        spans = {span: (self.kind(span), self.since(span)) for span in critical}
        return classify_spans(spans, policy, now)


def classify_spans(
    spans: Mapping[int, tuple[str, float | None]],
    policy: Mapping[str, str],
    now: float | None = None,
) -> SpanVerdict:
    """The one span rule (design §4): ``spans`` maps each critical span to its alarm kind
    ("none" when clear) and since when. A failover needs every critical span in a kind
    whose policy is ``failover``; any other alarm alerts."""
    if not spans:
        return SpanVerdict("none", "no critical spans configured")
    kinds = {span: kind for span, (kind, _since) in spans.items()}

    def policy_of(kind: str) -> str:
        if kind == "none":
            return "ignore"
        return policy.get(kind, FALLBACK_POLICY.get(kind, "alert"))

    def describe(chosen: list[int]) -> str:
        parts = []
        for span in chosen:
            since = spans[span][1]
            age = f" for {now - since:.1f} s" if now is not None and since is not None else ""
            parts.append(f"span {span} {kinds[span]}{age}")
        return ", ".join(parts)

    critical = sorted(spans)
    failing = [s for s in critical if policy_of(kinds[s]) == "failover"]
    alerting = [s for s in critical if policy_of(kinds[s]) == "alert"]
    if failing and len(failing) == len(critical):
        worst = worst_kind([kinds[s] for s in failing])
        return SpanVerdict(
            "failover",
            f"every critical span in alarm ({describe(failing)}): points at "
            f"{KIND_SIDE.get(worst, worst)}",
            kinds,
        )
    if failing or alerting:
        chosen = sorted(failing + alerting)
        worst = worst_kind([kinds[s] for s in chosen])
        partial = " (not every critical span, so not our card as a whole)" if failing else ""
        return SpanVerdict(
            "alert",
            f"span alarm ({describe(chosen)}): points at {KIND_SIDE.get(worst, worst)}{partial}",
            kinds,
        )
    return SpanVerdict("none", "critical spans without alarm", kinds)
