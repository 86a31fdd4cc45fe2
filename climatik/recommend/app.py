"""Wiring of `climatik recommend`: policy, NodeFrequencies, PowerDomain and Node informers, the policy and domain
reconcilers and their shared core.

A NodeFrequencies event wakes the policies it concerns: those named in its entries (they target the node) and
those whose status observes the node (their GPUs are there). A tuner reporting its inventory thus wakes the
policies that wait for it, and a spec changed by hand wakes the policies that own its entries. It also wakes the
domains the node is in (their power and shares follow the tuners' reports); a Node's labels wake every domain
(membership may change), and a new split of the domains wakes them all.

One replica plans everything (with --leader-elect, one of several replicas does). With --shard, the replicas
split the policies (climatik.kube.shards): each steps its own and writes their entries and statuses, and the
one that owns the allocator's key (climatik.recommend.core.ALLOCATOR) also splits every node budget and the
domains. A replica that takes a share over queues it; one that hands a share over forgets what it remembered of
it, so that it never plans from a result that another replica has since moved on from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from climatik.algorithms import default_registry
from climatik.api import DecodedCache
from climatik.api.constants import DEFAULT_RELEASE_BAND
from climatik.api.domain import PowerDomain
from climatik.clock import Clock
from climatik.kube.client import NODE_FREQUENCIES, NODES, POLICIES, POWER_DOMAINS
from climatik.kube.events import EventRecorder
from climatik.kube.informer import EnqueueMapped, enqueue_own_key
from climatik.kube.process import CommonSettings, ProcessShell, Wiring
from climatik.kube.shards import sole_replica
from climatik.kube.store import CacheReader, IndexFunc, Obj, object_key
from climatik.recommend.core import ALLOCATOR, Recommender
from climatik.recommend.domainstatus import DomainMetrics, DomainReconciler
from climatik.recommend.reconciler import RecommendMetrics, RecommendReconciler
from climatik.recommend.step import StepSettings
from climatik.recommend.writer import NodeWriter

LEASE_NAME = "climatik-recommend"
#: The shard group of recommenders run with --shard (climatik.kube.shards): they split the policies.
SHARD_GROUP = "climatik-recommend"
#: The recommender's cache of Nodes holds their name and labels only (which domain a node is in): a Node object
#: as served is tens of kilobytes (images, conditions), a fleet of them hundreds of megabytes.
NODE_FIELDS = ("name", "labels", "resourceVersion", "uid")


def node_labels_only(obj: Obj) -> Obj:
    """Informer transform: a Node reduced to what the recommender reads."""
    metadata = obj.get("metadata") or {}
    return {"metadata": {key: metadata[key] for key in NODE_FIELDS if key in metadata}}
#: Policy cache index: the nodes a policy's status observes.
BY_OBSERVED_NODE = "observedNode"


@dataclass(frozen=True)
class RecommendSettings:
    release_band: int = DEFAULT_RELEASE_BAND
    max_observation_age: float = 180.0
    resync: float = 300.0
    workers: int = 4
    domain_interval: float = 1.0


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


class DomainView:
    """The power domains (typed, decoded once per version) and the nodes' labels, read from the caches."""

    def __init__(self, domains: CacheReader, nodes: CacheReader) -> None:
        self._domains = domains
        self._nodes = nodes
        self._decoded: DecodedCache[PowerDomain] = DecodedCache(PowerDomain.from_api)

    def __call__(self) -> tuple[list[PowerDomain], dict[str, dict[str, str]]]:
        domains = [d for d in self._decoded.decode_all(self._domains.list()) if not isinstance(d, Exception)]
        labels = {}
        for node in self._nodes.list():
            metadata = node.get("metadata") or {}
            if isinstance(metadata.get("name"), str):
                labels[metadata["name"]] = dict(metadata.get("labels") or {})
        return domains, labels

    def names(self) -> list[str]:
        return sorted(object_key(obj) for obj in self._domains.list())


def build(settings: RecommendSettings, common: CommonSettings, *, clock: Clock) -> ProcessShell:
    wiring = Wiring(common, clock=clock)
    # The resync re-checks every policy now and then: an observation that went stale without an event is then
    # reported, and a write that failed for good is tried again.
    policies = wiring.informer(POLICIES, name="powercappingpolicies", indexers=POLICY_INDEXES,
                               resync_period=settings.resync)
    nodes = wiring.informer(NODE_FREQUENCIES, name="nodefrequencies")
    domains = wiring.informer(POWER_DOMAINS, name="powerdomains", resync_period=settings.resync)
    cluster_nodes = wiring.informer(NODES, name="nodes", transform=node_labels_only)
    queue = wiring.queue("recommend")
    domain_queue = wiring.queue("domains")
    metrics = RecommendMetrics(wiring.registry)
    core = Recommender(registry=default_registry(),
                       settings=StepSettings(release_band=settings.release_band,
                                             max_observation_age=settings.max_observation_age,
                                             domain_interval=settings.domain_interval))
    view = DomainView(domains.store, cluster_nodes.store)
    events = EventRecorder(wiring.client, component="climatik-recommend", clock=clock)
    shards = wiring.shards(SHARD_GROUP, keys=lambda: [*policies.store.keys(), ALLOCATOR])
    writer = NodeWriter(api=wiring.client.node_frequencies, cache=nodes.store, metrics=metrics,
                        hold_all=shards.hold_all if shards is not None else None)

    def wake_domains(*_: object) -> list[str]:
        return view.names()

    def wake_all_domains() -> None:
        for name in view.names():
            domain_queue.add(name)

    reconciler = RecommendReconciler(
        policies=policies.store, api=wiring.client.policies, writer=writer, core=core, events=events, clock=clock,
        enqueue=queue.add, metrics=metrics, domains=view,
        on_split=wake_all_domains, hold=shards.hold if shards is not None else sole_replica,
        sharded=shards is not None,
    )
    domain_reconciler = DomainReconciler(
        domains=domains.store, api=wiring.client.resource(POWER_DOMAINS), core=core,
        inputs=lambda: (*view(), reconciler.all_policies(), writer.objects()),
        write_specs=writer.write, events=events, clock=clock, enqueue_policy=queue.add,
        metrics=DomainMetrics(wiring.registry), hold=shards.hold if shards is not None else sole_replica,
    )
    policies.add_handler(enqueue_own_key(queue))
    nodes.add_handler(EnqueueMapped(queue, policies_of_node(policies.store)))
    nodes.add_handler(EnqueueMapped(domain_queue, wake_domains))
    domains.add_handler(enqueue_own_key(domain_queue))
    cluster_nodes.add_handler(EnqueueMapped(domain_queue, wake_domains))
    if shards is not None:
        def gained(keys: frozenset[str]) -> None:
            # The allocator splits the budgets of every policy and the domains; a policy's new owner steps it.
            for key in (policies.store.keys() if ALLOCATOR in keys else keys - {ALLOCATOR}):
                queue.add(key)
            if ALLOCATOR in keys:
                wake_all_domains()

        def lost(keys: frozenset[str]) -> None:
            for key in keys - {ALLOCATOR}:
                core.forget(key)
                metrics.forget(key)
            if ALLOCATOR in keys:
                wake_all_domains()  # they drop their metrics here

        shards.on_gained(gained)
        shards.on_lost(lost)
    return ProcessShell(
        name="climatik-recommend", registry=wiring.registry, informers=[policies, nodes, domains, cluster_nodes],
        controllers=[wiring.controller("recommend", reconciler, queue, workers=settings.workers),
                     wiring.controller("domains", domain_reconciler, domain_queue, workers=1)],
        elector=wiring.elector(LEASE_NAME), shards=shards, host=common.metrics_host, port=common.metrics_port,
        grace_period=common.grace_period,
    )
