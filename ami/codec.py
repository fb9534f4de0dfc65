"""AMI wire format without I/O: ``receive_data`` / ``next_event`` / ``encode``.

A message is ``Key: Value`` lines ending in CRLF, closed by an empty line. The
server's greeting is a single line with no empty line after it. Repeated keys
(``Output``, ``ChanVariable``) are joined with ``\\n`` so a frame is a plain
``dict[str, str]``. Buffers are bounded: a peer that never terminates a frame
raises ``AmiProtocolError`` instead of growing memory without limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ami.errors import AmiProtocolError

EOL = b"\r\n"
TERMINATOR = b"\r\n\r\n"
GREETING_PREFIX = "Asterisk Call Manager/"
DEFAULT_MAX_FRAME = 1 << 20  # 1 MiB: far above any real AMI message
MAX_GREETING = 1024

Frame = dict[str, str]


@dataclass(frozen=True, slots=True)
class Greeting:
    """``Asterisk Call Manager/<version>``: the AMI protocol version, not Asterisk's."""

    version: str


def parse_frame(text: str) -> Frame:
    """Parse one message (without its terminator) into fields, by key."""
    fields: Frame = {}
    for line in text.split("\r\n"):
        key, sep, value = line.partition(":")
        if not sep:
            continue  # not a header line; Asterisk never sends one inside a message
        key = key.strip()
        if not key:
            continue
        if value.startswith(" "):
            value = value[1:]
        old = fields.get(key)
        fields[key] = value if old is None else old + "\n" + value
    return fields


class FrameDecoder:
    """Turns bytes from one connection into ``Greeting`` and ``Frame`` events."""

    def __init__(self, *, expect_greeting: bool = False, max_frame: int = DEFAULT_MAX_FRAME):
        self._buf = bytearray()
        self._expect_greeting = expect_greeting
        self.max_frame = max_frame
        self.greeting: Greeting | None = None

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self) -> Greeting | Frame | None:
        """The next complete greeting or frame, or None when more data is needed.

        Raises ``AmiProtocolError`` when the peer sent something that is not AMI
        or an unterminated frame longer than ``max_frame``.
        """
        buf = self._buf
        if self._expect_greeting:
            end = buf.find(EOL)
            if end < 0:
                if len(buf) > MAX_GREETING:
                    raise AmiProtocolError(f"no AMI greeting within {MAX_GREETING} bytes")
                return None
            line = bytes(buf[:end]).decode("utf-8", "replace")
            if not line.startswith(GREETING_PREFIX):
                raise AmiProtocolError(f"not an AMI server: first line {line[:80]!r}")
            del buf[: end + 2]
            self._expect_greeting = False
            self.greeting = Greeting(line[len(GREETING_PREFIX) :].strip())
            return self.greeting
        while True:
            end = buf.find(TERMINATOR)
            if end < 0:
                if len(buf) > self.max_frame:
                    size = len(buf)
                    buf.clear()
                    raise AmiProtocolError(
                        f"AMI frame exceeds {self.max_frame} bytes without a terminator "
                        f"({size} bytes buffered)"
                    )
                return None
            raw = bytes(buf[:end])
            del buf[: end + 4]
            if end > self.max_frame:
                raise AmiProtocolError(f"AMI frame of {end} bytes exceeds {self.max_frame}")
            fields = parse_frame(raw.decode("utf-8", "replace"))
            if fields:
                return fields
            # an empty or header-less block (stray blank lines): skip it

    def frames(self) -> Iterable[Greeting | Frame]:
        while (event := self.next_event()) is not None:
            yield event


def _check(text: str, what: str) -> str:
    if "\r" in text or "\n" in text:
        raise ValueError(f"AMI {what} must not contain CR or LF")
    return text


def encode(fields: Mapping[str, str | list[str]] | Iterable[tuple[str, str]]) -> bytes:
    """One message: ``Key: Value`` lines and the closing empty line.

    A list value (or repeated pairs) becomes repeated keys, as in ``Variable:``.
    CR/LF inside a key or value is refused (it would inject headers).
    """
    items = fields.items() if isinstance(fields, Mapping) else fields
    out: list[str] = []
    for key, value in items:
        _check(key, "key")
        for v in value if isinstance(value, list) else [value]:
            out.append(f"{key}: {_check(v, 'value')}\r\n")
    out.append("\r\n")
    return "".join(out).encode("utf-8")


def encode_greeting(version: str) -> bytes:
    return f"{GREETING_PREFIX}{version}\r\n".encode()
