"""The PrometheusRule's alerts parse with promtool and fire when, and only when, they should (promtool test rules)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

RULE = Path(__file__).resolve().parents[2] / "manifests" / "monitoring" / "prometheus-rule.yaml"
POLICY = "team-a/llm-inference"


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make prometheus` installs it"
    return path


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    """The rule groups of the PrometheusRule as a plain Prometheus rules file."""
    path = tmp_path / "climatik-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": yaml.safe_load(RULE.read_text())["spec"]["groups"]}))
    return path


def run_rule_tests(promtool: str, rules_file: Path, series: list[dict[str, str]],
                   expectations: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    # promtool compares annotations too; their templates are checked by `promtool check rules`, so the behaviour
    # tests run on a copy without them and compare labels only.
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        rule.pop("annotations", None)
    bare = rules_file.with_name("climatik-rules-bare.yaml")
    bare.write_text(yaml.safe_dump({"groups": groups}))
    test_file = rules_file.with_name("climatik-rules-test.yaml")
    test_file.write_text(yaml.safe_dump({
        "rule_files": [bare.name], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": expectations}],
    }))
    return subprocess.run([promtool, "test", "rules", str(test_file)], check=False, capture_output=True, text=True,
                          timeout=60, cwd=rules_file.parent)


def firing(alert: str, at: str, labels: dict[str, str] | None) -> dict[str, Any]:
    """Expect `alert` at time `at` with exactly `labels` (None: not firing)."""
    expected = [] if labels is None else [{"exp_labels": labels}]
    return {"eval_time": at, "alertname": alert, "exp_alerts": expected}


def test_rules_parse(promtool: str, rules_file: Path) -> None:
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], check=False, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_cap_exceeded_fires_after_five_minutes_over_the_cap(promtool: str, rules_file: Path) -> None:
    series = [
        {"series": f'climatik_monitor_policy_power_watts{{policy="{POLICY}",pod="m-1"}}', "values": "1200x15"},
        {"series": f'climatik_monitor_policy_limit_watts{{policy="{POLICY}",pod="m-1"}}', "values": "1000x15"},
        {"series": 'climatik_monitor_policy_power_watts{policy="team-b/train",pod="m-1"}', "values": "900x15"},
        {"series": 'climatik_monitor_policy_limit_watts{policy="team-b/train",pod="m-1"}', "values": "1000x15"},
    ]
    labels = {"policy": POLICY, "severity": "critical"}
    result = run_rule_tests(promtool, rules_file, series, [
        firing("ClimatikPowerCapExceeded", "4m", None),
        firing("ClimatikPowerCapExceeded", "6m", labels),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


def test_stale_power_readings_alert_after_three_minutes(promtool: str, rules_file: Path) -> None:
    series = [{"series": f'climatik_monitor_policy_metrics_available{{policy="{POLICY}"}}', "values": "1 1 0x10"}]
    result = run_rule_tests(promtool, rules_file, series, [
        firing("ClimatikPolicyMetricsStale", "4m", None),
        firing("ClimatikPolicyMetricsStale", "6m", {"policy": POLICY, "severity": "warning"}),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_leader_is_reported_per_lease(promtool: str, rules_file: Path) -> None:
    series = [
        {"series": 'climatik_leader_election_is_leader{lease="climatik-monitor",pod="m-1"}', "values": "0x15"},
        {"series": 'climatik_leader_election_is_leader{lease="climatik-recommend",pod="r-1"}', "values": "1x15"},
    ]
    result = run_rule_tests(promtool, rules_file, series, [
        firing("ClimatikMonitorLeaderMissing", "3m", None),
        firing("ClimatikMonitorLeaderMissing", "6m", {"lease": "climatik-monitor", "severity": "critical"}),
        firing("ClimatikRecommendLeaderMissing", "10m", None),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_running_replica_counts_as_a_missing_leader(promtool: str, rules_file: Path) -> None:
    series = [{"series": 'climatik_leader_election_is_leader{lease="climatik-monitor",pod="m-1"}', "values": "1x15"}]
    result = run_rule_tests(promtool, rules_file, series, [
        firing("ClimatikMonitorLeaderMissing", "10m", None),
        firing("ClimatikRecommendLeaderMissing", "6m", {"lease": "climatik-recommend", "severity": "critical"}),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


def test_repeated_tuner_failures_alert_but_a_single_one_does_not(promtool: str, rules_file: Path) -> None:
    series = [
        {"series": 'climatik_tune_apply_failures_total{node="gpu-1",kind="gpu",pod="t-1"}', "values": "0+3x30"},
        {"series": 'climatik_tune_apply_failures_total{node="gpu-2",kind="gpu",pod="t-2"}', "values": "0 1x30"},
    ]
    result = run_rule_tests(promtool, rules_file, series, [
        firing("ClimatikTunerApplyFailures", "8m", None),
        firing("ClimatikTunerApplyFailures", "20m", {"node": "gpu-1", "kind": "gpu", "severity": "warning"}),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_tuner_that_does_not_apply_its_targets_alerts_after_two_minutes(promtool: str, rules_file: Path) -> None:
    series = [
        {"series": 'climatik_recommend_nodes_not_responding{policy="ml/llm",pod="r-1"}', "values": "0 0 1x10"},
        {"series": 'climatik_recommend_nodes_not_responding{policy="ml/train",pod="r-1"}', "values": "0x12"},
    ]
    result = run_rule_tests(promtool, rules_file, series, [
        firing("ClimatikTunerNotResponding", "3m", None),
        firing("ClimatikTunerNotResponding", "5m", {"policy": "ml/llm", "severity": "warning"}),
    ])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_power_domain_over_its_budget_alerts_after_two_minutes(promtool: str, rules_file: Path) -> None:
    series = [
        {"series": 'climatik_domain_power_watts{domain="rack-b07",pod="r-1"}', "values": "15000 18000x10"},
        {"series": 'climatik_domain_budget_watts{domain="rack-b07",pod="r-1"}', "values": "17000x11"},
        {"series": 'climatik_domain_power_watts{domain="rack-b08",pod="r-1"}', "values": "16000x11"},
        {"series": 'climatik_domain_budget_watts{domain="rack-b08",pod="r-1"}', "values": "17000x11"},
    ]
    result = run_rule_tests(promtool, rules_file, series, [
        firing("ClimatikPowerDomainOverBudget", "2m", None),
        firing("ClimatikPowerDomainOverBudget", "4m", {"domain": "rack-b07", "severity": "critical"}),
    ])
    assert result.returncode == 0, result.stdout + result.stderr
