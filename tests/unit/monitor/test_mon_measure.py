"""A policy's power: selected running pods, distinct GPUs (time-slicing counts once), per-node observations."""

from __future__ import annotations

from typing import Any

from climatik.api import LabelSelector, SelectorRequirement
from climatik.kube.store import BY_NAMESPACE, POD_INDEXES, Store
from climatik.monitor.measure import MAX_GPUS_PER_NODE, measure
from climatik.monitor.pods import BY_LABEL, SelectedPod, candidate_pods, index_by_label, select_pods
from climatik.prom.profiles import PodKey
from climatik.prom.snapshot import GpuReading, GpuSnapshot

NOW = 1_700_000_000.0


def pod(name: str, labels: dict[str, str], *, node: str | None = "n1", phase: str = "Running",
        deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "ns", "labels": labels}
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-29T00:00:00Z"
    return {"metadata": metadata, "spec": {"nodeName": node} if node else {}, "status": {"phase": phase}}


def reading(uuid: str, watts: float, *pods: str, host: str = "n1", clock: float | None = 1980.0) -> GpuReading:
    return GpuReading(key=uuid, uuid=uuid, index=uuid[-1], model="NVIDIA H100 80GB HBM3", hostname=host,
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


def test_pods_without_gpu_series_are_reported_and_make_the_total_incomplete() -> None:
    pods = [SelectedPod(PodKey("ns", "a"), "n1"), SelectedPod(PodKey("ns", "cpu-only"), "n1")]
    result = measure(pods, snapshot(reading("GPU-1", 100.0, "a")))
    assert result.power == 100.0
    assert result.pods_without_metrics == ["ns/cpu-only"]
    assert not result.complete


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
    assert result.truncated


def test_no_selected_pods_is_zero_power_with_complete_data() -> None:
    result = measure([], snapshot(reading("GPU-1", 100.0, "other")))
    assert result.power == 0.0 and result.complete and result.nodes == []


def test_candidates_come_from_the_rarest_match_label_or_the_namespace() -> None:
    store = Store({**POD_INDEXES, BY_LABEL: index_by_label})
    for i in range(6):
        store.upsert(pod(f"p{i}", {"app": "llm", "shard": "a" if i < 2 else "b"}))
    store.upsert(pod("web", {"app": "web"}))
    narrow = LabelSelector(match_labels={"app": "llm", "shard": "a"})
    assert sorted(p["metadata"]["name"] for p in candidate_pods(store, "ns", narrow)) == ["p0", "p1"]
    assert len(candidate_pods(store, "ns", LabelSelector())) == len(store.by_index(BY_NAMESPACE, "ns")) == 7
    assert [p.key.name for p in select_pods(narrow, candidate_pods(store, "ns", narrow))] == ["p0", "p1"]
