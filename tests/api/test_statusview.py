"""The freshness rule (bot.statusview) and the status built on it (bot.bus.status).

Edge cases: a live pair, a dead node (stale, then its record expired), clock skew
between the nodes' wall clocks, a record from the future, a missing record,
Redis down (roles unknown) and the answer merged from the nodes' own answers.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from bot.bus.model import Controls, Lease, LeaseRead, NodeRecord
from bot.bus.status import build_status, merge_answers
from bot.statuscontract import json_schema
from bot.statusview import (
    CLAIMS_PRIMARY,
    DOWN,
    DOWN_WAS_PRIMARY,
    UNKNOWN,
    UNKNOWN_WAS_PRIMARY,
    status_table_html,
    view_node,
)

NOW = 1_800_000_000.0
STALE_AFTER = 4.0  # lease_ttl 3 s + renew_interval 1 s
VALIDATOR = jsonschema.Draft202012Validator(json_schema())


def view(**kw: Any):  # type: ignore[no-untyped-def]
    args: dict[str, Any] = {
        "node_id": "a",
        "reported_role": "standby",
        "written_at": NOW - 0.5,
        "holder": "b",
        "lease_epoch": 7,
        "writer_lease": {"holder": "b", "epoch": 7, "remaining": 2.5},
        "now_wall": NOW,
        "stale_after": STALE_AFTER,
        "redis_ok": True,
    }
    args.update(kw)
    return view_node(**args)


@pytest.mark.parametrize(
    ("kw", "role", "freshness", "seen"),
    [
        ({}, "standby", "live", 0.5),
        ({"written_at": NOW - 4.0}, "standby", "live", 4.0),  # the limit itself is still live
        ({"written_at": NOW - 4.01}, DOWN, "stale", 4.01),
        ({"written_at": NOW - 4.01, "redis_ok": False}, UNKNOWN, "stale", 4.01),
        ({"node_id": "b", "reported_role": "primary"}, "primary", "live", 0.5),
        # A fresh record that says primary without the lease is never shown as primary.
        ({"reported_role": "primary"}, CLAIMS_PRIMARY, "live", 0.5),
        ({"reported_role": "primary", "holder": None}, CLAIMS_PRIMARY, "live", 0.5),
        # The dead primary: its record is old.
        (
            {"node_id": "b", "reported_role": "primary", "written_at": NOW - 30},
            DOWN_WAS_PRIMARY,
            "stale",
            30.0,
        ),
        (
            {"node_id": "b", "reported_role": "primary", "written_at": NOW - 30, "redis_ok": False},
            UNKNOWN_WAS_PRIMARY,
            "stale",
            30.0,
        ),
        # Its record expired from Redis; the last-seen time outlives it.
        ({"reported_role": None, "written_at": NOW - 60}, DOWN, "missing", 60.0),
        (
            {"reported_role": None, "written_at": NOW - 60, "last_role": "primary"},
            DOWN_WAS_PRIMARY,
            "missing",
            60.0,
        ),
        ({"reported_role": None, "written_at": None}, DOWN, "missing", None),
        ({"reported_role": None, "written_at": None, "redis_ok": False}, UNKNOWN, "missing", None),
        # A writer's clock a little ahead (within the tolerance): age 0, live.
        ({"written_at": NOW + 0.8}, "standby", "live", 0.0),
        # Far in the future: no age can be trusted.
        ({"written_at": NOW + 300, "writer_lease": {"epoch": 6}}, UNKNOWN, "skewed", None),
        ({"written_at": NOW + 300}, "standby", "skewed", None),  # its lease view matches
    ],
)
def test_view_node(kw: dict[str, Any], role: str, freshness: str, seen: float | None) -> None:
    v = view(**kw)
    assert (v.role, v.freshness) == (role, freshness)
    if seen is None:
        assert v.last_seen_seconds is None
    else:
        assert v.last_seen_seconds == pytest.approx(seen)
    assert v.stale is (freshness != "live")


def test_a_skewed_record_keeps_its_role_only_when_its_lease_view_matches_the_lease() -> None:
    ahead = NOW + 300
    holder = view(node_id="b", reported_role="primary", written_at=ahead)
    assert holder.role == "primary" and holder.freshness == "skewed"
    assert holder.note and "clock skew" in holder.note
    # Written under an older epoch: nothing vouches for it.
    old = view(
        node_id="b",
        reported_role="primary",
        written_at=ahead,
        writer_lease={"holder": "b", "epoch": 6},
    )
    assert old.role == UNKNOWN
    # Even with a matching view, a non-holder that says primary is not shown primary.
    other = view(reported_role="primary", written_at=ahead)
    assert other.role == CLAIMS_PRIMARY


def record(node: str, role: str, written: float, epoch: int = 7) -> NodeRecord:
    return NodeRecord(
        id=node,
        role=role,
        healthy=True,
        ready=role == "standby",
        ready_reasons=[] if role == "standby" else ["primary"],
        epoch=epoch,
        version="1",
        settings_hash="h",
        last_seen=written,
        extra={"degraded": False},
        lease_view={"holder": "a", "epoch": epoch, "remaining": 2.0},
    )


def status(
    records: dict[str, NodeRecord],
    *,
    holder: str | None = "a",
    seen: dict[str, tuple[float, str | None]] | None = None,
    redis_ok: bool = True,
    local: NodeRecord | None = None,
) -> dict[str, Any]:
    lease = LeaseRead(
        lease=None if holder is None else Lease(holder=holder, epoch=7),
        pttl_ms=2500 if holder else None,
        sent_at=99.9,
        reply_at=100.0,
        run_id="r1",
    )
    st = build_status(
        cluster="lab",
        node_ids=["a", "b"],
        lease=lease,
        records=records,
        controls=Controls(paused=False),
        now_wall=NOW,
        now_clock=100.5,
        stale_after=STALE_AFTER,
        redis_ok=redis_ok,
        seen=seen,
        local=local,
    )
    VALIDATOR.validate(st)
    return dict(st)


def roles(st: dict[str, Any]) -> dict[str, str]:
    return {n["id"]: n["role"] for n in st["nodes"]}


def test_live_pair() -> None:
    st = status({"a": record("a", "primary", NOW - 0.3), "b": record("b", "standby", NOW - 0.9)})
    assert roles(st) == {"a": "primary", "b": "standby"}
    assert st["serving"] == ["a"]
    assert {n["id"]: n["last_seen_seconds"] for n in st["nodes"]} == {"a": 0.3, "b": 0.9}
    assert st["lease_remaining_seconds"] == 2.0
    assert st["nodes"][0]["lease_view"] == {"holder": "a", "epoch": 7, "remaining": 2.0}


def test_the_dead_old_primary_is_down_and_its_age_keeps_growing_after_expiry() -> None:
    # b took over (holds the lease); a died 6 s ago, its record not yet expired.
    recs = {"a": record("a", "primary", NOW - 6), "b": record("b", "primary", NOW - 0.2, 8)}
    st = status(recs, holder="b")
    assert roles(st) == {"a": DOWN_WAS_PRIMARY, "b": "primary"}
    assert st["serving"] == ["b"]
    dead = st["nodes"][0]
    assert dead["stale"] and dead["healthy"] is None and dead["ready"] is None
    assert dead["last_seen_seconds"] == 6.0
    # Later the record expired; the last-seen time remains.
    st = status({"b": recs["b"]}, holder="b", seen={"a": (NOW - 60, "primary")})
    assert roles(st)["a"] == DOWN_WAS_PRIMARY and st["nodes"][0]["last_seen_seconds"] == 60.0
    assert st["nodes"][0]["freshness"] == "missing"
    st = status({"b": recs["b"]}, holder="b", seen={"a": (NOW - 60, "standby")})
    assert roles(st)["a"] == DOWN


def test_redis_down_answer_marks_other_nodes_unknown_but_the_answering_node_live() -> None:
    peer = record("b", "standby", NOW - 10)  # the last copy read before Redis went away
    st = status({"b": peer}, redis_ok=False, local=record("a", "primary", 0.0))
    assert roles(st) == {"a": "primary", "b": UNKNOWN}
    assert st["nodes"][0]["last_seen_seconds"] == 0.0  # its own record: written now


def test_nobody_serving_when_the_lease_is_free() -> None:
    st = status({"a": record("a", "standby", NOW - 0.5)}, holder=None)
    assert st["serving"] == [] and st["holder"] is None
    assert roles(st) == {"a": "standby", "b": DOWN}


def test_merged_answers_each_node_speaks_for_itself() -> None:
    # a (primary, holds its promise) and b (standby) answer while Redis is down; b's copy
    # of a is old and says unknown, a's copy of b likewise.
    a_view = status(
        {"b": record("b", "standby", NOW - 20)},
        redis_ok=False,
        local=record("a", "primary", 0.0),
    )
    a_view["reported_by"] = "a"
    b_view = status(
        {"a": record("a", "primary", NOW - 20)},
        redis_ok=False,
        local=record("b", "standby", 0.0),
    )
    b_view["reported_by"] = "b"
    merged = merge_answers([("b", b_view), ("a", a_view)])
    assert roles(merged) == {"a": "primary", "b": "standby"}
    assert merged["serving"] == ["a"] and merged["holder"] == "a"
    assert merged["source"] == "peers b, a"
    VALIDATOR.validate(merged)


def test_merged_answers_two_nodes_that_claim_the_lease_both_show() -> None:
    answers = []
    for me in ("a", "b"):
        st = status({}, holder=me, redis_ok=False, local=record(me, "primary", 0.0))
        st["reported_by"] = me
        answers.append((me, st))
    merged = merge_answers(answers)
    assert merged["serving"] == ["a", "b"]


def test_plain_table_escapes_and_shows_roles() -> None:
    st = status({"a": record("a", "primary", NOW - 0.3)})
    st["nodes"][1]["health_reasons"] = ["<script>alert(1)</script>"]
    text = status_table_html(st)
    assert '<tr data-node="a" data-role="primary">' in text
    assert '<tr data-node="b" data-role="down">' in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "never" in text
