"""The bot's systemd unit against its lease timings (`check-config --host`).

systemd kills a bot that stops sending WATCHDOG=1 for WatchdogSec; that must
happen before the lease the bot holds can run out, fence included:
``WatchdogSec <= lease_ttl - renew_interval - fence_budget``. The values come
from the running systemd (``systemctl show``) when it knows the unit, else from
the installed unit file and its drop-ins. Parsing is pure; reading is done by
the caller's functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from bot.config import format_duration

UNIT = "failover-bot.service"
FAST_LEASE = 1.0  # a lease shorter than this is the fast profile (the guide, "Timing profiles")
FAST_NICE = -10
STOP_SLACK = 10.0  # fencing and Python's exit after the hand-over's own deadline

_SPAN_UNITS = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
}  # fmt: skip


def parse_timespan(text: str) -> float | None:
    """systemd's time span ("1500ms", "1s 500ms", "1.500000s", "2min", "5") in seconds;
    0 for off ("0", "", "infinity" turns the watchdog off too); None if unreadable."""
    text = text.strip()
    if text in ("", "0", "infinity"):
        return 0.0
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total = 0.0
    pos = 0
    for match in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)", text):
        if match.start() != pos or match[2] not in _SPAN_UNITS:
            return None
        total += float(match[1]) * _SPAN_UNITS[match[2]]
        pos = match.end()
    return total if pos == len(text) and pos else None


def service_settings(texts: Iterable[str]) -> dict[str, str]:
    """The [Service] assignments of a unit file and its drop-ins, in order: last wins."""
    out: dict[str, str] = {}
    for text in texts:
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif section == "Service" and "=" in line:
                key, _, value = line.partition("=")
                out[key.strip()] = value.strip()
    return out


def unit_texts(unit_dirs: Iterable[Path], unit: str = UNIT) -> list[str] | None:
    """The unit file (first found, as systemd searches) and every drop-in, sorted by name."""
    dirs = list(unit_dirs)
    main = next((d / unit for d in dirs if (d / unit).is_file()), None)
    if main is None:
        return None
    dropins: dict[str, Path] = {}
    for d in reversed(dirs):  # an earlier directory's drop-in of the same name wins
        for path in sorted((d / f"{unit}.d").glob("*.conf")):
            dropins[path.name] = path
    return [main.read_text()] + [dropins[name].read_text() for name in sorted(dropins)]


def from_show(shown: Mapping[str, str]) -> dict[str, str]:
    """`systemctl show` property names -> the unit file's."""
    names = {"WatchdogUSec": "WatchdogSec", "TimeoutStopUSec": "TimeoutStopSec", "Nice": "Nice"}
    return {names[k]: v for k, v in shown.items() if k in names}


def watchdog_limit(lease_ttl: float, renew_interval: float, fence_budget: float) -> float:
    return lease_ttl - renew_interval - fence_budget


def ms(seconds: float) -> str:
    """As the guide and the examples write durations: 300ms, 1500ms, 3s."""
    return f"{round(seconds * 1000)}ms" if seconds < 2 else format_duration(seconds)
