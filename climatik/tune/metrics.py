"""The tuner's own Prometheus metrics: what each device runs at, how long applying takes, what failed."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED
from climatik.tune.applier import ApplyReport


class TuneMetrics:
    """Registered once on the process registry."""

    def __init__(self, registry: CollectorRegistry, node: str) -> None:
        self._node = node
        self.gpu_applied_mhz = Gauge("climatik_tune_gpu_applied_mhz",
                                     "Upper bound set on a GPU's SM clock (0: defaults restored).",
                                     ["node", "gpu"], registry=registry)
        self.gpu_current_mhz = Gauge("climatik_tune_gpu_current_mhz", "SM clock read back after applying.",
                                     ["node", "gpu"], registry=registry)
        self.cpu_applied_mhz = Gauge("climatik_tune_cpu_applied_mhz", "Upper bound set on a CPU's frequency.",
                                     ["node", "cpu"], registry=registry)
        self.apply_seconds = Histogram("climatik_tune_apply_seconds", "Time to apply one NodeFrequencies spec.",
                                       registry=registry,
                                       buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.apply_failures_total = Counter("climatik_tune_apply_failures_total",
                                            "Entries that could not be applied, by device kind and status.",
                                            ["node", "kind", "status"], registry=registry)

    def observe(self, report: ApplyReport, seconds: float) -> None:
        self.apply_seconds.observe(seconds)
        listed = set()
        for gpu in report.gpus:
            listed.add(gpu.gpu_id)
            if gpu.status == APPLIED and gpu.target_frequency is not None:
                self.gpu_applied_mhz.labels(self._node, gpu.gpu_id).set(gpu.target_frequency)
            if gpu.current_frequency is not None:
                self.gpu_current_mhz.labels(self._node, gpu.gpu_id).set(gpu.current_frequency)
            if gpu.status in (FAILED, UNSUPPORTED):
                self.apply_failures_total.labels(self._node, "gpu", gpu.status).inc()
        for inventory in report.inventory.gpus or []:
            if inventory.uuid not in listed:
                self.gpu_applied_mhz.labels(self._node, inventory.uuid).set(0)
        for cpu in report.cpus:
            if cpu.status == APPLIED and cpu.target_frequency is not None:
                self.cpu_applied_mhz.labels(self._node, str(cpu.cpu_id)).set(cpu.target_frequency)
            if cpu.status in (FAILED, UNSUPPORTED):
                self.apply_failures_total.labels(self._node, "cpu", cpu.status).inc()
