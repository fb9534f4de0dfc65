"""The metric families of the bot: names, types, label sets, isolation."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics as m
from bot.config import Config, load_config
from bot.metrics import Metrics
from tests.helpers import node_config

# attribute -> (family name as exposed, type, label names)
EXPECTED: dict[str, tuple[str, type, tuple[str, ...]]] = {
    "role": ("failoverbot_role", Gauge, ("node", "role")),
    "lease_holder": ("failoverbot_lease_holder", Gauge, ("node",)),
    "lease_epoch": ("failoverbot_lease_epoch", Gauge, ()),
    "lease_remaining": ("failoverbot_lease_remaining_seconds", Gauge, ()),
    "failovers": ("failoverbot_failovers_total", Counter, ("reason",)),
    "takeovers": ("failoverbot_takeovers_total", Counter, ("outcome",)),
    "takeover_duration": ("failoverbot_takeover_duration_seconds", Histogram, ()),
    "takeover_step_duration": ("failoverbot_takeover_step_duration_seconds", Histogram, ("step",)),
    "self_fences": ("failoverbot_self_fences_total", Counter, ("reason",)),
    "fence_overruns": ("failoverbot_fence_overruns_total", Counter, ("reason",)),
    "healthy": ("failoverbot_healthy", Gauge, ()),
    "ready": ("failoverbot_ready", Gauge, ()),
    "ami_up": ("failoverbot_ami_up", Gauge, ()),
    "ami_ping_rtt": ("failoverbot_ami_ping_rtt_seconds", Gauge, ()),
    "ami_ping": ("failoverbot_ami_ping_seconds", Histogram, ()),
    "ami_reconnects": ("failoverbot_ami_reconnects_total", Counter, ()),
    "fully_booted": ("failoverbot_asterisk_fully_booted", Gauge, ()),
    "active_channels": ("failoverbot_active_channels", Gauge, ()),
    "span_alarm": ("failoverbot_span_alarm", Gauge, ("span", "kind")),
    "test_calls": ("failoverbot_test_calls_total", Counter, ("result",)),
    "test_call_setup": ("failoverbot_test_call_setup_seconds", Histogram, ()),
    "redis_up": ("failoverbot_redis_up", Gauge, ()),
    "redis_rtt": ("failoverbot_redis_rtt_seconds", Gauge, ()),
    "peer_up": ("failoverbot_peer_up", Gauge, ()),
    "rseries_up": ("failoverbot_rseries_up", Gauge, ()),
    "rseries_active": ("failoverbot_rseries_active_host", Gauge, ("host",)),
    "rseries_disagreement": ("failoverbot_rseries_lease_disagreement", Gauge, ()),
    "drbd_role": ("failoverbot_drbd_role", Gauge, ("resource", "role")),
    "drbd_disk_state": ("failoverbot_drbd_disk_state", Gauge, ("resource", "state")),
    "vip_present": ("failoverbot_vip_present", Gauge, ()),
    "webhooks": ("failoverbot_webhooks_total", Counter, ("result",)),
    "paused": ("failoverbot_paused", Gauge, ()),
    "config_drift": ("failoverbot_config_drift", Gauge, ()),
    "build_info": ("failoverbot_build_info", Gauge, ("version", "node", "cluster")),
}


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.exposition()[0].decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def test_every_attribute_has_its_name_type_and_labels() -> None:
    metrics = Metrics(node="a", cluster="lab")
    for attr, (name, kind, labels) in EXPECTED.items():
        metric = getattr(metrics, attr)
        assert isinstance(metric, kind), attr
        # client_python keeps a counter's name without its "_total" suffix.
        exposed = metric._name + ("_total" if kind is Counter else "")
        assert exposed == name, attr
        assert tuple(metric._labelnames) == labels, attr


def test_a_fresh_bot_exports_every_family() -> None:
    metrics = Metrics(node="a", cluster="lab", drbd_resources=["r0"], spans=[1, 2])
    text = metrics.exposition()[0].decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    for attr, (name, kind, _labels) in EXPECTED.items():
        wanted = name + "_count" if kind is Histogram else name
        assert wanted in names, f"{attr}: {wanted} not exported"
    assert value(metrics, "failoverbot_role", node="a", role="starting") == 1
    assert value(metrics, "failoverbot_role", node="a", role="primary") == 0
    assert value(metrics, "failoverbot_rseries_active_host", host="B") == 0
    assert value(metrics, "failoverbot_failovers_total", reason="spans") == 0
    assert value(metrics, "failoverbot_span_alarm", span="2", kind="red") == 0
    assert value(metrics, "failoverbot_drbd_disk_state", resource="r0", state="DUnknown") == 1
    assert (
        value(metrics, "failoverbot_build_info", version=m.__version__, node="a", cluster="lab")
        == 1
    )


def test_two_instances_with_two_registries_do_not_collide() -> None:
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    one = Metrics(r1, node="a")
    two = Metrics(r2, node="b")
    one.failovers.labels(reason="health").inc()
    two.set_role("primary")
    assert value(one, "failoverbot_failovers_total", reason="health") == 1
    assert value(two, "failoverbot_failovers_total", reason="health") == 0
    assert value(one, "failoverbot_role", node="a", role="primary") == 0
    assert value(two, "failoverbot_role", node="b", role="primary") == 1
    # Without a registry each instance gets its own, never the global one.
    Metrics()
    Metrics()


def test_set_role_exports_exactly_one_role() -> None:
    metrics = Metrics(node="a")
    metrics.set_role("primary")
    metrics.set_role("demoting")
    on = [r for r in m.ROLES if value(metrics, "failoverbot_role", node="a", role=r) == 1]
    assert on == ["demoting"]
    metrics.set_role("bogus")  # ignored, not a new label value
    assert value(metrics, "failoverbot_role", node="a", role="bogus") is None
    assert value(metrics, "failoverbot_role", node="a", role="demoting") == 1


def test_span_alarms_follow_the_given_kinds() -> None:
    metrics = Metrics(spans=[1, 2])
    metrics.set_span_alarms({1: "red", 2: ["yellow", "Blue"]})
    assert value(metrics, "failoverbot_span_alarm", span="1", kind="red") == 1
    assert value(metrics, "failoverbot_span_alarm", span="1", kind="blue") == 0
    assert value(metrics, "failoverbot_span_alarm", span="2", kind="yellow") == 1
    assert value(metrics, "failoverbot_span_alarm", span="2", kind="blue") == 1
    metrics.set_span_alarms({1: None, 2: "weird"})
    assert value(metrics, "failoverbot_span_alarm", span="1", kind="red") == 0
    assert value(metrics, "failoverbot_span_alarm", span="2", kind="yellow") == 0
    assert value(metrics, "failoverbot_span_alarm", span="2", kind="weird") is None


def test_drbd_state_sets() -> None:
    metrics = Metrics(drbd_resources=["r0"])
    metrics.set_drbd("r0", role="Primary", disk_state="uptodate")
    assert value(metrics, "failoverbot_drbd_role", resource="r0", role="primary") == 1
    assert value(metrics, "failoverbot_drbd_role", resource="r0", role="unknown") == 0
    assert value(metrics, "failoverbot_drbd_disk_state", resource="r0", state="UpToDate") == 1
    assert value(metrics, "failoverbot_drbd_disk_state", resource="r0", state="DUnknown") == 0
    metrics.set_drbd("r0", disk_state="Outdated")
    assert value(metrics, "failoverbot_drbd_disk_state", resource="r0", state="UpToDate") == 0
    assert value(metrics, "failoverbot_drbd_disk_state", resource="r0", state="Outdated") == 1


def test_lease_ping_and_steps() -> None:
    metrics = Metrics(node="a")
    metrics.set_lease(held=True, epoch=7, remaining=2.5)
    assert value(metrics, "failoverbot_lease_holder", node="a") == 1
    assert value(metrics, "failoverbot_lease_epoch") == 7
    assert value(metrics, "failoverbot_lease_remaining_seconds") == 2.5
    metrics.set_lease(held=False, epoch=7, remaining=2.5)
    assert value(metrics, "failoverbot_lease_remaining_seconds") == 0
    metrics.observe_ami_ping(0.004)
    assert value(metrics, "failoverbot_ami_ping_rtt_seconds") == 0.004
    assert value(metrics, "failoverbot_ami_ping_seconds_count") == 1
    metrics.observe_step("vip", 0.3)
    metrics.observe_step("nonsense", 1.0)
    assert value(metrics, "failoverbot_takeover_step_duration_seconds_count", step="vip") == 1
    assert (
        value(metrics, "failoverbot_takeover_step_duration_seconds_count", step="nonsense") is None
    )


def test_for_config_labels_and_precreates(tmp_path: Path) -> None:
    cfg_path = node_config(
        tmp_path / "node.toml",
        cluster={"name": "lab"},
        drbd={"resources": ["r0"]},
        spans={"critical": [1, 3]},
    )
    config: Config = load_config(str(cfg_path))
    metrics = Metrics.for_config(config)
    assert value(metrics, "failoverbot_role", node="a", role="starting") == 1
    assert value(metrics, "failoverbot_span_alarm", span="3", kind="red") == 0
    assert value(metrics, "failoverbot_drbd_role", resource="r0", role="unknown") == 1
