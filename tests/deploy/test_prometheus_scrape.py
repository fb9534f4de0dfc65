"""A real Prometheus scrapes the bot; the dashboard's and the alerts' queries run on it."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bot.metrics import Metrics
from tests.deploy.conftest import REPO, SCRAPE_JOB, Prometheus, ScrapeTarget

DASHBOARD = REPO / "grafana" / "failover-bot.json"
METRIC_NAME = re.compile(r"\bfailoverbot_[a-z0-9_]+\b")
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")

# Grafana's variables, replaced the way Grafana would before sending a query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    '=~"$instance"': '=~".+"',
    '="$cluster"': '="lab"',
}


def grafana_substitute(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unreplaced Grafana variable in {expr!r}"
    return expr


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(_panels(panel.get("panels", [])))
    return out


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            where = f"panel {panel['title']!r} {target['refId']}"
            queries.append((where, grafana_substitute(target["expr"])))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = LABEL_VALUES.match(variable["query"])
        assert match, f"variable {variable['name']}: only label_values() queries are checked"
        queries.append((f"variable {variable['name']}", grafana_substitute(match["selector"])))
    return queries


def exported_names(prom: Prometheus) -> set[str]:
    answer = prom.api("label/__name__/values")
    assert answer["status"] == "success", answer
    return set(answer["data"])


# A series selector with its label matchers: each must select data on a running pair, so a
# typo in a metric or label name (or a label value the bot never sets) fails.
SELECTOR = re.compile(r"\b(?:failoverbot_[a-z0-9_]+|up)\b(?:\{[^}]*\})?")
# A trailing filter that shows only fault-time values (a failover, a red alarm).
FILTER = re.compile(r"\s*(?:>|==)\s*[01]\s*$")


def assert_evaluates(prom: Prometheus, where: str, expr: str) -> list[Any]:
    answer = prom.query(expr)
    assert answer.get("status") == "success", f"{where}: {expr}\n{answer}"
    missing = set(METRIC_NAME.findall(expr)) - exported_names(prom)
    assert not missing, f"{where}: uses metrics the bot does not export: {sorted(missing)}"
    for selector in SELECTOR.findall(expr):
        selected = prom.query(selector)
        assert selected.get("status") == "success", f"{where}: {selector}\n{selected}"
        assert selected["data"]["result"], f"{where}: {selector} selects no series"
    result: list[Any] = answer["data"]["result"]
    return result


def test_selector_check_catches_a_label_typo(prometheus: Prometheus) -> None:
    with pytest.raises(AssertionError, match="selects no series"):
        assert_evaluates(prometheus, "typo", 'max(failoverbot_role{rol="primary"})')


@pytest.mark.parametrize(("where", "expr"), dashboard_queries(), ids=lambda v: str(v)[:60])
def test_dashboard_query_returns_data_for_a_running_pair(
    prometheus: Prometheus, where: str, expr: str
) -> None:
    if not expr.startswith("failoverbot_role"):  # a pair always has a role to show
        expr = FILTER.sub("", expr)  # fault-time filter off: the values under it must be there
    result = assert_evaluates(prometheus, where, expr)
    assert result, f"{where}: no data for a running pair: {expr}"


def test_dashboard_variables_find_the_bot(
    prometheus: Prometheus, metrics_target: ScrapeTarget
) -> None:
    answer = prometheus.query("failoverbot_build_info")
    labels = [r["metric"] for r in answer["data"]["result"]]
    assert {(m["cluster"], m["node"], m["instance"]) for m in labels} == {
        (metrics_target.cluster, metrics_target.node, metrics_target.address),
        *((metrics_target.cluster, node, address) for node, address in metrics_target.peers),
    }


def test_alert_rules_load_and_evaluate(prometheus: Prometheus) -> None:
    answer = prometheus.api("rules")
    assert answer["status"] == "success", answer
    rules = [rule for group in answer["data"]["groups"] for rule in group["rules"]]
    assert len(rules) >= 10
    for rule in rules:
        # Prometheus evaluated the rule itself (1 s interval): no error.
        assert rule["health"] in ("ok", "unknown"), rule
        assert not rule.get("lastError"), rule
        assert_evaluates(prometheus, f"alert {rule['name']}", rule["query"])
    names = {rule["name"] for rule in rules}
    for expected in (
        "FailoverBotNoPrimary",
        "FailoverBotTwoPrimaries",
        "FailoverBotLeaseFlapping",
        "FailoverBotStandbyNotReady",
        "FailoverBotSpanRedAlarm",
        "FailoverBotTestCallsFailing",
        "FailoverBotRSeriesLinkDown",
        "FailoverBotWebhooksFailing",
        "FailoverBotConfigDrift",
    ):
        assert expected in names


def _family_series(metric: Any) -> str:
    """The series name to query for a client_python metric object."""
    family = next(iter(metric.describe()))
    if family.type == "counter":
        return f"{family.name}_total"
    if family.type == "histogram":
        return f"{family.name}_count"
    return str(family.name)


def test_every_family_of_metrics_is_queryable(prometheus: Prometheus) -> None:
    metrics = Metrics()
    families = {
        attr: _family_series(value)
        for attr, value in vars(metrics).items()
        if hasattr(value, "describe") and attr != "registry"
    }
    assert len(families) >= 33
    for attr, series in families.items():
        answer = prometheus.query(f'{series}{{job="{SCRAPE_JOB}"}}')
        assert answer["status"] == "success", answer
        assert answer["data"]["result"], f"{attr}: {series} not in Prometheus"


def test_scraped_values_are_the_bot_s(prometheus: Prometheus, metrics_target: ScrapeTarget) -> None:
    """What Prometheus stored agrees with what the running bot says in /status."""

    def one(expr: str) -> float:
        result = prometheus.query(expr)["data"]["result"]
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    node, instance = metrics_target.node, metrics_target.address
    with urllib.request.urlopen(f"http://{metrics_target.address}/status", timeout=2) as resp:
        status = json.loads(resp.read())
    me = next(n for n in status["nodes"] if n["id"] == node)
    role = me["role"]
    assert one(f'failoverbot_role{{node="{node}", role="{role}"}}') == 1
    other = "standby" if role == "primary" else "primary"
    assert one(f'failoverbot_role{{node="{node}", role="{other}"}}') == 0
    expected_epoch = status["epoch"] if status["holder"] == node else 0
    here = f'instance="{instance}"'
    assert one(f"failoverbot_lease_epoch{{{here}}}") == expected_epoch
    assert one(f"failoverbot_redis_up{{{here}}}") == 1
    assert one(f'failoverbot_drbd_disk_state{{{here}, resource="pbx", state="UpToDate"}}') == 1
    active = status["rseries_active"]
    assert one(f'failoverbot_rseries_active_host{{{here}, host="{active}"}}') == 1


def test_dashboard_file_is_where_the_test_reads_it() -> None:
    assert Path(DASHBOARD).is_file()
