"""The recommender's own Prometheus metrics: the clocks each policy asks for, what it did, what it wrote."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge

from climatik.algorithms import Targets
from climatik.recommend.step import ACTIONS


class RecommendMetrics:
    """Registered once on the process registry; the series of a deleted policy are removed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gpu_target = Gauge("climatik_recommend_policy_gpu_target_mhz",
                                "Lowest GPU clock cap the policy asks for (absent: no GPU is capped).", ["policy"],
                                registry=registry)
        self.cpu_target = Gauge("climatik_recommend_policy_cpu_target_mhz",
                                "Lowest CPU frequency cap the policy asks for (absent: no CPU is capped).",
                                ["policy"], registry=registry)
        self.targets = Gauge("climatik_recommend_policy_targets", "GPU and CPU caps the policy asks for.",
                             ["policy"], registry=registry)
        self.actions = Counter("climatik_recommend_actions_total",
                               "Decisions per policy: lower, raise or release caps, or hold them.",
                               ["policy", "action"], registry=registry)
        self.node_writes = Counter("climatik_recommend_node_frequencies_writes_total",
                                   "NodeFrequencies objects created or whose spec was updated.", ["operation"],
                                   registry=registry)
        self.conflicting_gpus = Gauge("climatik_recommend_conflicting_gpus",
                                      "GPUs claimed by more than one policy.", registry=registry)

    def observe(self, key: str, targets: Targets, action: str) -> None:
        self.actions.labels(key, action).inc()
        self.targets.labels(key).set(len(targets.gpu_entries()) + len(targets.cpu_entries()))
        for gauge, values in ((self.gpu_target, targets.gpu_entries().values()),
                              (self.cpu_target, targets.cpu_entries().values())):
            if values:
                gauge.labels(key).set(min(values))
            else:
                with contextlib.suppress(KeyError):
                    gauge.remove(key)

    def forget(self, key: str) -> None:
        for gauge in (self.gpu_target, self.cpu_target, self.targets):
            with contextlib.suppress(KeyError):
                gauge.remove(key)
        for action in ACTIONS:
            with contextlib.suppress(KeyError):
                self.actions.remove(key, action)
