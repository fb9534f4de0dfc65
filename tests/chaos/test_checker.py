"""The chaos checker's own tests: it must fail on a lost write and on a dual primary."""

from __future__ import annotations

import itertools

from harness.checker import Interval, Observations
from tests.chaos.checker import FaultRecord, check_chaos, failovers_per_fault
from tests.chaos.nemesis import KINDS, schedule
from tests.e2e.writes import Ack, Promotion

WINDOW = (0.0, 100.0)


def serving(node: str, start: float, end: float) -> Observations:
    """One node with the floating IP, a booted Asterisk and DRBD Primary."""
    iv = [Interval(start, end, node)]
    return Observations(
        vip=list(iv), asterisk_running=list(iv), asterisk_booted=list(iv), drbd_primary=list(iv)
    )


def clean_history() -> tuple[Observations, list[Ack], list[Promotion]]:
    obs = serving("a", 1.0, 50.0)
    later = serving("b", 52.0, 100.0)
    for name in ("vip", "asterisk_running", "asterisk_booted", "drbd_primary"):
        getattr(obs, name).extend(getattr(later, name))
    acks = [Ack("w1", "a", 1, 10.0), Ack("w2", "a", 1, 20.0), Ack("w3", "b", 1, 60.0)]
    promotions = [
        Promotion(1.0, "a", 1, frozenset()),
        Promotion(52.0, "b", 1, frozenset({"w1", "w2"})),
    ]
    return obs, acks, promotions


def test_a_clean_history_passes() -> None:
    obs, acks, promotions = clean_history()
    report = check_chaos(
        seed=7,
        window=WINDOW,
        obs=obs,
        acks=acks,
        promotions=promotions,
        final_data={"b": frozenset({"w1", "w2", "w3"})},
        faults=[FaultRecord(49.0, 55.0, "host_death", "a")],
    )
    assert report.ok, report.table()
    assert report.failovers == {"host_death": 1}
    assert round(report.longest_outage, 3) == 2.0 and round(report.total_outage, 3) == 2.0
    assert "seed" in report.table() and "PASS" in report.table()


def test_a_synthetic_lost_write_fails() -> None:
    obs, acks, promotions = clean_history()
    # b was promoted without w2, which a had acknowledged before.
    promotions[1] = Promotion(52.0, "b", 1, frozenset({"w1"}))
    report = check_chaos(
        seed=7,
        window=WINDOW,
        obs=obs,
        acks=acks,
        promotions=promotions,
        final_data={"b": frozenset({"w1", "w3"})},
        faults=[],
    )
    assert not report.ok
    assert [w.ack.id for w in report.lost] == ["w2"]
    assert "FAIL" in report.table()


def test_a_write_missing_only_from_the_final_data_fails() -> None:
    obs, acks, promotions = clean_history()
    report = check_chaos(
        seed=7, window=WINDOW, obs=obs, acks=acks, promotions=promotions,
        final_data={"b": frozenset({"w1", "w2"})}, faults=[],
    )  # fmt: skip
    assert [w.ack.id for w in report.lost] == ["w3"]


def test_a_synthetic_dual_primary_fails() -> None:
    for resource in ("vip", "asterisk_running", "drbd_primary"):
        obs, acks, promotions = clean_history()
        getattr(obs, resource).append(Interval(30.0, 31.0, "b"))  # b too, while a held it
        report = check_chaos(
            seed=7, window=WINDOW, obs=obs, acks=acks, promotions=promotions,
            final_data={"b": frozenset({"w1", "w2", "w3"})}, faults=[],
        )  # fmt: skip
        assert not report.ok, resource
        assert report.dual_primaries and report.dual_primaries[0].nodes == ("a", "b")


def test_spans_left_on_a_node_that_lost_the_lease_fail() -> None:
    obs, acks, promotions = clean_history()
    obs.lease = [Interval(1.0, 50.0, "a"), Interval(51.0, 100.0, "b")]
    obs.routes = [Interval(0.0, 70.0, "a"), Interval(70.0, 100.0, "b")]  # 19 s late
    report = check_chaos(
        seed=7, window=WINDOW, obs=obs, acks=acks, promotions=promotions,
        final_data={"b": frozenset({"w1", "w2", "w3"})}, faults=[],
    )  # fmt: skip
    assert not report.ok
    assert report.dual_primaries[0].resource == "R-Series spans"


def test_failovers_are_put_down_to_the_fault_before_them() -> None:
    primary = [Interval(0, 10, "a"), Interval(12, 20, "b"), Interval(21, 30, "a")]
    faults = [FaultRecord(9, 11, "bot_kill", "a"), FaultRecord(19, 25, "switchover", None)]
    assert failovers_per_fault(primary, faults) == {"bot_kill": 1, "switchover": 1}


def test_schedule_is_a_function_of_the_seed() -> None:
    assert schedule(14, 300) == schedule(14, 300)
    assert schedule(14, 300) != schedule(15, 300)
    faults = schedule(14, 300)
    assert all(f.kind in KINDS and f.at + f.hold <= 300 for f in faults)
    assert all(b.at >= a.at + a.hold for a, b in itertools.pairwise(faults))
