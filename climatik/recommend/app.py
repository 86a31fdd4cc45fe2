"""Wiring of `climatik recommend`: policy and NodeFrequencies informers, the policy reconciler, its planner."""

from __future__ import annotations

from dataclasses import dataclass

from climatik.algorithms import DEFAULT_RELEASE_BAND, default_registry
from climatik.clock import Clock
from climatik.kube.client import NODE_FREQUENCIES, POLICIES
from climatik.kube.events import EventRecorder
from climatik.kube.informer import EnqueueMapped, enqueue_own_key
from climatik.kube.process import CommonSettings, ProcessShell, Wiring
from climatik.recommend.controller import RecommendReconciler
from climatik.recommend.memory import Memory
from climatik.recommend.metrics import RecommendMetrics
from climatik.recommend.nodes import NodeWriter
from climatik.recommend.planner import Planner
from climatik.recommend.routing import POLICY_INDEXES, policies_of_node
from climatik.recommend.step import StepSettings

LEASE_NAME = "climatik-recommend"


@dataclass(frozen=True)
class RecommendSettings:
    release_band: int = DEFAULT_RELEASE_BAND
    max_observation_age: float = 180.0
    resync: float = 300.0
    workers: int = 4


def build(settings: RecommendSettings, common: CommonSettings, *, clock: Clock) -> ProcessShell:
    wiring = Wiring(common, clock=clock)
    # The resync re-checks every policy now and then: an observation that went stale without an event is then
    # reported, and a write that failed for good is tried again.
    policies = wiring.informer(POLICIES, name="powercappingpolicies", indexers=POLICY_INDEXES,
                               resync_period=settings.resync)
    nodes = wiring.informer(NODE_FREQUENCIES, name="nodefrequencies")
    queue = wiring.queue("recommend")
    metrics = RecommendMetrics(wiring.registry)
    memory = Memory()
    writer = NodeWriter(api=wiring.client.node_frequencies, cache=nodes.store, metrics=metrics)
    reconciler = RecommendReconciler(
        policies=policies.store, api=wiring.client.policies, writer=writer,
        planner=Planner(policies=policies.store, writer=writer, memory=memory, enqueue=queue.add, metrics=metrics),
        memory=memory, registry=default_registry(),
        events=EventRecorder(wiring.client, component="climatik-recommend", clock=clock), clock=clock,
        metrics=metrics, settings=StepSettings(release_band=settings.release_band,
                                               max_observation_age=settings.max_observation_age),
    )
    policies.add_handler(enqueue_own_key(queue))
    nodes.add_handler(EnqueueMapped(queue, policies_of_node(policies.store)))
    return ProcessShell(
        name="climatik-recommend", registry=wiring.registry, informers=[policies, nodes],
        controllers=[wiring.controller("recommend", reconciler, queue, workers=settings.workers)],
        elector=wiring.elector(LEASE_NAME), host=common.metrics_host, port=common.metrics_port,
        grace_period=common.grace_period,
    )
