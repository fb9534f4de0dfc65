"""When a waiting node should look at the lease again (pure; time is an argument).

A standby may take a free key only after the expiry its last read predicted,
after a rule-5 long wait, and after the promise it gave the primary's last
heartbeat (design section 3, rule 5). Each of these is a known instant, so the
loop wakes at the first one still ahead instead of at its next idle tick: the
key is then taken at the earliest instant the rules allow, not up to one idle
interval later. The rules themselves are unchanged; only the wake-up moves.

The holder side keeps the two clocks in phase: the peer heartbeat goes out at
each renewal's instant, so the promise it earns ends with the key's own expiry
(a few milliseconds apart) rather than up to one renewal interval after it.
"""

from __future__ import annotations

from collections.abc import Iterable

# Past a predicted instant by this much, so that the read which follows finds the
# key already gone on Redis's millisecond clock.
SETTLE = 0.002


def next_wakeup(deadlines: Iterable[float | None], now: float, idle: float) -> float:
    """Seconds until the next cycle: ``idle``, or less when a deadline falls sooner."""
    ahead = [t for t in deadlines if t is not None and t > now]
    if not ahead:
        return idle
    return max(0.0, min(idle, min(ahead) + SETTLE - now))
