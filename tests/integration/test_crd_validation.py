"""The API server enforces the CRD schemas: samples are accepted, bad objects are rejected naming the bad field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from climatik.api import PowerCappingPolicy

pytestmark = pytest.mark.integration

VALID_POLICY = {
    "apiVersion": "climatik.io/v1alpha1",
    "kind": "PowerCappingPolicy",
    "metadata": {"namespace": "default"},
    "spec": {"powerCapLimit": 1000, "selector": {"matchLabels": {"app": "llm-inference"}}},
}


def policy(name: str, **spec_changes: object) -> dict[str, object]:
    spec = {**VALID_POLICY["spec"], **spec_changes}  # type: ignore[dict-item]
    spec = {key: value for key, value in spec.items() if value is not None}
    return {**VALID_POLICY, "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def node_frequencies(name: str, gpus: list[dict[str, object]], cpus: list[dict[str, object]] | None = None,
                     node_name: str | None = None, budgets: list[dict[str, object]] | None = None) -> dict[str, object]:
    spec: dict[str, object] = {"nodeName": node_name or name, "gpuFrequencies": gpus}
    if cpus is not None:
        spec["cpuFrequencies"] = cpus
    if budgets is not None:
        spec["powerBudgets"] = budgets
    return {"apiVersion": "climatik.io/v1alpha1", "kind": "NodeFrequencies", "metadata": {"name": name},
            "spec": spec}


def domain(name: str, **spec_changes: object) -> dict[str, object]:
    spec = {"budget": 17000, "nodeSelector": {"matchLabels": {"rack": "b07"}}, **spec_changes}
    spec = {key: value for key, value in spec.items() if value is not None}
    return {"apiVersion": "climatik.io/v1alpha1", "kind": "PowerDomain", "metadata": {"name": name}, "spec": spec}


def test_control_plane_runs_the_built_release(control_plane) -> None:  # type: ignore[no-untyped-def]
    assert control_plane.version() == "v1.34.4"


@pytest.mark.parametrize("sample", sorted((Path(__file__).parents[2] / "manifests" / "samples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_sample_is_accepted(kubectl, sample: Path) -> None:  # type: ignore[no-untyped-def]
    if sample.name == "kustomization.yaml":
        return
    result = kubectl("apply", "--dry-run=server", "-f", str(sample))
    assert result.returncode == 0, result.stderr


def test_seed_policy_keeps_its_algorithm_parameters_and_gets_defaults(kubectl, repo) -> None:  # type: ignore[no-untyped-def]
    created = kubectl("apply", "-o", "json", "-f", str(repo / "manifests/samples/powercappingpolicy.yaml"))
    assert created.returncode == 0, created.stderr
    spec = json.loads(created.stdout)["spec"]
    assert spec["customAlgorithms"] == [{"name": "dynamic-frequency-scaler",
                                         "parameters": {"scaling-factor": "0.8", "min-frequency": "300"}}]
    assert spec["dryRun"] is False and spec["tuneCPUs"] is False and spec["priority"] == 0


INVALID = [
    ("zero-limit", policy("zero-limit", powerCapLimit=0), "spec.powerCapLimit"),
    ("negative-limit", policy("negative-limit", powerCapLimit=-5), "spec.powerCapLimit"),
    ("threshold-0", policy("threshold-0", cappingThreshold=0), "spec.cappingThreshold"),
    ("threshold-101", policy("threshold-101", cappingThreshold=101), "spec.cappingThreshold"),
    ("missing-selector", policy("missing-selector", selector=None), "spec.selector"),
    ("missing-limit", policy("missing-limit", powerCapLimit=None), "spec.powerCapLimit"),
    ("string-limit", policy("string-limit", powerCapLimit="a lot"), "spec.powerCapLimit"),
    ("release-above-capping", policy("release-above", cappingThreshold=80, releaseThreshold=85),
     "spec.releaseThreshold"),
    ("bad-operator", policy("bad-operator", selector={"matchExpressions": [{"key": "a", "operator": "Near"}]}),
     "spec.selector.matchExpressions[0].operator"),
    ("in-without-values", policy("in-no-values", selector={"matchExpressions": [{"key": "a", "operator": "In"}]}),
     "spec.selector.matchExpressions[0].values"),
    ("empty-algorithm-name", policy("empty-alg", customAlgorithms=[{"name": ""}]), "spec.customAlgorithms[0].name"),
    ("numeric-parameter", policy("num-param", customAlgorithms=[{"name": "x", "parameters": {"scaling-factor": 0.8}}]),
     "spec.customAlgorithms[0].parameters.scaling-factor"),
    ("negative-gpu-frequency", node_frequencies("n1", [{"gpuId": "GPU-1", "targetFrequency": -100}]),
     "spec.gpuFrequencies[0].targetFrequency"),
    ("zero-cpu-frequency", node_frequencies("n2", [], [{"cpuId": 0, "targetFrequency": 0}]),
     "spec.cpuFrequencies[0].targetFrequency"),
    ("empty-gpu-id", node_frequencies("n3", [{"gpuId": "", "targetFrequency": 1000}]), "spec.gpuFrequencies[0].gpuId"),
    ("name-not-node", node_frequencies("n4", [], node_name="other"), "spec.nodeName"),
    ("duplicate-gpu", node_frequencies("n5", [{"gpuId": "GPU-1", "targetFrequency": 1000},
                                               {"gpuId": "GPU-1", "targetFrequency": 900}]),
     "spec.gpuFrequencies[1]"),
    ("negative-budget", node_frequencies("n6", [], budgets=[{"policy": "ml/llm", "watts": -1, "gpuIds": ["GPU-1"]}]),
     "spec.powerBudgets[0].watts"),
    ("budget-without-gpus", node_frequencies("n7", [], budgets=[{"policy": "ml/llm", "watts": 900, "gpuIds": []}]),
     "spec.powerBudgets[0].gpuIds"),
    ("two-budgets-of-one-policy", node_frequencies("n8", [], budgets=[
        {"policy": "ml/llm", "watts": 900, "gpuIds": ["GPU-1"]},
        {"policy": "ml/llm", "watts": 800, "gpuIds": ["GPU-2"]}]),
     "spec.powerBudgets[1]"),
    ("unknown-enforcement", policy("bad-enforcement", enforcement="Hope"), "spec.enforcement"),
    ("guarantee-above-limit", policy("big-guarantee", powerCapLimit=1000, guaranteedWatts=1200),
     "spec.guaranteedWatts"),
    ("domain-zero-budget", domain("d-zero", budget=0), "spec.budget"),
    ("domain-without-nodes", domain("d-nodes", nodeSelector=None), "spec.nodeSelector"),
    ("domain-own-parent", domain("d-self", parent="d-self"), "spec.parent"),
    ("domain-bad-time", domain("d-time", schedule=[{"start": "25:00", "end": "06:00", "budget": 9000}]),
     "spec.schedule[0].start"),
    ("domain-empty-window", domain("d-empty", schedule=[{"start": "06:00", "end": "06:00", "budget": 9000}]),
     "spec.schedule[0].end"),
    ("domain-bad-day", domain("d-day", schedule=[{"start": "06:00", "end": "07:00", "budget": 9000,
                                                 "days": ["Moonday"]}]),
     "spec.schedule[0].days[0]"),
    ("domain-zero-ramp", domain("d-ramp", rampWattsPerSecond=0), "spec.rampWattsPerSecond"),
]


def test_node_budgets_are_accepted_and_default_on(kubectl) -> None:  # type: ignore[no-untyped-def]
    budgets = [{"policy": "ml/llm", "watts": 1400, "gpuIds": ["GPU-1", "GPU-2"]},
               {"policy": "ml/train", "watts": 650, "gpuIds": ["GPU-3"]}]
    created = kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(node_frequencies("n9", [], budgets=budgets)))
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["spec"]["powerBudgets"] == budgets
    made = kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(policy("budgets-default")))
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["spec"]["enforcement"] == "NodeBudgets"


@pytest.mark.parametrize(("case", "obj", "field"), INVALID, ids=[case for case, _, _ in INVALID])
def test_invalid_objects_are_rejected_naming_the_field(kubectl, case: str, obj: dict, field: str) -> None:  # type: ignore[no-untyped-def]
    result = kubectl("create", "-f", "-", stdin=json.dumps(obj))
    assert result.returncode != 0, f"{case} was accepted"
    assert field in result.stderr, result.stderr


def test_unknown_spec_fields_are_rejected(kubectl) -> None:  # type: ignore[no-untyped-def]
    result = kubectl("create", "-f", "-", stdin=json.dumps(policy("unknown-field", watts=3)))
    assert result.returncode != 0
    assert 'unknown field "spec.watts"' in result.stderr


def test_unknown_fields_are_pruned_when_validation_is_off(kubectl) -> None:  # type: ignore[no-untyped-def]
    result = kubectl("create", "--validate=false", "-o", "json", "-f", "-",
                     stdin=json.dumps(policy("pruned-field", watts=3)))
    assert result.returncode == 0, result.stderr
    assert "watts" not in json.loads(result.stdout)["spec"]


def test_writes_to_the_main_resource_cannot_change_status(kubectl) -> None:  # type: ignore[no-untyped-def]
    obj = policy("status-guard")
    assert kubectl("create", "-f", "-", stdin=json.dumps(obj)).returncode == 0
    patched = kubectl("patch", "pcp", "status-guard", "--type=merge", "-o", "json",
                      "-p", json.dumps({"status": {"cappingActionRequired": True}, "spec": {"powerCapLimit": 900}}))
    assert patched.returncode == 0, patched.stderr
    result = json.loads(patched.stdout)
    assert result["spec"]["powerCapLimit"] == 900
    assert "status" not in result or "cappingActionRequired" not in result["status"]
    via_status = kubectl("patch", "pcp", "status-guard", "--subresource=status", "--type=merge", "-o", "json",
                         "-p", json.dumps({"status": {"cappingActionRequired": True, "currentPower": 512.5}}))
    assert via_status.returncode == 0, via_status.stderr
    assert json.loads(via_status.stdout)["status"]["cappingActionRequired"] is True


def test_get_shows_printer_columns(kubectl) -> None:  # type: ignore[no-untyped-def]
    kubectl("create", "-f", "-", stdin=json.dumps(policy("columns", powerCapLimit=1234, cappingThreshold=85)))
    kubectl("patch", "pcp", "columns", "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"cappingActionRequired": True, "currentPower": 1100.5}}))
    table = kubectl("get", "pcp", "columns").stdout.splitlines()
    assert table[0].split() == ["NAME", "LIMIT", "THRESHOLD", "POWER", "CAPPING", "AGE"]
    assert table[1].split()[:5] == ["columns", "1234", "85", "1100.5", "true"]
    nf = node_frequencies("columns-node", [{"gpuId": "GPU-a", "targetFrequency": 1200}])
    assert kubectl("create", "-f", "-", stdin=json.dumps(nf)).returncode == 0
    kubectl("patch", "nf", "columns-node", "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"gpuCount": 8, "appliedCount": 1, "pendingCount": 0}}))
    nf_table = kubectl("get", "nf", "columns-node").stdout.splitlines()
    assert nf_table[0].split() == ["NAME", "NODE", "GPUS", "APPLIED", "PENDING", "AGE"]
    assert nf_table[1].split()[:5] == ["columns-node", "columns-node", "8", "1", "0"]


def test_a_domain_tree_is_accepted_with_defaults_and_shows_its_columns(kubectl) -> None:  # type: ignore[no-untyped-def]
    row = kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(domain("row-a", budget=120000)))
    assert row.returncode == 0, row.stderr
    assert json.loads(row.stdout)["spec"]["timeZone"] == "UTC"
    rack = kubectl("create", "-o", "json", "-f", "-", stdin=json.dumps(domain("rack-a1", parent="row-a")))
    assert rack.returncode == 0, rack.stderr
    kubectl("patch", "pd", "rack-a1", "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"budget": 17000, "power": 15250.5, "allocated": 16900}}))
    table = kubectl("get", "pd", "rack-a1").stdout.splitlines()
    assert table[0].split() == ["NAME", "PARENT", "BUDGET", "POWER", "ALLOCATED", "AGE"]
    assert table[1].split()[:5] == ["rack-a1", "row-a", "17000", "15250.5", "16900"]


def test_explain_teaches_the_spec(kubectl) -> None:  # type: ignore[no-untyped-def]
    result = kubectl("explain", "pcp.spec")
    assert result.returncode == 0, result.stderr
    for field in ("powerCapLimit", "selector", "cappingThreshold", "customAlgorithms", "dryRun", "guaranteedWatts"):
        assert field in result.stdout
    assert "<no description>" not in result.stdout
    domains = kubectl("explain", "pd.spec")
    assert domains.returncode == 0, domains.stderr
    for field in ("budget", "nodeSelector", "parent", "schedule", "rampWattsPerSecond", "defaultPriority"):
        assert field in domains.stdout
    assert "<no description>" not in domains.stdout


def test_sample_yaml_parses_as_typed_policy(repo) -> None:  # type: ignore[no-untyped-def]
    data = yaml.safe_load((repo / "manifests/samples/powercappingpolicy.yaml").read_text())
    parsed = PowerCappingPolicy.from_api(data)
    assert parsed.spec.algorithm is not None and parsed.spec.algorithm.name == "dynamic-frequency-scaler"
