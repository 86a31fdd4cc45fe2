"""`climatik recommend` as a real process against the real API server.

Policy statuses are written the way the monitor writes them and NodeFrequencies inventories the way tuners
report them (both through the status subresource), so the recommender sees exactly what it would in a cluster.
Each test uses its own namespace, nodes and GPU UUIDs; one recommender process serves the whole module.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import requests
from climatik_procs import ClimatikProcess, wait_for
from recworld import HALVING, Cluster, gpus, remove_created

pytestmark = pytest.mark.integration

T = TypeVar("T")

LEASE_NAMESPACE = "recommend-it"


def run_kubectl(control_plane, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([*control_plane.kubectl, *args], input=stdin, capture_output=True, text=True,
                          check=False, timeout=60)


@pytest.fixture(scope="module")
def recommender(control_plane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClimatikProcess]:  # type: ignore[no-untyped-def]
    run_kubectl(control_plane, "create", "namespace", LEASE_NAMESPACE)
    proc = ClimatikProcess(
        ["recommend", f"--kubeconfig={control_plane.kubeconfig}", "--metrics-port=0", "--workers=2",
         "--leader-elect", f"--leader-election-namespace={LEASE_NAMESPACE}"],
        tmp_path_factory.mktemp("recommend") / "recommend.log").start()
    try:
        yield proc
    finally:
        proc.stop_quietly()


@pytest.fixture(scope="module")
def created(control_plane, recommender: ClimatikProcess) -> Iterator[dict[str, set[str]]]:  # type: ignore[no-untyped-def]
    """What the tests created; removed while the recommender still runs, so that no finalizer is left behind."""
    made: dict[str, set[str]] = {"namespaces": set(), "nodes": set()}
    yield made
    remove_created(lambda *args: run_kubectl(control_plane, *args), made, diagnostics=recommender.output)


def test_a_policy_over_its_threshold_gets_entries_on_each_of_its_nodes(  # type: ignore[no-untyped-def]
    kubectl, recommender: ClimatikProcess, created: dict[str, set[str]]
) -> None:
    cluster = Cluster(kubectl, created, "rec-cap")
    (a0, a1), (b0,) = gpus("cap-a", 2), gpus("cap-b", 1)
    cluster.tuner_reports("rec-cap-a", [a0, a1])
    cluster.tuner_reports("rec-cap-b", [b0])
    cluster.policy("llm", algorithm=HALVING)
    cluster.monitor_reports("llm", {"rec-cap-a": [a0], "rec-cap-b": [b0]}, power=1400, capping=True)

    wait_for(lambda: cluster.entries("rec-cap-b"), what="entries on rec-cap-b", diagnostics=recommender.output)
    assert cluster.entries("rec-cap-a") == [(a0, 990, "rec-cap/llm")], "only the policy's GPU, cut in half"
    assert cluster.entries("rec-cap-b") == [(b0, 990, "rec-cap/llm")]
    assert cluster.condition("llm", "Actuated").get("reason") == "Applying", "written is not applied"

    def applied() -> dict[str, Any] | bool:
        for node in ("rec-cap-a", "rec-cap-b"):  # the tuners apply whatever spec they find
            cluster.tuner_applies(node)
        condition = cluster.condition("llm", "Actuated")
        return condition.get("status") == "True" and condition

    actuated = wait_for(applied, what="Actuated=True", diagnostics=recommender.output)
    assert actuated["reason"] == "TargetsWritten"
    policy = cluster.policy_object("llm")
    assert policy["metadata"]["finalizers"] == ["climatik.io/node-frequencies"]
    recommendation = policy["status"]["recommendation"]
    assert recommendation["gpuFrequency"] == 990 and recommendation["applied"] is True
    assert recommendation["algorithm"] == "dynamic-frequency-scaler" and recommendation["state"]
    assert policy["status"]["currentPower"] == 1400, "the monitor's observation is left as it was"

    # Steady now: a tuner's heartbeat wakes the policy, and the recommender writes nothing.
    def versions() -> tuple[str, int, int]:
        nodes = [cluster.node(node)["metadata"]["generation"] for node in ("rec-cap-a", "rec-cap-b")]
        return cluster.policy_object("llm")["metadata"]["resourceVersion"], nodes[0], nodes[1]

    settled = _settled(versions)
    port = wait_for(lambda: _port(recommender), what="the metrics port in the log")
    reconciles = _reconciles(port)
    for node in ("rec-cap-a", "rec-cap-b"):
        cluster.ok("patch", "nf", node, "--subresource=status", "--type=merge",
                   "-p", json.dumps({"status": {"lastUpdated": "2030-01-01T00:00:00Z"}}))
    wait_for(lambda: _reconciles(port) >= reconciles + 2, what="the policy reconciled again")
    time.sleep(1.0)
    assert versions() == settled


def test_a_second_policy_on_the_same_node_merges_and_deleting_one_removes_only_its_entries(  # type: ignore[no-untyped-def]
    kubectl, recommender: ClimatikProcess, created: dict[str, set[str]]
) -> None:
    cluster = Cluster(kubectl, created, "rec-merge")
    g0, g1 = gpus("merge", 2)
    cluster.tuner_reports("rec-merge-a", [g0, g1])
    cluster.policy("inference", algorithm=HALVING)
    cluster.policy("training")  # the default closed-loop algorithm
    cluster.monitor_reports("inference", {"rec-merge-a": [g0]}, power=1400, capping=True)
    cluster.monitor_reports("training", {"rec-merge-a": [g1]}, power=1400, capping=True)

    merged: list[tuple[str, int, str]] = wait_for(
        lambda: e if len(e := cluster.entries("rec-merge-a")) == 2 else None, what="both policies' entries",
        diagnostics=recommender.output)
    assert merged[0] == (g0, 990, "rec-merge/inference")
    assert merged[1][0] == g1 and merged[1][2] == "rec-merge/training" and 210 <= merged[1][1] < 1980

    assert kubectl("delete", "pcp", "-n", "rec-merge", "inference", "--wait=false").returncode == 0
    wait_for(lambda: [e[2] for e in cluster.entries("rec-merge-a")] == ["rec-merge/training"],
             what="the deleted policy's entry removed", diagnostics=recommender.output)
    wait_for(lambda: cluster.tuner_applies("rec-merge-a") or not cluster.policy_object("inference"),
             what="the finalizer let the policy go once the tuner removed its caps", diagnostics=recommender.output)


def test_two_policies_observing_one_gpu_both_report_the_conflict(  # type: ignore[no-untyped-def]
    kubectl, recommender: ClimatikProcess, created: dict[str, set[str]]
) -> None:
    cluster = Cluster(kubectl, created, "rec-conflict")
    (shared,) = gpus("conflict", 1)
    cluster.tuner_reports("rec-conflict-a", [shared])
    cluster.policy("senior", algorithm=HALVING, priority=10)
    cluster.policy("junior", algorithm=HALVING)
    for name in ("senior", "junior"):
        cluster.monitor_reports(name, {"rec-conflict-a": [shared]}, power=1400, capping=True)

    junior = wait_for(lambda: (c := cluster.condition("junior", "Conflict")).get("status") == "True" and c,
                      what="Conflict on the junior policy", diagnostics=recommender.output)
    senior = wait_for(lambda: (c := cluster.condition("senior", "Conflict")).get("status") == "True" and c,
                      what="Conflict on the senior policy", diagnostics=recommender.output)
    assert junior["reason"] == "LosesSharedGpus" and "rec-conflict/senior" in junior["message"]
    assert "higher priority" in junior["message"]
    assert senior["reason"] == "WinsSharedGpus" and "rec-conflict/junior" in senior["message"]
    wait_for(lambda: cluster.entries("rec-conflict-a") == [(shared, 990, "rec-conflict/senior")],
             what="the senior policy drives the GPU", diagnostics=recommender.output)
    assert cluster.condition("junior", "Actuated")["reason"] == "Conflict"


def test_dry_run_reports_targets_and_writes_no_entries(  # type: ignore[no-untyped-def]
    kubectl, recommender: ClimatikProcess, created: dict[str, set[str]]
) -> None:
    cluster = Cluster(kubectl, created, "rec-dry")
    (g0,) = gpus("dry", 1)
    cluster.tuner_reports("rec-dry-a", [g0])
    cluster.policy("trial", algorithm=HALVING, dryRun=True)
    cluster.monitor_reports("trial", {"rec-dry-a": [g0]}, power=1400, capping=True)

    recommendation = wait_for(lambda: cluster.status("trial").get("recommendation"), what="a recommendation",
                              diagnostics=recommender.output)
    assert recommendation["gpuFrequency"] == 990 and recommendation["applied"] is False
    assert cluster.condition("trial", "Actuated")["reason"] == "DryRun"
    assert cluster.entries("rec-dry-a") == []
    assert cluster.node("rec-dry-a")["metadata"]["generation"] == 1, "the spec was never written"
    wait_for(lambda: any(e[:2] == ("Normal", "DryRunTargets") for e in cluster.events("trial")),
             what="a DryRunTargets event", diagnostics=recommender.output)


def test_an_unknown_algorithm_is_reported_in_a_condition_and_an_event(  # type: ignore[no-untyped-def]
    kubectl, recommender: ClimatikProcess, created: dict[str, set[str]]
) -> None:
    cluster = Cluster(kubectl, created, "rec-bad")
    (g0,) = gpus("bad", 1)
    cluster.tuner_reports("rec-bad-a", [g0])
    cluster.policy("bad", algorithm={"name": "warp-drive", "parameters": {}})
    cluster.monitor_reports("bad", {"rec-bad-a": [g0]}, power=1400, capping=True)

    invalid = wait_for(lambda: (c := cluster.condition("bad", "InvalidSpec")).get("status") == "True" and c,
                       what="InvalidSpec=True", diagnostics=recommender.output)
    assert "warp-drive" in invalid["message"]
    warning = wait_for(lambda: [e for e in cluster.events("bad") if e[:2] == ("Warning", "InvalidSpec")],
                       what="an InvalidSpec event", diagnostics=recommender.output)
    assert "warp-drive" in warning[0][2]
    assert cluster.condition("bad", "Actuated")["reason"] == "Invalid"
    assert cluster.entries("rec-bad-a") == []


def test_an_observed_node_without_an_object_gets_an_empty_one_then_targets_once_its_tuner_reports(  # type: ignore[no-untyped-def]
    kubectl, recommender: ClimatikProcess, created: dict[str, set[str]]
) -> None:
    cluster = Cluster(kubectl, created, "rec-new")
    (g0,) = gpus("new", 1)
    cluster.policy("fresh", algorithm=HALVING)
    cluster.monitor_reports("fresh", {"rec-new-a": [g0]}, power=1400, capping=True)

    empty = wait_for(lambda: cluster.node("rec-new-a"), what="a NodeFrequencies object",
                     diagnostics=recommender.output)
    assert empty["spec"]["nodeName"] == "rec-new-a"
    assert not empty["spec"].get("gpuFrequencies"), "no clock target before the tuner reports the GPU's clocks"
    wait_for(lambda: cluster.condition("fresh", "Actuated").get("reason") == "WaitingForInventory",
             what="Actuated=False WaitingForInventory", diagnostics=recommender.output)

    cluster.tuner_reports("rec-new-a", [g0])
    wait_for(lambda: cluster.entries("rec-new-a") == [(g0, 990, "rec-new/fresh")],
             what="targets once the inventory is there", diagnostics=recommender.output)


class BudgetWatch:
    """`kubectl get nf --watch`: every version of the NodeFrequencies objects as the API server sends them, and
    each policy's sum of node budgets after each one."""

    def __init__(self, control_plane, policy: str) -> None:  # type: ignore[no-untyped-def]
        self.policy = policy
        self._proc = subprocess.Popen([*control_plane.kubectl, "get", "nf", "--watch", "-o", "json"],
                                      stdout=subprocess.PIPE, text=True)

    def sums(self) -> list[int]:
        """Stop watching; the policy's total over its nodes after every event."""
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=30)
        decoder, at, latest, sums = json.JSONDecoder(), 0, {}, []
        while (at := _skip_space(out, at)) < len(out):
            try:
                obj, at = decoder.raw_decode(out, at)
            except json.JSONDecodeError:
                break  # the object being printed when the watch stopped
            latest[obj["metadata"]["name"]] = sum(b["watts"] for b in obj["spec"].get("powerBudgets") or []
                                                  if b["policy"] == self.policy)
            sums.append(sum(latest.values()))
        return sums


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def test_a_budget_moves_to_the_pressed_node_and_never_adds_up_to_more_in_flight(  # type: ignore[no-untyped-def]
    control_plane, kubectl, recommender: ClimatikProcess, created: dict[str, set[str]]
) -> None:
    cluster = Cluster(kubectl, created, "rec-move")
    nodes = {"rec-move-a": gpus("move-a", 2), "rec-move-b": gpus("move-b", 2)}
    for node, uuids in nodes.items():
        cluster.tuner_reports(node, uuids)
    watch = BudgetWatch(control_plane, "rec-move/llm")
    cluster.policy("llm", limit=2000)  # a budget of 1800 W: the default 90 % threshold
    cluster.monitor_reports("llm", nodes, power=1600, capping=True)

    def budget(node: str) -> int:
        spec = cluster.node(node).get("spec") or {}
        return next((b["watts"] for b in spec.get("powerBudgets") or [] if b["policy"] == "rec-move/llm"), 0)

    first = wait_for(lambda: (budget("rec-move-a"), budget("rec-move-b")) if budget("rec-move-b") else None,
                     what="the first split", diagnostics=recommender.output)

    def tuners_report() -> bool:
        """Both tuners acknowledge their spec: node a's GPUs draw a fifth of their budget, node b's are held at
        theirs; True once b holds clearly more than a."""
        for node, share in (("rec-move-a", 0.2), ("rec-move-b", 1.0)):
            obj = cluster.node(node)
            watts = budget(node)
            report = {"policy": "rec-move/llm", "watts": watts, "powerMean": share * watts * 0.95,
                      "powerMax": share * watts, "lever": "PowerLimit", "met": True}
            cluster.ok("patch", "nf", node, "--subresource=status", "--type=merge", "-p", json.dumps(
                {"status": {"observedGeneration": obj["metadata"]["generation"], "budgets": [report]}}))
        return budget("rec-move-b") > budget("rec-move-a") + 400

    wait_for(tuners_report, timeout=60, interval=0.5, what="the budget moved to the pressed node",
             diagnostics=recommender.output)
    sums = watch.sums()
    assert budget("rec-move-b") > first[1], "the pressed node got headroom"
    assert sums and max(sums) <= 1800, f"the node budgets added up to more than 1800 W in flight: {sums}"


def test_a_rack_domain_is_shared_by_priority_and_its_status_tells_how(  # type: ignore[no-untyped-def]
    kubectl, recommender: ClimatikProcess, created: dict[str, set[str]]
) -> None:
    cluster = Cluster(kubectl, created, "rec-rack")
    (a0, a1), (b0, b1) = gpus("rack-a", 2), gpus("rack-b", 2)
    for node in ("rec-rack-a", "rec-rack-b"):
        cluster.ok("create", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": node, "labels": {"topology.climatik.io/rack": "it-r1"}}}))
    cluster.tuner_reports("rec-rack-a", [a0, a1])
    cluster.tuner_reports("rec-rack-b", [b0, b1])
    domain = {"apiVersion": "climatik.io/v1alpha1", "kind": "PowerDomain", "metadata": {"name": "it-rack"},
              "spec": {"budget": 1500, "nodeSelector": {"matchLabels": {"topology.climatik.io/rack": "it-r1"}}}}
    cluster.ok("apply", "-f", "-", stdin=json.dumps(domain))
    try:
        cluster.policy("chat", limit=2000, priority=100)
        cluster.policy("batch", limit=2000, priority=0)
        cluster.monitor_reports("chat", {"rec-rack-a": [a0, a1]}, power=1000, capping=False)
        cluster.monitor_reports("batch", {"rec-rack-b": [b0, b1]}, power=1000, capping=False)

        def budgets() -> dict[str, int] | None:
            found = {b["policy"]: b["watts"] for node in ("rec-rack-a", "rec-rack-b")
                     for b in (cluster.node(node).get("spec") or {}).get("powerBudgets") or []}
            return found if {"rec-rack/chat", "rec-rack/batch"} <= set(found) else None

        shares = wait_for(budgets, what="both policies' node budgets", diagnostics=recommender.output)
        assert shares["rec-rack/chat"] + shares["rec-rack/batch"] <= 1500
        assert shares["rec-rack/chat"] >= 1000, "the high priority keeps what it draws"

        def status() -> dict[str, Any] | None:
            found = json.loads(cluster.ok("get", "pd", "it-rack", "-o", "json")).get("status") or {}
            return found if found.get("policies") else None

        shown = wait_for(status, what="the domain's status", diagnostics=recommender.output)
        assert shown["budget"] == 1500 and shown["nodeCount"] == 2 and shown["allocated"] <= 1500
        assert shown["policies"][0]["name"] == "rec-rack/chat", "the largest share first"
        conditions = {c["type"]: c["status"] for c in shown["conditions"]}
        assert conditions["Valid"] == "True" and conditions["MetricsAvailable"] == "False"
    finally:
        cluster.ok("delete", "pd", "it-rack")


def test_the_recommender_exports_its_metrics_and_holds_its_lease(  # type: ignore[no-untyped-def]
    control_plane, recommender: ClimatikProcess
) -> None:
    port = wait_for(lambda: _port(recommender), what="the metrics port in the log")
    text = wait_for(lambda: t if 'policy="rec-cap/llm"' in (t := requests.get(f"http://127.0.0.1:{port}/metrics",
                                                                               timeout=5).text) else None,
                    what="per-policy series")
    assert 'climatik_recommend_policy_gpu_target_mhz{policy="rec-cap/llm"} 990.0' in text
    assert 'climatik_recommend_actions_total{action="lower",policy="rec-cap/llm"}' in text
    assert 'climatik_workqueue_depth{queue="recommend"}' in text
    assert 'climatik_leader_election_is_leader{lease="climatik-recommend"} 1.0' in text
    lease = run_kubectl(control_plane, "get", "lease", "-n", LEASE_NAMESPACE, "climatik-recommend", "-o", "json")
    assert lease.returncode == 0, lease.stderr


def test_the_log_names_no_unexpected_errors(recommender: ClimatikProcess) -> None:
    errors = [line for line in recommender.output().splitlines() if '"level": "error"' in line]
    assert errors == []


def _settled(read: Callable[[], T], *, quiet: float = 1.0, timeout: float = 30.0) -> T:
    """`read()` once it has stayed the same for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError(f"still changing after {timeout} s: {last!r}")


def _reconciles(port: int) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("climatik_controller_reconcile_total{") and 'controller="recommend"' in line)


def _port(proc: ClimatikProcess) -> int | None:
    for line in proc.output().splitlines():
        if '"process_started"' in line:
            return int(json.loads(line)["port"])
    return None
