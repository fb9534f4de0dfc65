"""The checker fails on synthetic overlaps and outages, and the recorders read what happened."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from harness.checker import (
    Allowance,
    Interval,
    Observations,
    RecorderHealth,
    check,
    check_available,
    check_exclusive,
    check_follows,
    held_together,
    merge,
)
from harness.recorders import (
    PidSampler,
    PollingSampler,
    RedisKeySampler,
    asterisk_lifetimes,
    drbd_primaries,
    read_jsonl,
    rseries_routes,
)
from tests.helpers import RedisServer, wait_for_sync

T0 = 1000.0


def iv(node: str, start: float, end: float) -> Interval:
    return Interval(T0 + start, T0 + end, node)


def healthy_failover() -> Observations:
    """A serves until 10 s, B takes over and serves from 12 s: a clean, back-to-back history."""
    return Observations(
        vip=[iv("a", 0, 10.0), iv("b", 10.0, 30)],
        asterisk_running=[iv("a", 0, 10.2), iv("b", 10.2, 30)],
        asterisk_booted=[iv("a", 0.5, 10.0), iv("b", 12.0, 30)],
        drbd_primary=[iv("a", 0, 10.3), iv("b", 10.3, 30)],
        routes=[iv("a", 0, 10.1), iv("b", 10.1, 30)],
        lease=[iv("a", 0, 9.9), iv("b", 10.0, 30)],
    )


def allowance(max_outage: float = 3.0) -> Allowance:
    return Allowance(window=(T0 + 1, T0 + 30), max_outage=max_outage, route_tolerance=0.5)


def test_clean_failover_passes() -> None:
    verdict = check(healthy_failover(), allowance())
    assert verdict.ok, verdict.report()


def test_vip_overlap_of_50ms_fails() -> None:
    obs = healthy_failover()
    obs.vip = [iv("a", 0, 10.05), iv("b", 10.0, 30)]
    verdict = check(obs, allowance())
    assert [(v.kind, v.resource, v.nodes) for v in verdict.violations] == [
        ("overlap", "floating IP", ("a", "b"))
    ]
    assert verdict.violations[0].duration == pytest.approx(0.05)
    assert "floating IP" in verdict.report() and "50.0 ms" in verdict.report()
    with pytest.raises(AssertionError, match="overlap of floating IP"):
        verdict.assert_ok()


def test_asterisk_overlap_of_50ms_fails() -> None:
    obs = healthy_failover()
    obs.asterisk_running = [iv("a", 0, 10.25), iv("b", 10.2, 30)]
    verdict = check(obs, allowance())
    assert [(v.kind, v.resource) for v in verdict.violations] == [("overlap", "Asterisk")]
    assert verdict.violations[0].duration == pytest.approx(0.05)


def test_drbd_double_primary_fails() -> None:
    obs = healthy_failover()
    obs.drbd_primary = [iv("a", 0, 10.3), iv("b", 10.29, 30)]
    assert [v.resource for v in check(obs, allowance()).violations] == ["DRBD Primary"]


def test_sampling_tolerance_forgives_less_than_one_period_only() -> None:
    overlap_10ms = [iv("a", 0, 10.01), iv("b", 10.0, 30)]
    overlap_50ms = [iv("a", 0, 10.05), iv("b", 10.0, 30)]
    assert check_exclusive("floating IP", overlap_10ms, tolerance=0.02).ok
    assert not check_exclusive("floating IP", overlap_50ms, tolerance=0.02).ok
    assert not check_exclusive("floating IP", overlap_10ms).ok


def test_back_to_back_and_same_node_intervals_pass() -> None:
    history = [iv("a", 0, 1), iv("b", 1, 2), iv("a", 2, 3), iv("a", 2.5, 4), iv("b", 4, 5)]
    assert check_exclusive("Asterisk", history).ok


def test_overlap_outside_the_window_is_ignored_only_if_asked() -> None:
    history = [iv("a", 0, 1.05), iv("b", 1, 2)]
    assert not check_exclusive("floating IP", history).ok
    assert check_exclusive("floating IP", history, window=(T0 + 1.5, T0 + 3)).ok


def test_outage_longer_than_allowed_fails() -> None:
    verdict = check(healthy_failover(), allowance(max_outage=1.5))
    assert [(v.kind, v.resource) for v in verdict.violations] == [("outage", "working primary")]
    outage = verdict.violations[0]
    # The VIP moved at 10 s, B's Asterisk was fully booted at 12 s: 2 s without a primary.
    assert (outage.start - T0, outage.end - T0) == pytest.approx((10.0, 12.0))


def test_primary_needs_vip_and_booted_asterisk_on_the_same_node() -> None:
    vip = [iv("a", 0, 10)]
    booted = [iv("b", 0, 10)]
    assert held_together(vip, booted) == []
    verdict = check_available(held_together(vip, booted), window=(T0, T0 + 10), max_outage=5)
    assert [v.kind for v in verdict.violations] == ["outage"]


def test_outage_at_the_edges_of_the_window_counts() -> None:
    primary = [iv("a", 2, 8)]
    verdict = check_available(primary, window=(T0, T0 + 10), max_outage=1.5)
    assert [(round(v.start - T0, 3), round(v.end - T0, 3)) for v in verdict.violations] == [
        (0.0, 2.0),
        (8.0, 10.0),
    ]
    with pytest.raises(ValueError, match="finite"):
        check_available(primary, window=(T0, math.inf), max_outage=1)


def test_spans_must_follow_the_lease_within_tolerance() -> None:
    lease = [iv("a", 0, 10), iv("b", 11, 30)]
    prompt = [iv("a", 0, 11.3), iv("b", 11.3, 30)]
    late = [iv("a", 0, 12.5), iv("b", 12.5, 30)]
    assert check_follows("R-Series spans", prompt, lease, tolerance=0.5).ok
    verdict = check_follows("R-Series spans", late, lease, tolerance=0.5)
    assert [(v.kind, round(v.duration, 3)) for v in verdict.violations] == [("follow", 1.5)]
    assert "a<>b" in str(verdict.violations[0])
    # Nobody held the lease from 10 to 11: spans left on the old primary is no disagreement.
    assert check_follows("R-Series spans", [iv("a", 0, 11)], lease, tolerance=0).ok


def test_missing_lease_history_is_noted_not_failed() -> None:
    obs = healthy_failover()
    obs.lease = None
    verdict = check(obs, allowance())
    assert verdict.ok and "not checked" in verdict.report()


def test_invalid_intervals_are_refused() -> None:
    with pytest.raises(ValueError, match="ends before"):
        Interval(2.0, 1.0, "a")
    assert merge([iv("a", 0, 1), iv("a", 1, 2), iv("b", 0, 0)]) == [iv("a", 0, 2)]


# --- recorders -------------------------------------------------------------------------


def write_jsonl(path: Path, records: list[dict[str, object]], torn: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + torn)
    return path


def test_rseries_log_becomes_route_intervals(tmp_path: Path) -> None:
    log = write_jsonl(
        tmp_path / "rseries.jsonl",
        [
            {"t": 1.0, "mono": 10.0, "event": "start", "active": "A"},
            {"t": 2.0, "mono": 11.0, "event": "command", "line": "PING"},
            {"t": 3.0, "mono": 12.0, "event": "route", "active": "B"},
            {"t": 4.0, "mono": 12.5, "event": "route", "active": "B"},
        ],
        torn='{"t": 5.0, "mo',
    )
    assert rseries_routes(log, end=20.0) == [Interval(10, 12, "a"), Interval(12, 20, "b")]


def test_drbd_log_becomes_primary_intervals(tmp_path: Path) -> None:
    log = write_jsonl(
        tmp_path / "drbd.jsonl",
        [
            {"mono": 1.0, "node": "a", "role": "Primary"},
            {"mono": 5.0, "node": "a", "role": "Secondary"},
            {"mono": 5.5, "node": "b", "role": "Primary"},
        ],
    )
    assert drbd_primaries(log, end=9.0) == [Interval(1, 5, "a"), Interval(5.5, 9, "b")]
    write_jsonl(tmp_path / "bad.jsonl", [{"mono": 1.0, "role": "Primary"}])
    with pytest.raises(ValueError, match="'node'"):
        drbd_primaries(tmp_path / "bad.jsonl")


def test_bad_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text('{"mono": 1}\nnot json\n{"mono": 2}\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:2"):
        read_jsonl(tmp_path / "x.jsonl")
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_asterisk_log_with_a_killed_simulator_closes_at_its_death(tmp_path: Path) -> None:
    log = write_jsonl(
        tmp_path / "ami-a.jsonl",
        [
            {"mono": 1.0, "event": "start", "pid": 100},
            {"mono": 1.5, "event": "fully_booted", "pid": 100},
            {"mono": 4.0, "event": "shutdown", "pid": 100},
            {"mono": 4.2, "event": "exit", "pid": 100},
            {"mono": 6.0, "event": "start", "pid": 200},
            {"mono": 6.5, "event": "fully_booted", "pid": 200},
        ],
    )
    history = asterisk_lifetimes(log, "a", deaths={200: 8.0}, end=20.0)
    assert history.running == [Interval(1, 4.2, "a"), Interval(6, 8, "a")]
    assert history.booted == [Interval(1.5, 4, "a"), Interval(6.5, 8, "a")]
    still_running = asterisk_lifetimes(log, "a", end=20.0)
    assert still_running.running[-1] == Interval(6, 20, "a")


def test_pid_sampler_sees_a_sigkilled_process_die_within_a_few_periods(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "a.pid").write_text(f"{proc.pid}\n")
        with PidSampler({"a": tmp_path / "a.pid", "b": tmp_path / "b.pid"}) as sampler:
            wait_for_sync(lambda: sampler.holders() == {"a"}, 5, "pid sampler to see a")
            proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            # Not reaped yet: a zombie must already count as dead.
            wait_for_sync(lambda: proc.pid in sampler.deaths, 5, "pid sampler to see death")
            assert sampler.holders() == set()
            assert sampler.deaths[proc.pid] - killed < 0.1
            intervals = sampler.intervals()
        assert [i.node for i in intervals] == ["a"]
        assert intervals[0].end == sampler.deaths[proc.pid]
        assert sampler.max_gap < 0.1
    finally:
        proc.kill()
        proc.wait()


def test_polling_sampler_records_probe_errors_and_keeps_going() -> None:
    calls = {"n": 0}

    def probe() -> set[str]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("probe broke")
        return {"a"} if calls["n"] < 5 else {"b"}

    with PollingSampler(probe, period=0.005) as sampler:
        wait_for_sync(lambda: sampler.holders() == {"b"}, 5, "sampler to see b")
        intervals = sampler.intervals()
    assert sampler.errors == ["OSError: probe broke"]
    assert [i.node for i in intervals] == ["a", "b"]
    assert intervals[0].end == intervals[1].start


def test_redis_key_sampler_follows_the_holder(redis_server: RedisServer) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    key = "failover:{lab}:leader"

    def parse(value: bytes | None) -> str | None:
        return json.loads(value)["node"] if value else None

    try:
        with RedisKeySampler(redis_server.url, key, parse) as sampler:
            client.set(key, json.dumps({"node": "a", "epoch": 1}))
            wait_for_sync(lambda: sampler.holders() == {"a"}, 5, "lease a")
            client.delete(key)
            wait_for_sync(lambda: sampler.holders() == set(), 5, "lease free")
            client.set(key, json.dumps({"node": "b", "epoch": 2}))
            wait_for_sync(lambda: sampler.holders() == {"b"}, 5, "lease b")
            intervals = sampler.intervals()
        assert [i.node for i in intervals] == ["a", "b"]
        assert intervals[0].end < intervals[1].start
    finally:
        client.close()


def test_timeline_shows_every_history_relative_to_t0() -> None:
    text = healthy_failover().timeline(T0)
    assert "vip       a[+0.000,+10.000), b[+10.000,+30.000)" in text
    assert "lease     a[+0.000,+9.900)" in text


# ----------------------------------------------------------------------------- the witnesses


def test_a_recorder_with_probe_errors_fails_the_verdict() -> None:
    health = RecorderHealth("vip-sampler", 100, ("OSError: netlink broke",), 0.01, 0.5)
    verdict = check(Observations(recorders=[health]), Allowance())
    assert not verdict.ok
    assert verdict.violations[0].kind == "recorder"
    assert "netlink broke" in verdict.report()


def test_a_recorder_blind_for_longer_than_its_tolerance_fails_the_verdict() -> None:
    health = RecorderHealth("pid-sampler", 100, (), 0.8, 0.5)
    verdict = check(Observations(recorders=[health]), Allowance())
    assert [v.resource for v in verdict.violations] == ["pid-sampler"]
    assert "800 ms" in verdict.report() and "invisible" in verdict.report()


def test_the_overlap_tolerance_is_the_samplers_real_gap_not_a_quiet_machine_number() -> None:
    # A 150 ms overlap of the floating IP with a sampler that really sampled every 10 ms:
    # a real dual holder, whatever the caller's floor.
    obs = Observations(vip=[iv("a", 0, 10), iv("b", 9.85, 20)], sample_gaps={"vip": 0.01})
    assert not check(obs, Allowance(sample_tolerance=0.05)).ok
    # The same history from a sampler that was blind for 200 ms cannot tell: within its
    # error, and the sampler's health (its gap against its tolerance) judges it instead.
    loose = Observations(vip=obs.vip, sample_gaps={"vip": 0.2})
    assert check(loose, Allowance(sample_tolerance=0.05)).ok
    blind = RecorderHealth("vip-sampler", 50, (), 0.2, 0.1)
    assert not check(replace(loose, recorders=[blind]), Allowance(sample_tolerance=0.05)).ok


def test_a_sampler_that_stops_sampling_fails_assert_safe(tmp_path: Path) -> None:
    """Seeded bug in the witness: the VIP sampler's probe hangs (it stops sampling) while
    the floating IP moves to a second node; assert_safe must fail, not pass on silence."""
    from harness.cluster import Cluster

    hang = threading.Event()
    release = threading.Event()
    calls = {"n": 0}

    def probe() -> set[str]:
        calls["n"] += 1
        if calls["n"] > 3:
            hang.set()
            release.wait(30)
        return {"a"}

    cluster = Cluster(tmp_path / "c", None)
    sampler = PollingSampler(probe, period=0.005, name="vip-sampler").start()
    cluster.vip_sampler = sampler  # type: ignore[assignment]
    try:
        wait_for_sync(hang.is_set, 5, "the probe to hang")
        tolerance = cluster.recorder_tolerance()
        wait_for_sync(lambda: sampler.gap() > tolerance, 5, "the gap to pass the tolerance")
        with pytest.raises(AssertionError, match="vip-sampler: gap of"):
            cluster.assert_safe(Allowance(sample_tolerance=0.05))
    finally:
        release.set()
        sampler.stop()


def test_a_sampler_that_never_sampled_has_an_endless_gap() -> None:
    sampler = PollingSampler(lambda: {"a"}, name="idle")
    assert sampler.gap() == math.inf
    problems = sampler.health(0.5).problems()
    assert problems[0] == "took no sample" and "gap of inf ms" in problems[1]


def test_a_role_read_that_fails_is_an_error_not_a_pass(tmp_path: Path) -> None:
    from harness.cluster import Cluster, read_role

    cluster = Cluster(tmp_path / "c", None)
    node = cluster.nodes["a"]  # no bot runs: its API does not answer
    assert node.role() is None  # the lab's lenient read: "not primary" by accident
    with pytest.raises(AssertionError, match="role is unknown"):
        read_role(node)
