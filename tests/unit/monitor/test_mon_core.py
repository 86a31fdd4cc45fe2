"""The monitor's core: which pods count, what they draw (each GPU once), whether capping is required (on at the
threshold, off only under the release band), and when a new status is worth a write (only when a reader would act
on the change, or when the heartbeat is due), never touching the recommender's part of the status."""

from __future__ import annotations

import datetime as dt
from typing import Any

from climatik.api import (
    LabelSelector,
    PolicySpec,
    PowerCappingPolicy,
    SelectorRequirement,
)
from climatik.monitor.core import (
    MAX_GPUS_PER_NODE,
    CappingDecision,
    Measurement,
    NodeReadings,
    Rules,
    SampleOutcome,
    SelectedPod,
    Verdict,
    clock_level,
    decide,
    desired_status,
    evaluate,
    holds_gpus,
    measure,
    select_pods,
)
from climatik.prom.profiles import PodKey
from climatik.prom.snapshot import GpuReading, GpuSnapshot

NOW = 1_700_000_000.0


# -- which pods, and what they draw ----------------------------------------------------------------------------



def pod(name: str, labels: dict[str, str], *, node: str | None = "n1", phase: str = "Running",
        deleting: bool = False, gpus: int = 1) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "ns", "labels": labels}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-29T00:00:00Z"
    container = {"name": "main", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}}
    spec: dict[str, Any] = {"containers": [container]} | ({"nodeName": node} if node else {})
    return {"metadata": metadata, "spec": spec, "status": {"phase": phase}}


def reading(uuid: str, watts: float, *pods: str, host: str = "n1", clock: float | None = 1980.0) -> GpuReading:
    return GpuReading(key=uuid, uuid=uuid, gpu_index=uuid[-1], model="NVIDIA H100 80GB HBM3", hostname=host,
                      power_watts=watts, sm_clock_mhz=clock, timestamp=NOW - 1,
                      pods=frozenset(PodKey("ns", p) for p in pods))


def snapshot(*readings: GpuReading, unread: dict[str, list[str]] | None = None) -> GpuSnapshot:
    pod_gpus: dict[PodKey, set[str]] = {}
    for r in readings:
        for p in r.pods:
            pod_gpus.setdefault(p, set()).add(r.key)
    for uuid, pods in (unread or {}).items():
        for p in pods:
            pod_gpus.setdefault(PodKey("ns", p), set()).add(uuid)
    return GpuSnapshot(query_time=NOW, gpus={r.key: r for r in readings},
                       pod_gpus={k: frozenset(v) for k, v in pod_gpus.items()})


def test_only_running_scheduled_matching_pods_are_selected() -> None:
    pods = [pod("a", {"app": "llm"}), pod("pending", {"app": "llm"}, node=None, phase="Pending"),
            pod("done", {"app": "llm"}, phase="Succeeded"), pod("going", {"app": "llm"}, deleting=True),
            pod("web", {"app": "web"})]
    selector = LabelSelector(match_labels={"app": "llm"})
    assert select_pods(selector, pods) == [SelectedPod(PodKey("ns", "a"), "n1")]


def test_match_expressions_select_pods() -> None:
    pods = [pod("a", {"app": "llm", "tier": "gold"}), pod("b", {"app": "llm", "tier": "bronze"})]
    selector = LabelSelector(match_expressions=[SelectorRequirement("tier", "NotIn", ["bronze"])])
    assert [p.key.name for p in select_pods(selector, pods)] == ["a"]


def test_a_gpu_shared_by_two_selected_pods_counts_once() -> None:
    pods = [SelectedPod(PodKey("ns", "a"), "n1"), SelectedPod(PodKey("ns", "b"), "n1")]
    result = measure(pods, snapshot(reading("GPU-1", 300.0, "a", "b"), reading("GPU-2", 250.5, "b")))
    assert result.power == 550.5
    assert result.gpu_count == 2
    assert result.complete
    (node,) = result.nodes
    assert node.name == "n1" and node.power == 550.5
    assert [(g.uuid, g.pods) for g in node.gpus or []] == [("GPU-1", ["ns/a", "ns/b"]), ("GPU-2", ["ns/b"])]


def test_gpus_are_grouped_by_the_pods_node_not_the_exporter_hostname() -> None:
    pods = [SelectedPod(PodKey("ns", "a"), "gpu-node-7")]
    result = measure(pods, snapshot(reading("GPU-1", 100.0, "a", host="dcgm-exporter-x2k")))
    assert [n.name for n in result.nodes] == ["gpu-node-7"]


def test_pods_holding_gpus_without_series_are_reported_and_make_the_total_incomplete() -> None:
    pods = [SelectedPod(PodKey("ns", "a"), "n1"), SelectedPod(PodKey("ns", "unlabelled"), "n1")]
    result = measure(pods, snapshot(reading("GPU-1", 100.0, "a")))
    assert result.power == 100.0
    assert result.pods_without_metrics == ["ns/unlabelled"]
    assert not result.complete


def test_which_pods_hold_gpus() -> None:
    mig = pod("mig", {}, gpus=0)
    mig["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/mig-1g.10gb": "1"}}
    claim = pod("dra", {}, gpus=0) | {"spec": {"nodeName": "n1", "resourceClaims": [{"name": "gpu"}]}}
    assert [holds_gpus(p) for p in (pod("a", {}), pod("cpu", {}, gpus=0), mig, claim)] == [True, False, True, True]


def test_a_selected_pod_that_holds_no_gpu_never_holds_capping_on() -> None:
    # A CPU-only router carries the workload's label; the review's reproduction: required stayed true at 300 W
    # and at 100 W under a 1000 W cap.
    selector = LabelSelector(match_labels={"app": "llm"})
    pods = select_pods(selector, [pod("vllm-0", {"app": "llm"}), pod("router", {"app": "llm"}, gpus=0)])
    policy = PowerCappingPolicy.from_api({"metadata": {"name": "llm", "namespace": "ns"},
                                          "spec": {"powerCapLimit": 1000, "selector": {"matchLabels": {"app": "llm"}}},
                                          "status": {"cappingActionRequired": True}})
    when = dt.datetime.fromtimestamp(NOW, dt.UTC)
    for watts, required in ((950.0, True), (300.0, False), (100.0, False)):
        outcome = SampleOutcome(snapshot(reading("GPU-1", watts, "vllm-0")), None, NOW)
        verdict = evaluate(policy, pods, outcome, now=when, rules=Rules())
        assert (verdict.capping.required, verdict.metrics_available) == (required, True), watts


def test_an_unlabelled_time_slicing_tenant_is_explained() -> None:
    pods = [SelectedPod(PodKey("ns", "tenant-b"), "n1")]
    policy = PowerCappingPolicy.from_api({"metadata": {"name": "b", "namespace": "ns"},
                                          "spec": {"powerCapLimit": 1000, "selector": {}}})
    outcome = SampleOutcome(snapshot(reading("GPU-1", 300.0, "tenant-a")), None, NOW)
    verdict = evaluate(policy, pods, outcome, now=dt.datetime.fromtimestamp(NOW, dt.UTC), rules=Rules())
    assert verdict.metrics_reason == "IncompleteData"
    assert "KUBERNETES_VIRTUAL_GPUS=true" in verdict.metrics_message


def test_a_gpu_whose_reading_was_set_aside_is_missing_not_forgotten() -> None:
    pods = [SelectedPod(PodKey("ns", "a"), "n1")]
    result = measure(pods, snapshot(reading("GPU-1", 100.0, "a"), unread={"GPU-2": ["a"]}))
    assert result.power == 100.0 and result.gpu_count == 2
    assert result.missing_gpus == ["GPU-2"] and not result.complete


def test_other_pods_on_a_shared_gpu_are_not_listed() -> None:
    pods = [SelectedPod(PodKey("ns", "a"), "n1")]
    result = measure(pods, snapshot(reading("GPU-1", 100.0, "a", "stranger")))
    assert result.nodes[0].gpus is not None and result.nodes[0].gpus[0].pods == ["ns/a"]


def test_observations_are_bounded_and_say_so() -> None:
    names = [f"p{i}" for i in range(MAX_GPUS_PER_NODE + 6)]
    pods = [SelectedPod(PodKey("ns", n), "n1") for n in names]
    readings = [reading(f"GPU-{i:03d}", 10.0, n) for i, n in enumerate(names)]
    result = measure(pods, snapshot(*readings))
    assert result.power == 10.0 * len(names)
    assert len(result.nodes[0].gpus or []) == MAX_GPUS_PER_NODE
    assert result.nodes[0].power == 10.0 * len(names), "the node's power counts the GPUs left out of the list too"
    assert result.truncated


def test_no_selected_pods_is_zero_power_with_complete_data() -> None:
    result = measure([], snapshot(reading("GPU-1", 100.0, "other")))
    assert result.power == 0.0 and result.complete and result.nodes == []


# -- whether capping is required ------------------------------------------------------------------------------

SPEC = PolicySpec(power_cap_limit=1000, selector=LabelSelector(), capping_threshold=90)


def run(powers: list[float | None], spec: PolicySpec = SPEC) -> list[bool]:
    required, out = False, []
    for power in powers:
        required = decide(spec, power, required).required
        out.append(required)
    return out


def test_turns_on_at_the_threshold() -> None:
    assert run([899.9, 900.0]) == [False, True]


def test_stays_on_inside_the_release_band_and_releases_below_it() -> None:
    assert run([950, 880, 851, 849.9]) == [True, True, True, False]


def test_noise_around_the_threshold_does_not_flap() -> None:
    noisy = [905, 895, 903, 897, 901, 893, 899]
    assert run(noisy) == [True] * len(noisy)


def test_an_explicit_release_threshold_is_honoured() -> None:
    spec = PolicySpec(power_cap_limit=1000, selector=LabelSelector(), capping_threshold=90, release_threshold=70)
    assert run([910, 750, 699], spec) == [True, True, False]


def policy_with(status: dict[str, Any] | None) -> PowerCappingPolicy:
    body: dict[str, Any] = {"metadata": {"name": "p", "namespace": "ns"},
                            "spec": {"powerCapLimit": 1000, "selector": {}, "cappingThreshold": 90}}
    return PowerCappingPolicy.from_api(body if status is None else {**body, "status": status})


def test_the_clocks_of_a_policy_are_read_while_they_are_steered_or_its_power_is_near_its_cap() -> None:
    rules = Rules(release_band=10)  # capping starts at 900 W, is released under 800 W
    assert clock_level(policy_with(None), rules) == 0.0, "nothing known yet: read with the power"
    assert clock_level(policy_with({}), rules) == 0.0
    assert clock_level(policy_with({"currentPower": 950.0, "cappingActionRequired": True}), rules) == 0.0
    assert clock_level(policy_with({"currentPower": 500.0, "cappingActionRequired": True}), rules) == 0.0
    assert clock_level(policy_with({"currentPower": 500.0, "recommendation": {"targetCount": 8}}), rules) == 0.0, (
        "caps still held while the power falls: the algorithm raises them by the clocks")
    assert clock_level(policy_with({"currentPower": 820.0}), rules) == 0.0, "within the release band"
    assert clock_level(policy_with({"currentPower": 500.0}), rules) == 800.0, "well under: only from 800 W on"
    assert clock_level(policy_with({"currentPower": 500.0, "recommendation": {"targetCount": 0}}), rules) == 800.0


def test_no_fresh_data_keeps_the_last_decision_and_says_it_is_unknown() -> None:
    for was in (True, False):
        decision = decide(SPEC, None, was)
        assert (decision.required, decision.known, decision.reason) == (was, False, "NoFreshData")


# -- when a status is written ----------------------------------------------------------------------------------

T0 = dt.datetime(2026, 11, 29, 6, 0, tzinfo=dt.UTC)
RULES = Rules(power_delta_percent=1.0, power_delta_watts=1.0, clock_delta_mhz=15, heartbeat=60.0)


def verdict(power: float, *, capping: bool = False, clock: int = 1980, at: dt.datetime = T0,
            available: bool = True) -> Verdict:
    gpu = GpuReading(key="GPU-a", uuid="GPU-a", gpu_index="0", model="H100", hostname="n1", power_watts=power,
                     sm_clock_mhz=clock, timestamp=at.timestamp(), pods=frozenset({PodKey("ns", "p")}))
    measurement = Measurement(power=power, complete=True, gpu_count=1,
                              readings=(NodeReadings("n1", power, ((gpu, ("ns/p",)),)),), pods_without_metrics=[],
                              missing_gpus=[], truncated=False, sample_time=at.timestamp())
    decision = CappingDecision(capping, "AboveThreshold" if capping else "BelowThreshold", f"{power} W")
    return Verdict(decision, measurement if available else None, available,
                   "MetricsFresh" if available else "PrometheusUnreachable", "m")


def write(current: dict[str, Any] | None, v: Verdict, now: dt.datetime = T0) -> dict[str, Any] | None:
    return desired_status(current, v, limit=1000, generation=2, now=now, rules=RULES)


def test_the_first_observation_is_written_with_its_sample_time() -> None:
    status = write(None, verdict(500.0))
    assert status is not None
    assert status["currentPower"] == 500.0 and status["lastUpdated"] == "2026-11-29T06:00:00.000Z"
    assert status["observedGeneration"] == 2 and status["cappingActionRequired"] is False


def test_small_power_changes_of_a_steady_policy_cost_no_write() -> None:
    first = write(None, verdict(500.0))
    later = T0 + dt.timedelta(seconds=5)
    assert write(first, verdict(505.0, at=later), later) is None


def test_a_change_of_one_percent_of_the_limit_is_written() -> None:
    first = write(None, verdict(500.0))
    later = T0 + dt.timedelta(seconds=5)
    assert write(first, verdict(511.0, at=later), later) is not None


def test_a_clock_change_is_written_so_the_recommender_can_learn_from_it() -> None:
    first = write(None, verdict(500.0))
    later = T0 + dt.timedelta(seconds=5)
    assert write(first, verdict(500.5, clock=1500, at=later), later) is not None


def test_the_heartbeat_writes_a_steady_policy_once_a_minute() -> None:
    first = write(None, verdict(500.0))
    later = T0 + dt.timedelta(seconds=61)
    status = write(first, verdict(500.0, at=later), later)
    assert status is not None and status["lastUpdated"] == "2026-11-29T06:01:01.000Z"


def test_a_capping_flip_is_always_written() -> None:
    first = write(None, verdict(500.0))
    assert write(first, verdict(500.0, capping=True)) is not None


def test_the_recommenders_fields_are_kept() -> None:
    first = write(None, verdict(500.0))
    assert first is not None
    first["recommendation"] = {"algorithm": "closed-loop", "gpuFrequency": 1410}
    first["conditions"].append({"type": "Conflict", "status": "False", "reason": "NoSharedGpus", "message": "",
                                "lastTransitionTime": "2026-11-29T05:00:00Z"})
    status = write(first, verdict(900.0, capping=True))
    assert status is not None and status["recommendation"] == first["recommendation"]
    assert "Conflict" in {c["type"] for c in status["conditions"]}


def test_losing_metrics_keeps_the_last_observation_and_says_why() -> None:
    first = write(None, verdict(950.0, capping=True))
    status = write(first, verdict(0.0, available=False))
    assert status is not None
    assert status["currentPower"] == 950.0 and status["lastUpdated"] == first["lastUpdated"]  # type: ignore[index]
    metrics = next(c for c in status["conditions"] if c["type"] == "MetricsAvailable")
    assert (metrics["status"], metrics["reason"]) == ("False", "PrometheusUnreachable")


def test_every_new_observation_is_written_while_the_loop_is_in_motion() -> None:
    first = write(None, verdict(400.0))
    later = T0 + dt.timedelta(seconds=1)
    steady = verdict(400.0, at=later)
    assert write(first, steady, later) is None
    moving = Verdict(steady.capping, steady.measurement, True, "MetricsFresh", "m", urgent=True)
    status = write(first, moving, later)
    assert status is not None and status["lastUpdated"] == "2026-11-29T06:00:01.000Z"
    assert write(status, moving, later) is None, "the same observation twice is still one write"
