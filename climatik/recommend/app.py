"""Wiring of `climatik recommend`: policy and NodeFrequencies informers, the policy reconciler and its core.

A NodeFrequencies event wakes the policies it concerns: those named in its entries (they target the node) and
those whose status observes the node (their GPUs are there). A tuner reporting its inventory thus wakes the
policies that wait for it, and a spec changed by hand wakes the policies that own its entries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from climatik.algorithms import default_registry
from climatik.api.constants import DEFAULT_RELEASE_BAND
from climatik.clock import Clock
from climatik.kube.client import NODE_FREQUENCIES, POLICIES
from climatik.kube.events import EventRecorder
from climatik.kube.informer import EnqueueMapped, enqueue_own_key
from climatik.kube.process import CommonSettings, ProcessShell, Wiring
from climatik.kube.store import CacheReader, IndexFunc, Obj, object_key
from climatik.recommend.core import Recommender
from climatik.recommend.reconciler import NodeWriter, RecommendMetrics, RecommendReconciler
from climatik.recommend.step import StepSettings

LEASE_NAME = "climatik-recommend"
#: Policy cache index: the nodes a policy's status observes.
BY_OBSERVED_NODE = "observedNode"


@dataclass(frozen=True)
class RecommendSettings:
    release_band: int = DEFAULT_RELEASE_BAND
    max_observation_age: float = 180.0
    resync: float = 300.0
    workers: int = 4


def observed_nodes(obj: Obj) -> list[str]:
    """The node names in a policy's status.nodes (the monitor's observations)."""
    status = obj.get("status")
    nodes = status.get("nodes") if isinstance(status, Mapping) else None
    names = {node.get("name") for node in nodes or [] if isinstance(node, Mapping)}
    return sorted(name for name in names if isinstance(name, str) and name)


POLICY_INDEXES: Mapping[str, IndexFunc] = {BY_OBSERVED_NODE: observed_nodes}


def policies_of_node(policies: CacheReader) -> Callable[[Obj], list[str]]:
    """A mapper from a NodeFrequencies object to the keys of the policies it concerns."""

    def mapper(obj: Obj) -> list[str]:
        spec: Mapping[str, Any] = obj.get("spec") or {}
        keys = {entry.get("policy") for field in ("gpuFrequencies", "cpuFrequencies")
                for entry in spec.get(field) or [] if isinstance(entry, Mapping)}
        name = spec.get("nodeName") or (obj.get("metadata") or {}).get("name")
        if isinstance(name, str) and name:
            keys |= {object_key(policy) for policy in policies.by_index(BY_OBSERVED_NODE, name)}
        return sorted(key for key in keys if isinstance(key, str) and "/" in key)

    return mapper


def build(settings: RecommendSettings, common: CommonSettings, *, clock: Clock) -> ProcessShell:
    wiring = Wiring(common, clock=clock)
    # The resync re-checks every policy now and then: an observation that went stale without an event is then
    # reported, and a write that failed for good is tried again.
    policies = wiring.informer(POLICIES, name="powercappingpolicies", indexers=POLICY_INDEXES,
                               resync_period=settings.resync)
    nodes = wiring.informer(NODE_FREQUENCIES, name="nodefrequencies")
    queue = wiring.queue("recommend")
    metrics = RecommendMetrics(wiring.registry)
    core = Recommender(registry=default_registry(),
                       settings=StepSettings(release_band=settings.release_band,
                                             max_observation_age=settings.max_observation_age))
    reconciler = RecommendReconciler(
        policies=policies.store, api=wiring.client.policies,
        writer=NodeWriter(api=wiring.client.node_frequencies, cache=nodes.store, metrics=metrics), core=core,
        events=EventRecorder(wiring.client, component="climatik-recommend", clock=clock), clock=clock,
        enqueue=queue.add, metrics=metrics,
    )
    policies.add_handler(enqueue_own_key(queue))
    nodes.add_handler(EnqueueMapped(queue, policies_of_node(policies.store)))
    return ProcessShell(
        name="climatik-recommend", registry=wiring.registry, informers=[policies, nodes],
        controllers=[wiring.controller("recommend", reconciler, queue, workers=settings.workers)],
        elector=wiring.elector(LEASE_NAME), host=common.metrics_host, port=common.metrics_port,
        grace_period=common.grace_period,
    )
