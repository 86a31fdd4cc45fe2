"""The monitor's reconciler against an in-process API server: what one reconcile of a policy writes in its status,
which Events it raises and what it exports, from the pods in the cache and the latest Prometheus sample."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from support.clock import FakeClock
from support.kube import FakeCluster, FakeKubeClient
from support.livecache import LiveCache

from climatik.api import LabelSelector
from climatik.kube.client import EVENTS, PODS, POLICIES
from climatik.kube.events import EventRecorder
from climatik.kube.store import BY_NAMESPACE, POD_INDEXES, Store
from climatik.monitor.core import Rules, SampleOutcome, select_pods
from climatik.monitor.reconciler import BY_LABEL, LatestSample, MonitorMetrics, MonitorReconciler, candidate_pods
from climatik.monitor.reconciler import index_by_label as label_index
from climatik.prom.errors import PromConnectionError
from climatik.prom.profiles import PodKey
from climatik.prom.snapshot import GpuReading, GpuSnapshot

POLICY = "ml/llm"


class World:
    """A cluster with one namespace of pods, the reconciler under test, and the sample it reads."""

    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.client = FakeKubeClient(self.cluster)
        self.clock = FakeClock()
        self.registry = CollectorRegistry()
        self.latest = LatestSample()
        self.reconciler = MonitorReconciler(
            policies=LiveCache(self.cluster, POLICIES), pods=LiveCache(self.cluster, PODS,
                                                                       {**POD_INDEXES, BY_LABEL: label_index}),
            api=self.client.policies, latest=self.latest,
            events=EventRecorder(self.client, component="climatik-monitor", clock=self.clock), clock=self.clock,
            metrics=MonitorMetrics(self.registry), rules=Rules.for_period(5.0))

    def policy(self, *, limit: int = 1000, selector: dict[str, Any] | None = None) -> None:
        self.client.policies.create({"metadata": {"name": "llm", "namespace": "ml"},
                                     "spec": {"powerCapLimit": limit,
                                              "selector": selector or {"matchLabels": {"app": "llm"}}}})

    def pod(self, name: str, node: str, *, app: str = "llm", namespace: str = "ml") -> None:
        self.client.pods.create({"metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
                                 "spec": {"nodeName": node, "containers": []}})
        self.cluster.patch(PODS, namespace, name, {"status": {"phase": "Running"}}, subresource="status")

    def sample(self, watts: dict[str, tuple[float, str]], *, age: float = 1.0) -> None:
        """A Prometheus sample taken now: per GPU UUID, its power and the pod (ns/name) that uses it."""
        now = self.clock.wall().timestamp()
        gpus = {uuid: GpuReading(key=uuid, uuid=uuid, gpu_index=uuid[-1], model="NVIDIA H100 80GB HBM3",
                                 hostname="exporter", power_watts=power, sm_clock_mhz=1980.0, timestamp=now - age,
                                 pods=frozenset({PodKey(*pod.split("/"))}))
                for uuid, (power, pod) in watts.items()}
        pod_gpus: dict[PodKey, frozenset[str]] = {}
        for uuid, reading in gpus.items():
            for pod in reading.pods:
                pod_gpus[pod] = pod_gpus.get(pod, frozenset()) | {uuid}
        self.latest.set(SampleOutcome(GpuSnapshot(query_time=now, gpus=gpus, pod_gpus=pod_gpus), None, now))

    def reconcile(self) -> None:
        self.reconciler(POLICY)

    def status(self) -> dict[str, Any]:
        return dict(self.client.policies.get("llm", namespace="ml").get("status") or {})

    def condition(self, type: str) -> tuple[str, str]:
        found = next(c for c in self.status()["conditions"] if c["type"] == type)
        return found["status"], found["reason"]

    def events(self) -> list[tuple[str, str]]:
        return [(e["type"], e["reason"]) for e in self.cluster.objects(EVENTS)]

    def status_writes(self) -> int:
        return sum(1 for r in self.cluster.writes() if r.resource == POLICIES and r.subresource == "status")

    def metric(self, name: str) -> float | None:
        return self.registry.get_sample_value(name, {"policy": POLICY})


@pytest.fixture
def world() -> World:
    w = World()
    w.policy()
    w.pod("llm-0", "n1")
    w.pod("llm-1", "n2")
    w.pod("web-0", "n1", app="web")
    return w


def test_a_policy_over_its_threshold_is_measured_per_node_and_said_to_need_capping(world: World) -> None:
    world.sample({"GPU-a1": (480.0, "ml/llm-0"), "GPU-b1": (470.0, "ml/llm-1"), "GPU-c1": (600.0, "ml/web-0")})
    world.reconcile()

    status = world.status()
    assert status["currentPower"] == 950.0 and status["cappingActionRequired"] is True
    assert [(n["name"], [g["uuid"] for g in n["gpus"]]) for n in status["nodes"]] == [("n1", ["GPU-a1"]),
                                                                                     ("n2", ["GPU-b1"])]
    assert world.condition("MetricsAvailable") == ("True", "MetricsFresh")
    assert world.condition("CappingRequired") == ("True", "AboveThreshold")
    assert ("Normal", "CappingStarted") in world.events()
    assert world.metric("climatik_monitor_policy_power_watts") == 950.0
    assert world.metric("climatik_monitor_policy_capping") == 1


def test_a_steady_policy_is_not_written_again_until_its_heartbeat(world: World) -> None:
    world.sample({"GPU-a1": (200.0, "ml/llm-0"), "GPU-b1": (200.0, "ml/llm-1")})
    world.reconcile()
    written = world.status_writes()

    for _ in range(5):
        world.clock.advance(5.0)
        world.sample({"GPU-a1": (201.0, "ml/llm-0"), "GPU-b1": (200.0, "ml/llm-1")})
        world.reconcile()
    assert world.status_writes() == written

    world.clock.advance(40.0)
    world.sample({"GPU-a1": (201.0, "ml/llm-0"), "GPU-b1": (200.0, "ml/llm-1")})
    world.reconcile()
    assert world.status_writes() == written + 1


def test_a_failed_query_keeps_the_last_observation_and_warns_once(world: World) -> None:
    world.sample({"GPU-a1": (300.0, "ml/llm-0"), "GPU-b1": (300.0, "ml/llm-1")})
    world.reconcile()
    observed = world.status()["lastUpdated"]

    for _ in range(3):
        world.clock.advance(5.0)
        world.latest.set(SampleOutcome(None, PromConnectionError("connection refused"),
                                       world.clock.wall().timestamp()))
        world.reconcile()

    assert world.status()["lastUpdated"] == observed and world.status()["currentPower"] == 600.0
    assert world.condition("MetricsAvailable") == ("False", "PrometheusUnreachable")
    assert world.events().count(("Warning", "MetricsLost")) == 1
    assert world.metric("climatik_monitor_policy_metrics_available") == 0


def test_a_selector_that_cannot_select_is_reported_without_the_recommenders_condition(world: World) -> None:
    world.client.policies.delete("llm", namespace="ml")
    world.policy(selector={"matchExpressions": [{"key": "app", "operator": "In", "values": []}]})
    world.sample({"GPU-a1": (300.0, "ml/llm-0")})
    world.reconcile()

    assert world.condition("MetricsAvailable") == ("False", "InvalidSelector")
    assert "InvalidSpec" not in {c["type"] for c in world.status()["conditions"]}
    assert ("Warning", "InvalidSpec") not in world.events(), "the recommender is the one that says so"


def test_a_deleted_policy_leaves_no_metrics_behind(world: World) -> None:
    world.sample({"GPU-a1": (300.0, "ml/llm-0")})
    world.reconcile()
    assert world.metric("climatik_monitor_policy_power_watts") == 300.0

    world.client.policies.delete("llm", namespace="ml")
    world.reconcile()
    assert world.metric("climatik_monitor_policy_power_watts") is None


def test_candidates_come_from_the_rarest_match_label_or_the_namespace() -> None:
    def pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"},
                "status": {"phase": "Running"}}

    store = Store({**POD_INDEXES, BY_LABEL: label_index})
    for i in range(6):
        store.upsert(pod(f"p{i}", {"app": "llm", "shard": "a" if i < 2 else "b"}))
    store.upsert(pod("web", {"app": "web"}))
    narrow = LabelSelector(match_labels={"app": "llm", "shard": "a"})
    assert sorted(p["metadata"]["name"] for p in candidate_pods(store, "ns", narrow)) == ["p0", "p1"]
    assert len(candidate_pods(store, "ns", LabelSelector())) == len(store.by_index(BY_NAMESPACE, "ns")) == 7
    assert [p.key.name for p in select_pods(narrow, candidate_pods(store, "ns", narrow))] == ["p0", "p1"]


def capping(world: World) -> None:
    """The policy is over its threshold and the recommender has capped it."""
    world.sample({"GPU-a1": (480.0, "ml/llm-0"), "GPU-b1": (470.0, "ml/llm-1")})
    world.reconcile()
    status = world.status()
    status["recommendation"] = {"algorithm": "closed-loop", "gpuFrequency": 1200, "targetCount": 2,
                                "applied": True, "lastChanged": "2025-01-01T00:00:00Z"}
    world.cluster.patch(POLICIES, "ml", "llm", {"status": status}, subresource="status")


def test_a_restarted_monitor_writes_nothing_before_its_first_sample(world: World) -> None:
    capping(world)
    writes = world.status_writes()
    restarted = MonitorReconciler(policies=LiveCache(world.cluster, POLICIES),
                                  pods=LiveCache(world.cluster, PODS, {**POD_INDEXES, BY_LABEL: label_index}),
                                  api=world.client.policies, latest=LatestSample(), events=None, clock=world.clock)
    restarted(POLICY)

    assert world.status_writes() == writes
    assert world.status()["cappingActionRequired"] is True


def test_losing_prometheus_while_capping_keeps_capping_required_and_says_it_is_unknown(world: World) -> None:
    capping(world)
    world.clock.advance(5.0)
    world.latest.set(SampleOutcome(None, PromConnectionError("connection refused"), world.clock.wall().timestamp()))
    world.reconcile()

    assert world.status()["cappingActionRequired"] is True
    assert world.condition("CappingRequired") == ("Unknown", "NoFreshData")
    assert ("Normal", "CappingReleased") not in world.events()
    assert ("Warning", "MetricsLost") in world.events()


def test_a_loop_resting_just_over_its_threshold_is_written_only_at_its_heartbeat(world: World) -> None:
    capping(world)
    world.clock.advance(60.0)
    world.sample({"GPU-a1": (455.0, "ml/llm-0"), "GPU-b1": (450.0, "ml/llm-1")})  # 905 W, inside a 1 % deadband
    world.reconcile()
    writes = world.status_writes()

    for second in range(1, 40):
        world.clock.advance(1.0)
        world.sample({"GPU-a1": (455.0 + second % 3, "ml/llm-0"), "GPU-b1": (450.0, "ml/llm-1")})
        world.reconcile()

    assert world.status_writes() == writes, "resting above the threshold is steady"


def test_every_new_observation_is_written_while_the_recommender_is_changing_targets(world: World) -> None:
    capping(world)
    status = world.status()
    status["recommendation"]["lastChanged"] = "2025-01-01T00:00:00Z"
    world.cluster.patch(POLICIES, "ml", "llm", {"status": status}, subresource="status")
    writes = world.status_writes()
    for _ in range(3):
        world.clock.advance(1.0)
        world.sample({"GPU-a1": (480.0, "ml/llm-0"), "GPU-b1": (470.0, "ml/llm-1")})
        world.reconcile()

    assert world.status_writes() == writes + 3
