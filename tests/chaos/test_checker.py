"""The chaos checker's own tests: it must fail on a lost write and on a dual primary, and
on a run that proves nothing (no fault, no write, faults dropped, a blind recorder) or in
which the cluster did not serve (an outage beyond its bound after a fault healed, no
recovery at the end)."""

from __future__ import annotations

import itertools
from typing import Any

from harness.checker import Interval, Observations, RecorderHealth
from tests.chaos.checker import (
    Bounds,
    Breach,
    ChaosReport,
    FaultRecord,
    check_chaos,
    failovers_per_fault,
    liveness_breaches,
)
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


# ----------------------------------------------------------------------------- nothing proven


def clean_report(**kw: Any) -> ChaosReport:
    obs, acks, promotions = clean_history()
    args: dict[str, Any] = {
        "seed": 7,
        "window": WINDOW,
        "obs": obs,
        "acks": acks,
        "promotions": promotions,
        "final_data": {"b": frozenset({"w1", "w2", "w3"})},
        "faults": [FaultRecord(49.0, 55.0, "host_death", "a")],
    }
    args.update(kw)
    return check_chaos(**args)


def test_no_fault_applied_fails() -> None:
    report = clean_report(faults=[])
    assert not report.ok
    assert "no fault was applied" in report.table() and "FAIL" in report.table()


def test_fewer_faults_applied_than_drawn_fails_and_says_why() -> None:
    report = clean_report(
        not_applied=[("bot_kill on the standby for 3.0 s", "RuntimeError('no running bot on b')")]
    )
    assert not report.ok
    problem = next(p for p in report.problems() if "faults applied" in p)
    assert "1 of 2 faults applied" in problem and "no running bot on b" in problem


def test_no_acknowledged_write_fails() -> None:
    report = clean_report(acks=[], promotions=[], final_data={"b": frozenset()})
    assert not report.lost
    assert report.problems() == ["no write was acknowledged: nothing was shown to be kept"]


def test_no_recovery_at_the_end_fails() -> None:
    report = clean_report(recovered=False)
    assert not report.ok and "did not recover" in report.table()


def test_a_recorder_that_erred_or_went_blind_fails_the_run() -> None:
    obs, _, _ = clean_history()
    obs.recorders = [RecorderHealth("pid-sampler", 10, (), 2.0, 0.5)]
    report = clean_report(obs=obs)
    assert not report.ok
    assert report.problems() == [report.problems()[0]] and "pid-sampler" in report.problems()[0]


def test_an_outage_beyond_the_bound_after_a_healed_fault_fails_naming_the_fault() -> None:
    # The switchover is requested at 40 s and healed (nothing left to undo) at 42 s; a
    # stops serving at 45 s and nobody serves until 80 s: the endless outage of a
    # switchover to a node whose takeover fails.
    obs = serving("a", 1.0, 45.0)
    later = serving("a", 80.0, 100.0)
    for name in ("vip", "asterisk_running", "asterisk_booted", "drbd_primary"):
        getattr(obs, name).extend(getattr(later, name))
    acks = [Ack("w1", "a", 1, 10.0)]
    report = check_chaos(
        seed=3, window=WINDOW, obs=obs, acks=acks,
        promotions=[Promotion(1.0, "a", 1, frozenset())],
        final_data={"a": frozenset({"w1"})},
        faults=[FaultRecord(40.0, 42.0, "switchover_failing", "b")],
    )  # fmt: skip
    assert not report.ok
    [breach] = report.breaches
    assert (breach.start, breach.end) == (45.0, 80.0)
    assert breach.bound == Bounds().bound("switchover_failing")
    assert "switchover_failing on b at +40.0 s" in report.table()


def test_an_outage_while_the_fault_lasts_or_within_the_bound_passes() -> None:
    obs = serving("a", 1.0, 30.0)
    later = serving("b", 30.0 + 6.0 + Bounds().bound("bot_stall") - 0.1, 100.0)
    for name in ("vip", "asterisk_running", "asterisk_booted", "drbd_primary"):
        getattr(obs, name).extend(getattr(later, name))
    report = check_chaos(
        seed=3, window=WINDOW, obs=obs, acks=[Ack("w1", "a", 1, 10.0)],
        promotions=[Promotion(1.0, "a", 1, frozenset())],
        final_data={"a": frozenset({"w1"}), "b": frozenset({"w1"})},
        faults=[FaultRecord(30.0, 36.0, "bot_stall", "a")],
    )  # fmt: skip
    assert report.ok, report.table()
    assert report.breaches == []


def test_an_outage_cut_short_by_the_next_fault_still_fails_once_past_its_bound() -> None:
    primary = [Interval(0.0, 10.0, "a"), Interval(60.0, 100.0, "a")]
    faults = [
        FaultRecord(8.0, 9.0, "redis_restart", None),
        FaultRecord(40.0, 45.0, "bot_kill", "a"),
    ]
    [breach] = liveness_breaches(primary, faults, 100.0, Bounds())
    assert (breach.start, breach.end) == (10.0, 40.0) and "redis_restart" in breach.cause
    # A shorter stretch before the next fault cannot be judged; after that one, it is.
    later = [faults[0], FaultRecord(12.0, 13.0, "bot_kill", "a")]
    assert liveness_breaches(primary, later, 100.0, Bounds()) == [
        Breach(
            13.0,
            60.0,
            Bounds().bound("bot_kill"),
            "bot_kill on a at +12.0 s",
            "at +10.0 s, after redis_restart at +8.0 s",
        )
    ]


def test_a_writer_that_stopped_writing_fails_the_run() -> None:
    report = clean_report(client_problems=["the writer stopped: OSError: boom"])
    assert report.problems() == ["recorder: the writer stopped: OSError: boom"]


def test_a_breach_says_when_its_outage_began() -> None:
    primary = [Interval(0.0, 10.0, "a"), Interval(60.0, 100.0, "a")]
    faults = [
        FaultRecord(9.0, 12.0, "kill_hang", "a"),
        FaultRecord(14.0, 20.0, "bot_stall", "b"),
    ]
    [breach] = liveness_breaches(primary, faults, 100.0, Bounds())
    assert (breach.start, breach.end) == (20.0, 60.0) and "bot_stall on b" in breach.cause
    assert breach.began == "at +10.0 s, after kill_hang on a at +9.0 s"
    assert "the outage began at +10.0 s, after kill_hang" in breach.describe(0.0)
