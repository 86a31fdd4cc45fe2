"""The simulated-time loop runs the controllers' own code: one recorded sequence of Prometheus samples, fed
through the three reconcilers against an in-process API server and through the benchmark's loop, gives the
same policy statuses, the same NodeFrequencies specs and the same tuner statuses, write for write."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest
from support.clock import FakeClock
from support.kube import FakeCluster, FakeKubeClient
from support.livecache import LiveCache

from climatik.algorithms import default_registry
from climatik.api import AlgorithmRef, to_dict
from climatik.kube.client import NODE_FREQUENCIES, PODS, POLICIES
from climatik.kube.store import POD_INDEXES
from climatik.monitor.core import SampleOutcome
from climatik.monitor.reconciler import BY_LABEL, LatestSample, MonitorReconciler, index_by_label
from climatik.recommend.app import POLICY_INDEXES
from climatik.recommend.core import Recommender
from climatik.recommend.reconciler import RecommendReconciler
from climatik.recommend.writer import NodeWriter
from climatik.sim.loop import DataPath, ProductionLoop, Scenario, run
from climatik.sim.loop import scenario as standard
from climatik.sim.loop.production import CREATED, Controllers, NodeGpus
from climatik.sim.loop.scenario import World
from climatik.tune.applier import Applier
from climatik.tune.reconciler import TuneReconciler
from climatik.tune.state import StateStore

DATAPATH = DataPath()


class Cluster:
    """The reconciler path: an in-process API server holding the scenario's pods, policies and nodes, and the
    three reconcilers (the tuners over the same kind of simulated GPUs as the loop's)."""

    def __init__(self, scenario: Scenario, controllers: Controllers) -> None:
        self.api = FakeCluster()
        client = FakeKubeClient(self.api)
        self.clock = FakeClock(start=0.0, start_wall=dt.datetime.fromtimestamp(DATAPATH.epoch_s, dt.UTC))
        self.world = World(scenario, dt_s=0.05, gpu_lag_s=DATAPATH.gpu_lag_s)
        self.latest = LatestSample()
        policies = LiveCache(self.api, POLICIES, POLICY_INDEXES)
        nodes = LiveCache(self.api, NODE_FREQUENCIES)
        for plan in scenario.policies:
            for placed in self.world.gpus_of(plan.name):
                assert placed.pod is not None
                client.pods.create({"metadata": {"name": placed.pod.pod, "namespace": placed.pod.namespace,
                                                 "labels": {"app": plan.name}},
                                    "spec": {"nodeName": placed.node.name, "containers": []}})
                self.api.patch(PODS, placed.pod.namespace, placed.pod.pod, {"status": {"phase": "Running"}},
                               subresource="status")
            client.policies.create({"metadata": {"name": plan.name, "namespace": plan.namespace,
                                                 "creationTimestamp": CREATED},
                                    "spec": to_dict(controllers.spec(plan, 0.0))})
        for node in self.world.nodes:
            client.node_frequencies.create({"metadata": {"name": node.name}, "spec": {"nodeName": node.name}})
        self.monitor = MonitorReconciler(
            policies=policies, pods=LiveCache(self.api, PODS, {**POD_INDEXES, BY_LABEL: index_by_label}),
            api=client.policies, latest=self.latest, events=None, clock=self.clock, rules=controllers.rules)
        self.recommender = RecommendReconciler(
            policies=policies, api=client.policies, writer=NodeWriter(api=client.node_frequencies, cache=nodes),
            core=Recommender(registry=controllers.registry, settings=controllers.recommender.settings), events=None,
            clock=self.clock)
        self.tuners = {node.name: TuneReconciler(
            node_name=node.name, cache=nodes, api=client.node_frequencies,
            applier=Applier(state=StateStore(None), clock=self.clock, gpu_backend=NodeGpus(node)), events=None,
            clock=self.clock) for node in self.world.nodes}

    def at(self, now_s: float) -> None:
        self.clock.advance(now_s - self.clock.now())

    def statuses(self) -> dict[str, Any]:
        return {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o.get("status")
                for o in self.api.objects(POLICIES)}

    def nodes(self) -> dict[str, Any]:
        return {o["metadata"]["name"]: (o["spec"], o.get("status")) for o in self.api.objects(NODE_FREQUENCIES)}


def loop_statuses(controllers: Controllers) -> dict[str, Any]:
    return {key: (controllers.api.policies.get(key) or {}).get("status") for key in controllers.plans}


def loop_nodes(controllers: Controllers) -> dict[str, Any]:
    return {o["metadata"]["name"]: (o["spec"], o.get("status")) for o in controllers.api.nodes.list()}


@pytest.mark.parametrize("algorithm", ["closed-loop", "dynamic-frequency-scaler"])
def test_the_reconcilers_and_the_loop_write_the_same_statuses_and_targets(algorithm: str) -> None:
    scenario = replace(standard.step(), duration_s=45.0)
    ref = AlgorithmRef(algorithm)
    recorded = ProductionLoop(default_registry(plugins=False).create(ref), ref=ref)
    run(scenario, recorded, datapath=DATAPATH)
    assert len(recorded.samples) >= 40

    loop = Controllers(World(scenario, dt_s=0.05, gpu_lag_s=DATAPATH.gpu_lag_s), DATAPATH,
                       registry=recorded.registry, settings=recorded.step_settings, ref=ref)
    cluster = Cluster(scenario, loop)
    nodes = [node.name for node in loop.world.nodes]
    for name in nodes:
        loop.tune(name, 0.0)
        cluster.tuners[name](name)

    changed = 0
    for now_s, outcome in recorded.samples:
        cluster.at(now_s)
        loop.latest = outcome
        cluster.latest.set(SampleOutcome(outcome.snapshot, outcome.error, outcome.taken_at))
        for key in sorted(loop.plans):
            loop.monitor(key, now_s)
            cluster.monitor(key)
        for key in sorted(loop.plans):
            loop.recommend(key, now_s)
            cluster.recommender(key)
        for name in nodes:
            loop.tune(name, now_s)
            cluster.tuners[name](name)
        assert loop_statuses(loop) == cluster.statuses(), f"policy status at {now_s:.2f} s"
        assert loop_nodes(loop) == cluster.nodes(), f"NodeFrequencies at {now_s:.2f} s"
        changed += any(spec.get("gpuFrequencies") for spec, _ in loop_nodes(loop).values())
    assert changed, "the sequence drove the policy to cap some GPUs"
