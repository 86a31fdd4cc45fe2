"""Wiring of `climatik monitor`: pod and policy informers, the Prometheus sampler, the policy reconciler.

One replica measures every policy (with --leader-elect, one of several replicas does). With --shard, the
replicas split the policies (climatik.kube.shards): each samples only the pods of its own policies and writes
only their status, and takes over the policies of a replica that is gone; with --shard-by=namespace every policy of
a namespace goes to one replica, which then reads whole namespaces (climatik.prom.scope).

The pod cache keeps only what the monitor reads of each pod (climatik.monitor.pods)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from climatik.api.constants import DEFAULT_RELEASE_BAND
from climatik.clock import Clock
from climatik.kube.client import PODS, POLICIES
from climatik.kube.events import EventRecorder
from climatik.kube.informer import enqueue_own_key
from climatik.kube.process import CommonSettings, ProcessShell, Wiring
from climatik.kube.shards import namespace_of, sole_replica
from climatik.kube.store import POD_INDEXES
from climatik.kube.workqueue import WorkQueue
from climatik.monitor.core import Rules, clock_level
from climatik.monitor.pods import PodTrimmer
from climatik.monitor.reconciler import (
    BY_LABEL,
    SAMPLE_KEY,
    DecodedPolicies,
    LatestSample,
    MonitorMetrics,
    MonitorReconciler,
    PodSelections,
    Sampler,
    index_by_label,
    sampling_scope,
)
from climatik.prom import GpuSampler, PromClient, PromQueryMetrics, PromSettings, make_session, profile_named

LEASE_NAME = "climatik-monitor"
#: The shard group of monitors run with --shard (climatik.kube.shards): they split the policies.
SHARD_GROUP = "climatik-monitor"
#: With --shard-by, what a policy key is hashed by among the shards: itself, or its namespace (every policy of a
#: namespace moves as one).
SHARD_UNITS: Mapping[str, Callable[[str], str]] = {"policy": lambda key: key, "namespace": namespace_of}
#: Allocations between collections of the youngest generation (Python's default is 700). A cycle allocates a
#: snapshot's worth of objects (hundreds of thousands at thousands of GPUs) that live until the next snapshot and are
#: then freed by reference counting: the monitor makes almost no cyclic garbage (19 objects found in 10 cycles at
#: 1,000 nodes x 8 GPUs). Collecting every 700 allocations promoted each snapshot into older generations and
#: rescanned it, about a quarter of the monitor's CPU time at 8,000 GPUs; every 20,000 still cost 0.12-0.15 CPU s
#: per cycle there (4-5 young collections of about 20 ms and a middle one), every 200,000 none at that size.
YOUNG_COLLECTION_EVERY = 200_000


@dataclass(frozen=True)
class MonitorSettings:
    prometheus: PromSettings
    interval: float = 5.0
    metrics_profile: str = "dcgm"
    cpu_power_metric: str | None = None
    max_sample_age: float = 60.0
    release_band: int = DEFAULT_RELEASE_BAND
    heartbeat: float = 60.0
    workers: int = 4
    #: With --shard, what moves between replicas as one: a key of SHARD_UNITS.
    shard_by: str = "policy"
    #: Metric profile fields that name labels and matchers (climatik.prom.profiles.MetricProfile).
    labels: Mapping[str, Any] = field(default_factory=dict)


def requeue(queue: WorkQueue, keys: Iterable[str]) -> None:
    for key in keys:
        queue.add(key)


def build(settings: MonitorSettings, common: CommonSettings, *, clock: Clock) -> ProcessShell:
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, older, oldest)
    wiring = Wiring(common, clock=clock)
    profile = profile_named(settings.metrics_profile, **settings.labels)
    if settings.cpu_power_metric:
        profile = profile.with_cpu_power(settings.cpu_power_metric)
    prom = PromClient(settings.prometheus, session=make_session(settings.prometheus),
                      observer=PromQueryMetrics(wiring.registry), clock=clock)
    sampler_source = GpuSampler(prom, profile, max_sample_age_s=settings.max_sample_age,
                                wall=lambda: clock.wall().timestamp())
    policies = wiring.informer(POLICIES, name="powercappingpolicies")
    pods = wiring.informer(PODS, name="pods", indexers={**POD_INDEXES, BY_LABEL: index_by_label},
                           transform=PodTrimmer())
    decoded = DecodedPolicies(policies.store)
    selections = PodSelections(pods.store)
    shards = wiring.shards(SHARD_GROUP, keys=policies.store.keys, unit=SHARD_UNITS[settings.shard_by])
    owns = shards.owns if shards is not None else (lambda _key: True)
    latest = LatestSample()
    policy_queue = wiring.queue("monitor")
    sample_queue = wiring.queue("monitor-sampler")
    rules = Rules.for_period(settings.interval, release_band=settings.release_band, heartbeat=settings.heartbeat)
    reconciler = MonitorReconciler(
        policies=decoded, pods=pods.store, api=wiring.client.policies, latest=latest,
        events=EventRecorder(wiring.client, component="climatik-monitor", clock=clock), clock=clock,
        metrics=MonitorMetrics(wiring.registry),
        rules=rules,
        hold=shards.hold if shards is not None else sole_replica,
    )
    sampler = Sampler(fetch=lambda scope, clocks: sampler_source.fetch_gpu_samples(scope=scope, clock_scope=clocks),
                      add_clocks=sampler_source.add_clocks,
                      scope=lambda: sampling_scope(decoded, selections, owns, partial(clock_level, rules=rules)),
                      latest=latest, clock=clock, policy_keys=lambda: list(filter(owns, policies.store.keys())),
                      enqueue=policy_queue.add, interval=settings.interval)
    policies.add_handler(enqueue_own_key(policy_queue))
    sample_queue.add(SAMPLE_KEY)
    if shards is not None:
        # Policies taken over are measured at the next sample, which reads their pods; those handed over are
        # reconciled once more, which drops their series from this replica's metrics.
        shards.on_gained(lambda _keys: sample_queue.add(SAMPLE_KEY))
        shards.on_lost(lambda keys: requeue(policy_queue, keys))
    return ProcessShell(
        name="climatik-monitor", registry=wiring.registry, informers=[policies, pods],
        controllers=[wiring.controller("monitor-sampler", sampler, sample_queue),
                     wiring.controller("monitor", reconciler, policy_queue, workers=settings.workers)],
        elector=wiring.elector(LEASE_NAME), shards=shards, host=common.metrics_host, port=common.metrics_port,
        grace_period=common.grace_period, shutdown_hooks=[prom.close],
    )
