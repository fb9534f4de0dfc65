"""The lease clock: CLOCK_BOOTTIME keeps counting while a virtual machine is suspended."""

from __future__ import annotations

import time


def boottime() -> float:
    """Seconds since boot, including time spent suspended (never wall time)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)
