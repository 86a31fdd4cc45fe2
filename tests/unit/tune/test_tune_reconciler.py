"""The tuner's reconciler against an in-process API server: what one reconcile of its node's NodeFrequencies
object does to the GPUs, what it writes in status, and what it says when a device fails."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from support.clock import FakeClock
from support.kube import FakeCluster, FakeKubeClient
from support.livecache import LiveCache
from tune_doubles import GPU_A, GPU_B, FakeGpuBackend

from climatik.kube.client import EVENTS, NODE_FREQUENCIES
from climatik.kube.events import EventRecorder
from climatik.tune.applier import Applier
from climatik.tune.reconciler import TuneMetrics, TuneReconciler
from climatik.tune.state import StateStore

NODE = "gpu-node-1"


class World:
    """One node's object in the cluster, its GPUs, and the tuner's reconciler."""

    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.client = FakeKubeClient(self.cluster)
        self.clock = FakeClock()
        self.gpus = FakeGpuBackend([GPU_A, GPU_B])
        self.registry = CollectorRegistry()
        self.reconciler = TuneReconciler(
            node_name=NODE, cache=LiveCache(self.cluster, NODE_FREQUENCIES), api=self.client.node_frequencies,
            applier=Applier(state=StateStore(None), clock=self.clock, gpu_backend=self.gpus),
            events=EventRecorder(self.client, component="climatik-tune", host=NODE, clock=self.clock),
            clock=self.clock, metrics=TuneMetrics(self.registry, NODE))

    def spec(self, entries: dict[str, int], *, policy: str = "ml/llm") -> None:
        gpu_entries = [{"gpuId": uuid, "targetFrequency": mhz, "policy": policy} for uuid, mhz in entries.items()]
        body = {"metadata": {"name": NODE}, "spec": {"nodeName": NODE, "gpuFrequencies": gpu_entries}}
        if any(o["metadata"]["name"] == NODE for o in self.cluster.objects(NODE_FREQUENCIES)):
            current = self.client.node_frequencies.get(NODE)
            current["spec"] = body["spec"]
            self.client.node_frequencies.replace(current)
        else:
            self.client.node_frequencies.create(body)

    def reconcile(self) -> float | None:
        return self.reconciler(NODE).requeue_after

    def status(self) -> dict[str, Any]:
        return dict(self.client.node_frequencies.get(NODE).get("status") or {})

    def entry(self, uuid: str) -> dict[str, Any]:
        return next(e for e in self.status()["gpuFrequencies"] if e["gpuId"] == uuid)

    def condition(self, type: str) -> tuple[str, str]:
        found = next(c for c in self.status()["conditions"] if c["type"] == type)
        return found["status"], found["reason"]

    def status_writes(self) -> int:
        return sum(1 for r in self.cluster.writes() if r.resource == NODE_FREQUENCIES and r.subresource == "status")

    def events(self) -> list[tuple[str, str]]:
        return [(e["type"], e["reason"]) for e in self.cluster.objects(EVENTS)]


@pytest.fixture
def world() -> World:
    return World()


def test_targets_are_applied_and_reported_with_the_node_inventory(world: World) -> None:
    world.spec({GPU_A: 1200, GPU_B: 1203})
    assert world.reconcile() == 30.0, "the tuner looks again after its resync"

    assert world.gpus.locked == {GPU_A: 1200, GPU_B: 1200}
    assert world.entry(GPU_A) | {"message": None} == {"gpuId": GPU_A, "status": "Applied", "targetFrequency": 1200,
                                                      "currentFrequency": 1200, "message": None}
    assert "snapped down to 1200 MHz" in world.entry(GPU_B)["message"]
    status = world.status()
    assert status["observedGeneration"] == 1 and status["appliedCount"] == 2 and status["gpuCount"] == 2
    assert [g["uuid"] for g in status["inventory"]["gpus"]] == [GPU_A, GPU_B]
    assert world.condition("Ready") == ("True", "Applied") and world.condition("Degraded") == ("False", "AsExpected")
    assert world.registry.get_sample_value("climatik_tune_gpu_applied_mhz", {"node": NODE, "gpu": GPU_A}) == 1200


def test_a_steady_spec_costs_no_hardware_call_and_no_write(world: World) -> None:
    world.spec({GPU_A: 1200})
    world.reconcile()
    changes, writes = len(world.gpus.changes()), world.status_writes()

    for _ in range(3):
        world.clock.advance(30.0)
        world.reconcile()

    assert len(world.gpus.changes()) == changes and world.status_writes() == writes


def test_an_entry_that_goes_away_gets_its_default_back(world: World) -> None:
    world.spec({GPU_A: 1200, GPU_B: 900})
    world.reconcile()
    world.spec({GPU_B: 900})
    world.reconcile()

    assert world.gpus.locked == {GPU_A: None, GPU_B: 900}
    assert [e["gpuId"] for e in world.status()["gpuFrequencies"]] == [GPU_B]
    assert world.status()["observedGeneration"] == 2


def test_a_deleted_object_restores_every_gpu(world: World) -> None:
    world.spec({GPU_A: 1200, GPU_B: 900})
    world.reconcile()
    world.client.node_frequencies.delete(NODE)
    world.reconcile()

    assert world.gpus.locked == {GPU_A: None, GPU_B: None}


def test_a_gpu_the_node_does_not_have_is_reported_once(world: World) -> None:
    world.spec({GPU_A: 1200, "GPU-elsewhere": 1200})
    world.reconcile()
    world.clock.advance(30.0)
    world.reconcile()

    assert world.entry("GPU-elsewhere")["status"] == "Unsupported"
    assert world.condition("Ready") == ("False", "NotAllApplied")
    assert world.condition("Degraded") == ("True", "EntriesFailed")
    assert world.events().count(("Warning", "ApplyUnsupported")) == 1
    assert world.gpus.locked[GPU_A] == 1200, "the other entry is applied all the same"


def test_another_nodes_key_is_ignored(world: World) -> None:
    world.spec({GPU_A: 1200})
    assert world.reconciler("other-node").requeue_after is None
    assert world.gpus.changes() == []
