"""The alerts and the dashboard query the metrics the components export, and cover what operators watch."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from climatik.kube.metrics import RuntimeMetrics
from climatik.monitor.reconciler import MonitorMetrics
from climatik.prom import PromQueryMetrics
from climatik.recommend.domainstatus import DomainMetrics
from climatik.recommend.reconciler import RecommendMetrics
from climatik.tune.reconciler import TuneMetrics


def exported() -> set[str]:
    """The metric names the components export, read off their metrics registered on one registry."""
    registry = CollectorRegistry()
    RuntimeMetrics(registry)
    PromQueryMetrics(registry)
    MonitorMetrics(registry)
    RecommendMetrics(registry)
    DomainMetrics(registry)
    TuneMetrics(registry, "node")
    # A counter's family drops its _total; queries name the sample.
    return {family.name + ("_total" if family.type == "counter" else "") for family in registry.collect()}


METRICS = exported()


def metric_names(expr: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in re.findall(r"\bclimatik_[a-z_]+", expr)}


@pytest.fixture
def dashboard(manifests) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return json.loads((manifests.root / "monitoring" / "dashboard.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture
def alerts(manifests) -> dict[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    rule = manifests.get("PrometheusRule", "climatik")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_every_dashboard_panel_queries_climatik_metrics(dashboard: dict[str, Any]) -> None:
    assert panels(dashboard)
    for panel in panels(dashboard):
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert metric_names(target["expr"]), (panel["title"], target["expr"])
            assert metric_names(target["expr"]) <= METRICS, target["expr"]


def test_dashboard_shows_power_against_cap_clocks_and_actions(dashboard: dict[str, Any]) -> None:
    per_panel = [set().union(*(metric_names(t["expr"]) for t in panel["targets"])) for panel in panels(dashboard)]
    assert {"climatik_monitor_policy_power_watts", "climatik_monitor_policy_limit_watts"} in per_panel
    shown = set().union(*per_panel)
    assert {"climatik_tune_gpu_applied_mhz", "climatik_recommend_policy_gpu_target_mhz",
            "climatik_recommend_actions_total", "climatik_leader_election_is_leader"} <= shown
    assert any({"climatik_domain_power_watts", "climatik_domain_budget_watts"} <= panel for panel in per_panel)
    assert [panel.get("repeat") for panel in dashboard["panels"] if panel["type"] == "row"].count("domain") == 1


def test_dashboard_variables_are_defined_and_use_the_chosen_datasource(dashboard: dict[str, Any]) -> None:
    defined = {variable["name"] for variable in dashboard["templating"]["list"]}
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= defined, target["expr"]


def test_dashboard_ships_in_a_config_map_grafana_picks_up(manifests) -> None:  # type: ignore[no-untyped-def]
    (generator,) = manifests.kustomization("monitoring")["configMapGenerator"]
    assert generator["files"] == ["climatik.json=dashboard.json"]
    assert generator["options"]["labels"]["grafana_dashboard"] == "1"
    assert generator["options"]["disableNameSuffixHash"] is True


def test_alerts_query_only_exported_metrics(alerts: dict[str, dict[str, Any]]) -> None:
    for name, rule in alerts.items():
        assert metric_names(rule["expr"]) <= METRICS, name


def test_alerts_cover_cap_staleness_tuner_failures_and_missing_leaders(alerts: dict[str, dict[str, Any]]) -> None:
    by_metrics = {name: metric_names(rule["expr"]) for name, rule in alerts.items()}
    assert {"climatik_monitor_policy_power_watts", "climatik_monitor_policy_limit_watts"} in by_metrics.values()
    assert {"climatik_monitor_policy_metrics_available"} in by_metrics.values()
    assert {"climatik_tune_apply_failures_total"} in by_metrics.values()
    leases = {lease for rule in alerts.values() for lease in re.findall(r'lease="([\w-]+)"', rule["expr"])}
    assert leases == {"climatik-monitor", "climatik-recommend"}


def test_every_alert_waits_and_tells_the_operator_what_to_do(alerts: dict[str, dict[str, Any]]) -> None:
    for name, rule in alerts.items():
        assert re.fullmatch(r"\d+m", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert len(rule["annotations"]["description"].split()) >= 10, name


@pytest.mark.parametrize("component", ["monitor", "recommend", "tune"])
def test_pod_monitor_scrapes_the_components_metrics_port(manifests, component: str) -> None:  # type: ignore[no-untyped-def]
    monitor = manifests.get("PodMonitor", f"climatik-{component}")
    workload = manifests.workload(component)
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["metadata"]["namespace"] == workload["metadata"]["namespace"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in {port["name"] for port in manifests.container(component)["ports"]}
    assert endpoint["path"] == "/metrics"

