"""The line codec: table, parsing, framing, resync, and arbitrary input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rseries import protocol as p


def events(codec: p.HostCodec | p.ApplianceCodec) -> list[object]:
    out = []
    while not isinstance(ev := codec.next_event(), p.NeedData):
        out.append(ev)
    return out


def test_encode_every_command_in_the_table() -> None:
    assert p.encode(p.ping()) == b"PING\r\n"
    assert p.encode(p.status()) == b"STATUS\r\n"
    assert p.encode(p.route("b")) == b"ROUTE B\r\n"
    assert p.encode(p.mode("auto")) == b"MODE AUTO\r\n"
    assert p.encode(p.wdt(5)) == b"WDT 5\r\n"
    assert p.encode(p.wdt(None)) == b"WDT OFF\r\n"
    assert p.encode(p.hb()) == b"HB\r\n"


@pytest.mark.parametrize(
    "bad", [p.Command("FOO"), p.route("C"), p.wdt(0), p.wdt(61), p.Command("PING", "X")]
)
def test_encode_refuses_what_the_table_does_not_allow(bad: p.Command) -> None:
    with pytest.raises(ValueError):
        p.encode(bad)


def test_status_answer_any_key_order_unknown_keys_ignored() -> None:
    c = p.HostCodec()
    c.receive_data(
        b"OK FW=2.1.0 LOCK=OFF HB_B=LOST NEW=1 ACTIVE=A MODE=AUTO WDT=5 HB_A=OK SPANS=8\r\n"
    )
    (ev,) = events(c)
    assert isinstance(ev, p.OkResponse) and ev.answers(p.status())
    state = p.ApplianceState.from_fields(ev.fields)
    assert state == p.ApplianceState("A", "auto", 5, "OK", "LOST", False, 8, "2.1.0")


def test_answers_are_matched_to_their_command() -> None:
    c = p.HostCodec()
    c.receive_data(b"OK PONG\r\nOK ACTIVE=B\r\nOK\r\n")
    pong, active, bare = events(c)
    assert isinstance(pong, p.OkResponse) and pong.answers(p.ping())
    assert not pong.answers(p.status())
    assert isinstance(active, p.OkResponse) and active.answers(p.route("B"))
    assert not active.answers(p.mode("auto"))
    assert isinstance(bare, p.OkResponse) and bare.answers(p.hb())


@pytest.mark.parametrize("eol", [b"\r\n", b"\n", b"\r"])
def test_every_line_end(eol: bytes) -> None:
    c = p.HostCodec()
    c.receive_data(b"ERR 3 BUSY" + eol + b"! ACTIVE=B CAUSE=WATCHDOG" + eol)
    err, note = events(c)
    assert err == p.ErrResponse(3, "BUSY", "ERR 3 BUSY")
    assert isinstance(note, p.Notification)
    assert (note.active, note.cause) == ("B", "WATCHDOG")


def test_split_anywhere() -> None:
    c = p.HostCodec()
    data = b"! HB_A=LOST\r\nOK MODE=MANUAL\r\n"
    got: list[object] = []
    for i in range(len(data)):
        c.receive_data(data[i : i + 1])
        got += events(c)
    assert [type(e) for e in got] == [p.Notification, p.OkResponse]
    assert got[0].fields == {"HB_A": "LOST"}  # type: ignore[attr-defined]


def test_garbage_is_skipped_and_noise_bytes_dropped() -> None:
    c = p.HostCodec()
    c.receive_data(b"\x00\xff\x13zz top\r\n\xfe\x00OK PONG\r\nERR x\r\n")
    evs = events(c)
    assert isinstance(evs[0], p.LineError) and evs[0].reason == "garbage"
    assert isinstance(evs[1], p.OkResponse) and evs[1].words == ("PONG",)
    assert isinstance(evs[2], p.LineError)


def test_over_long_line_is_an_error_then_resync() -> None:
    c = p.HostCodec()
    c.receive_data(b"X" * 200)
    assert events(c) == []
    c.receive_data(b"Y" * 100 + b"OK ACTIVE=A\r\n")  # the tail of the long line is skipped
    c.receive_data(b"OK ACTIVE=B\r\n")
    evs = events(c)
    assert isinstance(evs[0], p.LineError) and evs[0].reason == "too_long"
    assert evs[1:] == [p.OkResponse((), {"ACTIVE": "B"}, "OK ACTIVE=B")]
    assert c.buffered == 0


def test_exactly_max_line_is_accepted() -> None:
    c = p.ApplianceCodec()
    c.receive_data(b"PING" + b" " * (p.MAX_LINE - 4) + b"\r\n")
    assert events(c) == [p.Command("PING")]
    c.receive_data(b"PING" + b" " * (p.MAX_LINE - 3) + b"\r\nping\n")
    first, second = events(c)
    assert isinstance(first, p.BadCommand) and first.code == p.ERR_TOO_LONG
    assert second == p.Command("PING")


def test_appliance_side_errors() -> None:
    c = p.ApplianceCodec()
    c.receive_data(b"route b\r\nFLY\r\nROUTE C\r\nWDT 61\r\nwdt off\r\nMODE AUTO X\r\n\r\n")
    evs = events(c)
    assert evs[0] == p.Command("ROUTE", "B")
    assert [e.code for e in evs[1:4]] == [1, 2, 2]  # type: ignore[union-attr]
    assert evs[4] == p.Command("WDT", "OFF")
    assert isinstance(evs[5], p.BadCommand) and evs[5].code == 2
    assert len(evs) == 6  # the empty line (a resync) gets no answer


def test_state_updates_from_notifications() -> None:
    s = p.ApplianceState("A", "manual", None, "OFF", "OFF", False)
    s = s.updated({"ACTIVE": "B", "CAUSE": "BUTTON"}).updated({"LOCK": "ON"})
    s = s.updated({"WDT": "5"}).updated({"HB_A": "LOST"}).updated({"ACTIVE": "Q"})
    assert (s.active, s.lock, s.watchdog, s.hb_a) == ("B", True, 5, "LOST")
    assert s.updated({"WDT": "OFF"}).watchdog is None


HOST_EVENTS = (p.OkResponse, p.ErrResponse, p.Notification, p.LineError)
APPLIANCE_EVENTS = (p.Command, p.BadCommand)
stream = st.lists(
    st.one_of(
        st.binary(max_size=600),
        st.sampled_from([b"\r", b"\n", b"\r\n", b"OK ", b"ERR 3 ", b"! ACTIVE=", b"=", b" "]),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(stream)
def test_any_bytes_give_only_codec_events_and_bounded_memory(chunks: list[bytes]) -> None:
    host, appl = p.HostCodec(), p.ApplianceCodec()
    for chunk in chunks:
        for codec, kinds in ((host, HOST_EVENTS), (appl, APPLIANCE_EVENTS)):
            codec.receive_data(chunk)
            assert codec.buffered <= p.MAX_LINE
            for ev in events(codec):
                assert isinstance(ev, kinds)
            assert codec.pending == 0
    # Whatever came before, a line end and a good line are understood.
    host.receive_data(b"\r\nOK PONG\r\n")
    assert events(host)[-1] == p.OkResponse(("PONG",), {}, "OK PONG")
    appl.receive_data(b"\r\nPING\r\n")
    assert events(appl)[-1] == p.Command("PING")
