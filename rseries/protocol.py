"""The R-Series line protocol, without I/O (in the sans-I/O style of h11).

Everything the wire says is in the tables at the top: command verbs and their
arguments, the keys an ``OK`` answer must carry, the error codes, and the
prefixes of responses and notifications. A site whose firmware words things
differently adapts these tables, not the driver.

Two codecs share one line framer:

- ``HostCodec`` (the driver's side): ``receive_data(bytes)`` then
  ``next_event()`` until it returns ``NEED_DATA``; events are ``OkResponse``,
  ``ErrResponse``, ``Notification`` and ``LineError`` (garbage or an over-long
  line, which the framer discards up to the next line end: that is the resync).
- ``ApplianceCodec`` (the simulator's side): events are ``Command`` and
  ``BadCommand``.

CR LF, LF and CR all end a line; empty lines are ignored, so a resync (a bare
CR LF) never produces an answer. Bytes outside printable ASCII are line noise
and are dropped before a line is parsed. Memory is bounded: the framer never
holds more than ``MAX_LINE`` bytes of an unfinished line.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

MAX_LINE: Final = 256
EOL: Final = b"\r\n"

OK_PREFIX: Final = "OK"
ERR_PREFIX: Final = "ERR"
NOTIFY_PREFIX: Final = "!"

HOSTS: Final = ("A", "B")
MODES: Final = ("AUTO", "MANUAL")
WDT_MIN: Final = 1
WDT_MAX: Final = 60
WDT_OFF: Final = "OFF"


@dataclass(frozen=True)
class CommandSpec:
    """One row of the command table."""

    verb: str
    # Allowed argument (upper case, full match), or None for a verb without one.
    arg_pattern: str | None = None
    # An OK answer to this verb must carry these KEY=VALUE keys ...
    expect_keys: tuple[str, ...] = ()
    # ... and these bare words.
    expect_words: tuple[str, ...] = ()

    def arg_ok(self, arg: str | None) -> bool:
        if self.arg_pattern is None:
            return arg is None
        return arg is not None and re.fullmatch(self.arg_pattern, arg) is not None


COMMANDS: Final[dict[str, CommandSpec]] = {
    "PING": CommandSpec("PING", expect_words=("PONG",)),
    "STATUS": CommandSpec("STATUS", expect_keys=("ACTIVE",)),
    "ROUTE": CommandSpec("ROUTE", arg_pattern="A|B", expect_keys=("ACTIVE",)),
    "MODE": CommandSpec("MODE", arg_pattern="AUTO|MANUAL", expect_keys=("MODE",)),
    "WDT": CommandSpec("WDT", arg_pattern="[1-9]|[1-5][0-9]|60|OFF", expect_keys=("WDT",)),
    "HB": CommandSpec("HB"),
}

ERR_UNKNOWN: Final = 1
ERR_BAD_ARGUMENT: Final = 2
ERR_BUSY: Final = 3
ERR_LOCKED: Final = 4
ERR_TOO_LONG: Final = 5

ERRORS: Final[dict[int, str]] = {
    ERR_UNKNOWN: "UNKNOWN COMMAND",
    ERR_BAD_ARGUMENT: "BAD ARGUMENT",
    ERR_BUSY: "BUSY",
    ERR_LOCKED: "LOCKED",
    ERR_TOO_LONG: "LINE TOO LONG",
}

# Keys of the STATUS answer and of notifications.
K_ACTIVE: Final = "ACTIVE"
K_MODE: Final = "MODE"
K_WDT: Final = "WDT"
K_HB_A: Final = "HB_A"
K_HB_B: Final = "HB_B"
K_LOCK: Final = "LOCK"
K_SPANS: Final = "SPANS"
K_FW: Final = "FW"
K_CAUSE: Final = "CAUSE"
HB_STATES: Final = ("OK", "LOST", "OFF")
CAUSES: Final = ("COMMAND", "WATCHDOG", "BUTTON", "POWERON")


# --- commands -----------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    verb: str
    arg: str | None = None

    def __str__(self) -> str:
        return self.verb if self.arg is None else f"{self.verb} {self.arg}"

    @property
    def spec(self) -> CommandSpec:
        return COMMANDS[self.verb]


def ping() -> Command:
    return Command("PING")


def status() -> Command:
    return Command("STATUS")


def route(host: str) -> Command:
    return Command("ROUTE", host.upper())


def mode(value: str) -> Command:
    return Command("MODE", value.upper())


def wdt(seconds: int | None) -> Command:
    return Command("WDT", WDT_OFF if seconds is None else str(seconds))


def hb() -> Command:
    return Command("HB")


def encode(command: Command) -> bytes:
    """The bytes of one command line; ValueError for a command the table does not allow."""
    spec = COMMANDS.get(command.verb)
    if spec is None:
        raise ValueError(f"unknown R-Series command {command.verb!r}")
    if not spec.arg_ok(command.arg):
        raise ValueError(f"bad argument for {command.verb}: {command.arg!r}")
    return str(command).encode("ascii") + EOL


# --- events -------------------------------------------------------------------


class NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True)
class OkResponse:
    words: tuple[str, ...]
    fields: dict[str, str] = field(hash=False)
    raw: str = ""

    def answers(self, command: Command) -> bool:
        """Whether this OK can be the answer to ``command`` (a stray answer cannot)."""
        spec = command.spec
        return all(k in self.fields for k in spec.expect_keys) and all(
            w in self.words for w in spec.expect_words
        )


@dataclass(frozen=True)
class ErrResponse:
    code: int
    text: str
    raw: str = ""


@dataclass(frozen=True)
class Notification:
    active: str | None
    cause: str | None
    fields: dict[str, str] = field(hash=False)
    raw: str = ""


@dataclass(frozen=True)
class LineError:
    """A line the codec could not use: ``garbage`` or ``too_long``; it was skipped."""

    reason: str
    raw: bytes


@dataclass(frozen=True)
class BadCommand:
    """Appliance side: a line that gets an ``ERR`` answer."""

    code: int
    raw: bytes

    @property
    def text(self) -> str:
        return ERRORS[self.code]


HostEvent = OkResponse | ErrResponse | Notification | LineError
ApplianceEvent = Command | BadCommand


# --- framing ------------------------------------------------------------------

_EOL_RE: Final = re.compile(rb"[\r\n]")
_NOISE_RE: Final = re.compile(rb"[^\x20-\x7e]")


@dataclass(frozen=True)
class _TooLong:
    head: bytes


class _Framer:
    """Splits a byte stream into lines of at most ``max_line`` bytes."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._skipping = False

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | _TooLong]:
        out: list[bytes | _TooLong] = []
        pos = 0
        while True:
            m = _EOL_RE.search(data, pos)
            if m is None:
                self._append(data[pos:], out)
                return out
            self._append(data[pos : m.start()], out)
            if self._skipping:
                self._skipping = False
            elif self._buf:
                out.append(bytes(self._buf))
            self._buf.clear()
            pos = m.end()

    def _append(self, chunk: bytes, out: list[bytes | _TooLong]) -> None:
        if self._skipping or not chunk:
            return
        if len(self._buf) + len(chunk) > self.max_line:
            out.append(_TooLong(bytes(self._buf[:32])))
            self._buf.clear()
            self._skipping = True
            return
        self._buf += chunk


def _clean(line: bytes) -> str:
    return _NOISE_RE.sub(b"", line).decode("ascii").strip()


def _split_fields(tokens: list[str]) -> tuple[tuple[str, ...], dict[str, str]]:
    words: list[str] = []
    fields: dict[str, str] = {}
    for tok in tokens:
        key, sep, value = tok.partition("=")
        if sep and key:
            fields[key.upper()] = value.upper()
        else:
            words.append(tok.upper())
    return tuple(words), fields


def parse_host_line(line: bytes) -> HostEvent | None:
    """One line from the appliance as an event; None for an empty line."""
    text = _clean(line)
    if not text:
        return None
    tokens = text.split()
    head = tokens[0].upper()
    if head == OK_PREFIX:
        words, fields = _split_fields(tokens[1:])
        return OkResponse(words, fields, text)
    if head == ERR_PREFIX:
        if len(tokens) >= 2 and tokens[1].isdigit() and len(tokens[1]) <= 3:
            return ErrResponse(int(tokens[1]), " ".join(tokens[2:]).upper(), text)
        return LineError("garbage", line)
    if text.startswith(NOTIFY_PREFIX):
        _, fields = _split_fields(text[len(NOTIFY_PREFIX) :].split())
        active = fields.get(K_ACTIVE)
        return Notification(active if active in HOSTS else None, fields.get(K_CAUSE), fields, text)
    return LineError("garbage", line)


def parse_command_line(line: bytes) -> ApplianceEvent | None:
    """Appliance side: one command line as a ``Command`` or a ``BadCommand``."""
    text = _clean(line)
    if not text:
        return None
    tokens = text.upper().split()
    spec = COMMANDS.get(tokens[0])
    if spec is None:
        return BadCommand(ERR_UNKNOWN, line)
    if len(tokens) > 2:
        return BadCommand(ERR_BAD_ARGUMENT, line)
    arg = tokens[1] if len(tokens) == 2 else None
    if not spec.arg_ok(arg):
        return BadCommand(ERR_BAD_ARGUMENT, line)
    return Command(spec.verb, arg)


class _Codec:
    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._framer = _Framer(max_line)
        self._frames: deque[bytes | _TooLong] = deque()

    def receive_data(self, data: bytes) -> None:
        self._frames.extend(self._framer.feed(bytes(data)))

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished line (at most ``max_line``)."""
        return self._framer.buffered

    @property
    def pending(self) -> int:
        """Lines received and not yet taken with ``next_event``."""
        return len(self._frames)


class HostCodec(_Codec):
    """The driver's side: appliance output in, events out."""

    def next_event(self) -> HostEvent | NeedData:
        while self._frames:
            frame = self._frames.popleft()
            if isinstance(frame, _TooLong):
                return LineError("too_long", frame.head)
            event = parse_host_line(frame)
            if event is not None:
                return event
        return NEED_DATA

    @staticmethod
    def send(command: Command) -> bytes:
        return encode(command)


class ApplianceCodec(_Codec):
    """The appliance's side: host commands in, events out."""

    def next_event(self) -> ApplianceEvent | NeedData:
        while self._frames:
            frame = self._frames.popleft()
            if isinstance(frame, _TooLong):
                return BadCommand(ERR_TOO_LONG, frame.head)
            event = parse_command_line(frame)
            if event is not None:
                return event
        return NEED_DATA


# --- appliance answers (used by the simulator) --------------------------------


def format_ok(*words: str, **fields: str) -> bytes:
    parts = [OK_PREFIX, *words, *(f"{k}={v}" for k, v in fields.items())]
    return " ".join(parts).encode("ascii") + EOL


def format_err(code: int) -> bytes:
    return f"{ERR_PREFIX} {code} {ERRORS[code]}".encode("ascii") + EOL


def format_notification(**fields: str) -> bytes:
    body = " ".join(f"{k}={v}" for k, v in fields.items())
    return f"{NOTIFY_PREFIX} {body}".encode("ascii") + EOL


# --- the appliance's state as the host sees it --------------------------------


def _host(v: str | None) -> str | None:
    return v if v in HOSTS else None


def _mode(v: str | None) -> str | None:
    return v.lower() if v in MODES else None


def _wdt(v: str | None) -> int | None:
    if v is not None and v.isdigit() and WDT_MIN <= int(v) <= WDT_MAX:
        return int(v)
    return None


def _hb(v: str | None) -> str | None:
    return v if v in HB_STATES else None


def _lock(v: str | None) -> bool | None:
    return {"ON": True, "OFF": False}.get(v or "")


def _int(v: str | None) -> int | None:
    return int(v) if v is not None and v.isdigit() and len(v) < 6 else None


@dataclass(frozen=True)
class ApplianceState:
    """What the appliance last told us. ``mode`` is ``auto``/``manual``; ``watchdog``
    is whole seconds or None (off); ``hb_a``/``hb_b`` are ``OK``/``LOST``/``OFF``."""

    active: str | None
    mode: str | None
    watchdog: int | None
    hb_a: str | None
    hb_b: str | None
    lock: bool | None
    spans: int | None = None
    fw: str | None = None

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> ApplianceState:
        return cls(
            active=_host(fields.get(K_ACTIVE)),
            mode=_mode(fields.get(K_MODE)),
            watchdog=_wdt(fields.get(K_WDT)),
            hb_a=_hb(fields.get(K_HB_A)),
            hb_b=_hb(fields.get(K_HB_B)),
            lock=_lock(fields.get(K_LOCK)),
            spans=_int(fields.get(K_SPANS)),
            fw=fields.get(K_FW),
        )

    def updated(self, fields: dict[str, str]) -> ApplianceState:
        """This state with the (valid) keys of a response or notification applied."""
        changes: dict[str, Any] = {}
        if _host(fields.get(K_ACTIVE)):
            changes["active"] = fields[K_ACTIVE]
        if _mode(fields.get(K_MODE)):
            changes["mode"] = _mode(fields[K_MODE])
        if K_WDT in fields and (fields[K_WDT] == WDT_OFF or _wdt(fields[K_WDT])):
            changes["watchdog"] = _wdt(fields[K_WDT])
        for key, attr in ((K_HB_A, "hb_a"), (K_HB_B, "hb_b")):
            if _hb(fields.get(key)):
                changes[attr] = fields[key]
        if _lock(fields.get(K_LOCK)) is not None:
            changes["lock"] = _lock(fields[K_LOCK])
        return replace(self, **changes) if changes else self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
