"""The appliance state machine, with time as an argument."""

from __future__ import annotations

from rseries import protocol as p
from rseries.appliance import ALL, Appliance, Output


def cmd(a: Appliance, link: str, line: bytes, now: float) -> list[Output]:
    ev = p.parse_command_line(line)
    assert ev is not None
    return a.handle(link, ev, now)


def answer(outs: list[Output]) -> bytes:
    (resp,) = [o.data for o in outs if o.response]
    return resp


def test_route_moves_notifies_then_busy_while_settling() -> None:
    a = Appliance(0.0, relay_time=0.02)
    outs = cmd(a, "a", b"ROUTE B", 1.0)
    assert outs == [
        Output(ALL, b"! ACTIVE=B CAUSE=COMMAND\r\n"),
        Output("a", b"OK ACTIVE=B\r\n", True),
    ]
    assert answer(cmd(a, "b", b"ROUTE A", 1.019)) == b"ERR 3 BUSY\r\n"
    assert answer(cmd(a, "b", b"MODE AUTO", 1.01)) == b"ERR 3 BUSY\r\n"
    assert answer(cmd(a, "b", b"STATUS", 1.01)).startswith(b"OK ACTIVE=B ")
    assert answer(cmd(a, "b", b"ROUTE B", 1.02)) == b"OK ACTIVE=B\r\n"  # idempotent
    assert [r["event"] for r in a.log] == ["power", "route"]
    assert a.log[1]["mono"] == 1.0 and a.log[1]["active"] == "B"


def test_lock_refuses_route_and_mode() -> None:
    a = Appliance(0.0)
    assert a.set_lock(True, 1.0) == [Output(ALL, b"! LOCK=ON\r\n")]
    assert answer(cmd(a, "a", b"ROUTE B", 2.0)) == b"ERR 4 LOCKED\r\n"
    assert answer(cmd(a, "a", b"MODE AUTO", 2.0)) == b"ERR 4 LOCKED\r\n"
    assert answer(cmd(a, "a", b"PING", 2.0)) == b"OK PONG\r\n"
    a.set_lock(False, 3.0)
    assert answer(cmd(a, "a", b"ROUTE B", 3.0)) == b"OK ACTIVE=B\r\n"


def test_watchdog_expires_exactly_wdt_after_last_hb_and_auto_switches() -> None:
    a = Appliance(0.0, mode="AUTO", wdt=5)
    cmd(a, "a", b"HB", 10.0)
    cmd(a, "b", b"HB", 12.0)
    assert a.hb == {"A": "OK", "B": "OK"} and a.active == "A"
    assert a.next_deadline(12.0) == 15.0
    assert a.tick(14.999) == []
    cmd(a, "b", b"HB", 14.999)
    outs = a.tick(15.0)
    assert Output(ALL, b"! HB_A=LOST\r\n") in outs
    assert Output(ALL, b"! ACTIVE=B CAUSE=WATCHDOG\r\n") in outs
    assert a.active == "B"
    assert a.log[-1]["cause"] == "WATCHDOG" and a.log[-1]["mono"] == 15.0


def test_manual_mode_never_switches_by_itself() -> None:
    a = Appliance(0.0, mode="MANUAL", wdt=1)
    cmd(a, "b", b"HB", 0.5)
    a.tick(3.0)
    assert a.active == "A" and a.hb == {"A": "LOST", "B": "LOST"}


def test_power_cycle_drops_relays_to_a_and_is_mute_while_off() -> None:
    a = Appliance(0.0)
    cmd(a, "a", b"ROUTE B", 1.0)
    a.power_off(2.0)
    assert a.active == "A" and a.log[-1]["cause"] == "POWEROFF"
    assert cmd(a, "a", b"PING", 2.1) == []
    assert a.power_on(2.5) == [Output(ALL, b"! ACTIVE=A CAUSE=POWERON\r\n")]
    assert answer(cmd(a, "a", b"PING", 2.6)) == b"OK PONG\r\n"


def test_button() -> None:
    a = Appliance(0.0)
    assert a.button(1.0)[0] == Output(ALL, b"! ACTIVE=B CAUSE=BUTTON\r\n")
