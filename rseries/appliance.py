"""The appliance's behaviour as a pure state machine (time is an argument).

The simulator feeds it command events from the two host links and calls
``tick(now)`` at ``next_deadline()``; it answers with ``Output`` items (bytes
for one link or for every link) and appends one log record per state change
to ``self.log``.

Theory of the relays: a switch (ROUTE, watchdog, button, power) changes
``active`` at once; that is the moment the relays are energised and the
moment logged. For ``relay_time`` after it the relays settle and ``ROUTE`` /
``MODE`` answer ``ERR 3 BUSY``. Power off drops the relays to their
de-energised default, host A, and the appliance stays mute until power on.

Watchdog: with ``WDT n`` a host's heartbeat is ``OK`` for exactly n seconds
after its last ``HB``, then ``LOST`` (never seen counts as ``LOST``). In AUTO
mode the appliance moves the spans when the active host is ``LOST`` and the
other host is ``OK`` (``CAUSE=WATCHDOG``). The front-panel lock refuses host
``ROUTE`` and ``MODE`` only, as the protocol says; the watchdog and the button
still act.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rseries import protocol as p

LINKS = ("a", "b")
ALL = "*"


@dataclass(frozen=True)
class Output:
    link: str  # "a", "b" or ALL
    data: bytes
    response: bool = False  # an answer to a command (a notification otherwise)


def host_of(link: str) -> str:
    return link.upper()


def other(host: str) -> str:
    return "B" if host == "A" else "A"


class Appliance:
    def __init__(
        self,
        now: float,
        *,
        relay_time: float = 0.02,
        mode: str = "MANUAL",
        wdt: int | None = None,
        spans: int = 8,
        fw: str = "2.1.0",
    ) -> None:
        self.relay_time = relay_time
        self.spans = spans
        self.fw = fw
        self.mode = mode.upper()
        self.wdt = wdt
        self.lock = False
        self.active = "A"
        self.powered = True
        self.settle_until = now
        self.last_hb: dict[str, float | None] = {"A": None, "B": None}
        self.hb: dict[str, str] = {h: self._hb_state(h, now) for h in p.HOSTS}
        self.log: list[dict[str, Any]] = []
        self._record(now, "power", state="on", cause="POWERON")

    # --- queries ---------------------------------------------------------------

    def status_fields(self) -> dict[str, str]:
        return {
            p.K_ACTIVE: self.active,
            p.K_MODE: self.mode,
            p.K_WDT: p.WDT_OFF if self.wdt is None else str(self.wdt),
            p.K_HB_A: self.hb["A"],
            p.K_HB_B: self.hb["B"],
            p.K_LOCK: "ON" if self.lock else "OFF",
            p.K_SPANS: str(self.spans),
            p.K_FW: self.fw,
        }

    def next_deadline(self, now: float) -> float | None:
        """When ``tick`` next has something to do (a watchdog expiry, relays settled)."""
        if not self.powered:
            return None
        times = [self.settle_until]
        if self.wdt is not None:
            times += [t + self.wdt for t in self.last_hb.values() if t is not None]
        future = [t for t in times if t > now]
        return min(future) if future else None

    # --- inputs ----------------------------------------------------------------

    def handle(self, link: str, event: p.ApplianceEvent, now: float) -> list[Output]:
        if not self.powered:
            return []
        out = self._refresh(now)
        if isinstance(event, p.BadCommand):
            return [*out, Output(link, p.format_err(event.code), True)]
        verb, arg = event.verb, event.arg
        host = host_of(link)
        if verb == "PING":
            out.append(Output(link, p.format_ok("PONG"), True))
        elif verb == "STATUS":
            out.append(Output(link, p.format_ok(**self.status_fields()), True))
        elif verb == "HB":
            self.last_hb[host] = now
            out += self._refresh(now)
            out.append(Output(link, p.format_ok(), True))
        elif verb == "WDT":
            self.wdt = None if arg == p.WDT_OFF else int(arg or "0")
            self._record(now, "wdt", wdt=self.wdt, link=link)
            out += self._refresh(now)
            out.append(Output(link, p.format_ok(WDT=arg or ""), True))
        elif self.lock:
            out.append(Output(link, p.format_err(p.ERR_LOCKED), True))
        elif now < self.settle_until:
            out.append(Output(link, p.format_err(p.ERR_BUSY), True))
        elif verb == "ROUTE":
            assert arg is not None
            if arg != self.active:
                out += self._switch(arg, "COMMAND", now, link=link)
            out.append(Output(link, p.format_ok(ACTIVE=self.active), True))
        elif verb == "MODE":
            assert arg is not None
            if arg != self.mode:
                self.mode = arg
                self._record(now, "mode", mode=arg, link=link)
            out.append(Output(link, p.format_ok(MODE=self.mode), True))
            out += self._refresh(now)
        return out

    def tick(self, now: float) -> list[Output]:
        if not self.powered:
            return []
        return self._refresh(now)

    def button(self, now: float) -> list[Output]:
        """The operator pressed the front-panel button: spans to the other host."""
        if not self.powered:
            return []
        return self._switch(other(self.active), "BUTTON", now) + self._refresh(now)

    def set_lock(self, on: bool, now: float) -> list[Output]:
        if not self.powered or on == self.lock:
            return []
        self.lock = on
        self._record(now, "lock", lock=on)
        return [Output(ALL, p.format_notification(LOCK="ON" if on else "OFF"))]

    def power_off(self, now: float) -> list[Output]:
        if not self.powered:
            return []
        self.powered = False
        # De-energised relays fall back to host A at once.
        self.active = "A"
        self._record(now, "power", state="off", cause="POWEROFF")
        return []

    def power_on(self, now: float) -> list[Output]:
        if self.powered:
            return []
        self.powered = True
        self.active = "A"
        self.settle_until = now + self.relay_time
        self.last_hb = {"A": None, "B": None}
        self.hb = {h: self._hb_state(h, now) for h in p.HOSTS}
        self._record(now, "power", state="on", cause="POWERON")
        return [Output(ALL, p.format_notification(ACTIVE="A", CAUSE="POWERON"))]

    # --- internals -------------------------------------------------------------

    def _hb_state(self, host: str, now: float) -> str:
        if self.wdt is None:
            return "OFF"
        last = self.last_hb[host]
        return "OK" if last is not None and now < last + self.wdt else "LOST"

    def _switch(self, host: str, cause: str, now: float, link: str | None = None) -> list[Output]:
        self.active = host
        self.settle_until = now + self.relay_time
        extra = {"link": link} if link else {}
        self._record(now, "route", cause=cause, settle=self.relay_time, **extra)
        return [Output(ALL, p.format_notification(ACTIVE=host, CAUSE=cause))]

    def _refresh(self, now: float) -> list[Output]:
        """Heartbeat states at ``now``, then the AUTO-mode watchdog rule."""
        out: list[Output] = []
        for host in p.HOSTS:
            state = self._hb_state(host, now)
            if state != self.hb[host]:
                self.hb[host] = state
                self._record(now, "hb", host=host, hb=state)
                out.append(Output(ALL, p.format_notification(**{f"HB_{host}": state})))
        if (
            self.mode == "AUTO"
            and now >= self.settle_until
            and self.hb[self.active] == "LOST"
            and self.hb[other(self.active)] == "OK"
        ):
            out += self._switch(other(self.active), "WATCHDOG", now)
        return out

    def _record(self, now: float, event: str, cause: str | None = None, **extra: Any) -> None:
        self.log.append(
            {"mono": now, "event": event, "active": self.active, "cause": cause, **extra}
        )
