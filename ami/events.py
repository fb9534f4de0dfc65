"""Typed AMI events for what the bot uses; anything else stays a plain ``AmiEvent``.

``parse_event(fields)`` never raises: an unknown event, or a known one whose
fields do not parse (a span that is not a number), is returned untouched as
``AmiEvent`` so that nothing a peer sends can crash the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ami.codec import Frame

# Alarm text (chan_dahdi alarm2str) -> kind; the kinds match spans.policy keys.
ALARM_TEXT_KIND = {
    "Red Alarm": "red",
    "Yellow Alarm": "yellow",
    "Blue Alarm": "blue",
    "Recovering": "recovering",
    "Loopback": "loopback",
    "Not Open": "notopen",
    "No Alarm": "none",
    "None": "none",
}
# DAHDIShowStatus ``Alarms`` short codes -> kind.
ALARM_CODE_KIND = {
    "RED": "red",
    "YEL": "yellow",
    "BLU": "blue",
    "REC": "recovering",
    "LB": "loopback",
    "NOP": "notopen",
    "UUU": "unknown",
    "OK": "none",
    # A span without channels cannot carry calls: treat it like one not opened.
    "UNCONFIGURED": "notopen",
}
# When several alarms are set, the first of these wins (as in chan_dahdi).
KIND_PRIORITY = ("red", "yellow", "blue", "recovering", "loopback", "notopen", "unknown", "none")
_RANK = {kind: i for i, kind in enumerate(KIND_PRIORITY)}


def alarm_text_kind(text: str) -> str:
    return ALARM_TEXT_KIND.get(text.strip(), "unknown")


def alarm_codes_kind(codes: str) -> str:
    kinds = [ALARM_CODE_KIND.get(c.strip(), "unknown") for c in codes.split("/") if c.strip()]
    return worst_kind(kinds) if kinds else "unknown"


def worst_kind(kinds: list[str]) -> str:
    return min(kinds, key=lambda k: _RANK.get(k, len(_RANK))) if kinds else "none"


@dataclass(slots=True)
class AmiEvent:
    """Any AMI event: its name and its fields exactly as received."""

    name: str
    fields: Frame

    def get(self, key: str, default: str = "") -> str:
        value = self.fields.get(key)
        if value is not None:
            return value
        low = key.lower()  # keys are case-insensitive in AMI
        for k, v in self.fields.items():
            if k.lower() == low:
                return v
        return default


@dataclass(slots=True)
class FullyBooted(AmiEvent):
    status: str
    uptime: int | None


@dataclass(slots=True)
class Shutdown(AmiEvent):
    cleanly: bool
    restart: bool


@dataclass(slots=True)
class SpanAlarm(AmiEvent):
    span: int
    alarm: str
    kind: str


@dataclass(slots=True)
class SpanAlarmClear(AmiEvent):
    span: int


@dataclass(slots=True)
class ChannelAlarm(AmiEvent):
    """``Alarm``: a per-channel alarm (chan_dahdi's default ``reportalarms``)."""

    channel: int
    alarm: str
    kind: str


@dataclass(slots=True)
class ChannelAlarmClear(AmiEvent):
    """``AlarmClear``."""

    channel: int


@dataclass(slots=True)
class OriginateResponse(AmiEvent):
    action_id: str
    response: str
    channel: str
    reason: int
    uniqueid: str


@dataclass(slots=True)
class Newchannel(AmiEvent):
    channel: str
    uniqueid: str
    state: int


@dataclass(slots=True)
class Hangup(AmiEvent):
    channel: str
    uniqueid: str
    cause: int
    cause_txt: str


@dataclass(slots=True)
class Reload(AmiEvent):
    module: str
    status: int


@dataclass(frozen=True, slots=True)
class SpanStatus:
    """One ``DAHDIShowStatus`` row."""

    span: int
    description: str
    alarms: str
    kind: str
    irq: int = 0
    bpviol: int = 0
    crc: int = 0
    framing: str = ""
    coding: str = ""
    options: str = ""
    lbo: str = ""


def _int(text: str) -> int:
    return int(text.strip())


def _int0(text: str | None) -> int:
    try:
        return int((text or "0").strip())
    except ValueError:
        return 0


def parse_span_status(f: Frame) -> SpanStatus:
    """A ``DAHDIShowStatus`` item; raises ValueError/KeyError when malformed."""
    alarms = f["Alarms"]
    return SpanStatus(
        span=_int(f["Span"]),
        description=f.get("Description", ""),
        alarms=alarms,
        kind=alarm_codes_kind(alarms),
        irq=_int0(f.get("IRQ")),
        bpviol=_int0(f.get("bpviol")),
        crc=_int0(f.get("CRC")),
        framing=f.get("Framing", ""),
        coding=f.get("Coding", ""),
        options=f.get("Options", ""),
        lbo=f.get("LBO", ""),
    )


@dataclass(slots=True)
class DahdiShowStatus(AmiEvent):
    status: SpanStatus


def _fully_booted(n: str, f: Frame) -> AmiEvent:
    up = f.get("Uptime")
    return FullyBooted(n, f, f.get("Status", ""), _int(up) if up is not None else None)


def _shutdown(n: str, f: Frame) -> AmiEvent:
    return Shutdown(
        n, f, f.get("Shutdown", "").lower() == "cleanly", f.get("Restart", "").lower() == "true"
    )


def _span_alarm(n: str, f: Frame) -> AmiEvent:
    alarm = f["Alarm"]
    return SpanAlarm(n, f, _int(f["Span"]), alarm, alarm_text_kind(alarm))


def _channel_alarm(n: str, f: Frame) -> AmiEvent:
    alarm = f["Alarm"]
    return ChannelAlarm(n, f, _int(f["DAHDIChannel"]), alarm, alarm_text_kind(alarm))


def _originate_response(n: str, f: Frame) -> AmiEvent:
    return OriginateResponse(
        n,
        f,
        f.get("ActionID", ""),
        f["Response"],
        f.get("Channel", ""),
        _int(f.get("Reason", "0")),
        f.get("Uniqueid", ""),
    )


_BUILDERS: dict[str, Callable[[str, Frame], AmiEvent]] = {
    "FullyBooted": _fully_booted,
    "Shutdown": _shutdown,
    "SpanAlarm": _span_alarm,
    "SpanAlarmClear": lambda n, f: SpanAlarmClear(n, f, _int(f["Span"])),
    "Alarm": _channel_alarm,
    "AlarmClear": lambda n, f: ChannelAlarmClear(n, f, _int(f["DAHDIChannel"])),
    "OriginateResponse": _originate_response,
    "Newchannel": lambda n, f: Newchannel(
        n, f, f["Channel"], f.get("Uniqueid", ""), _int(f.get("ChannelState", "0"))
    ),
    "Hangup": lambda n, f: Hangup(
        n, f, f["Channel"], f.get("Uniqueid", ""), _int(f.get("Cause", "0")), f.get("Cause-txt", "")
    ),
    "Reload": lambda n, f: Reload(n, f, f.get("Module", ""), _int(f.get("Status", "0"))),
    "DAHDIShowStatus": lambda n, f: DahdiShowStatus(n, f, parse_span_status(f)),
}


def parse_event(fields: Frame) -> AmiEvent:
    """The typed event for a frame with an ``Event`` key (see the module doc)."""
    name = fields.get("Event")
    if name is None:
        name = next((v for k, v in fields.items() if k.lower() == "event"), "")
    builder = _BUILDERS.get(name)
    if builder is not None:
        try:
            return builder(name, fields)
        except (KeyError, ValueError):
            pass  # malformed: pass it through untyped
    return AmiEvent(name, fields)


def format_event(event: AmiEvent) -> str:
    """One line for humans: ``Name Key=Value ...``."""
    parts = [event.name or "(no name)"]
    for key, value in event.fields.items():
        if key in ("Event", "Privilege"):
            continue
        parts.append(f"{key}={value!r}" if (" " in value or not value) else f"{key}={value}")
    return " ".join(parts)
