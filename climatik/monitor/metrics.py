"""The monitor's per-policy metrics: power, limit, headroom, capping state and data availability."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Gauge

from climatik.api import PolicySpec
from climatik.monitor.status import Verdict


class MonitorMetrics:
    """Registered once on the process registry; series of deleted policies are removed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["policy"]
        self.power = Gauge("climatik_monitor_policy_power_watts", "Power of the policy's workload.", labels,
                           registry=registry)
        self.limit = Gauge("climatik_monitor_policy_limit_watts", "The policy's powerCapLimit.", labels,
                           registry=registry)
        self.threshold = Gauge("climatik_monitor_policy_threshold_watts", "Power at which capping starts.", labels,
                               registry=registry)
        self.headroom = Gauge("climatik_monitor_policy_headroom_watts", "Limit minus power.", labels,
                              registry=registry)
        self.capping = Gauge("climatik_monitor_policy_capping", "1 while capping is required.", labels,
                             registry=registry)
        self.available = Gauge("climatik_monitor_policy_metrics_available", "1 while fresh, complete data exists.",
                               labels, registry=registry)
        self._all = (self.power, self.limit, self.threshold, self.headroom, self.capping, self.available)

    def observe(self, key: str, spec: PolicySpec, verdict: Verdict) -> None:
        self.limit.labels(key).set(spec.power_cap_limit)
        self.threshold.labels(key).set(spec.threshold_watts)
        self.capping.labels(key).set(1 if verdict.capping.required else 0)
        self.available.labels(key).set(1 if verdict.metrics_available else 0)
        if verdict.measurement is not None:
            self.power.labels(key).set(verdict.measurement.power)
            self.headroom.labels(key).set(spec.power_cap_limit - verdict.measurement.power)

    def forget(self, key: str) -> None:
        for gauge in self._all:
            with contextlib.suppress(KeyError):
                gauge.remove(key)
