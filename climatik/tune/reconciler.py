"""The tuner's reconciler, I/O around the applier (climatik.tune.applier): read this node's NodeFrequencies
object from the cache, make the hardware match it, hand its power budgets to the node guard
(climatik.tune.guardloop), write the status the applier's report and the guard's tick give, and tell (an Event
when a device starts failing, metrics, log lines).

It is the node's one status writer: the guard asks for its statuses to be written by queueing `REPORT_KEY`, and
this worker writes them (status.budgets and status.power, the rest as it is) with the same optimistic
concurrency; its own writes keep those two fields, or bring the guard's latest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from climatik.api import NodeFrequencies
from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED
from climatik.clock import Clock
from climatik.kube.client import ResourceClient
from climatik.kube.controller import Result
from climatik.kube.errors import KubeError
from climatik.kube.events import EventRecorder
from climatik.kube.status import update_status
from climatik.kube.store import CacheReader
from climatik.tune.applier import Applier, ApplyReport, desired_status, troubled_entries
from climatik.tune.guard import GuardTick
from climatik.tune.guardloop import GUARDED_FIELDS, GuardLoop, with_guard_status

log = structlog.get_logger(__name__)

#: The key under which the guard asks for its statuses to be written (never a node's name: those have no '#').
REPORT_KEY = "#guard-report"


class TuneMetrics:
    """The tuner's own metrics: what each device runs at, how long applying takes, what failed. Registered once on
    the process registry."""

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


class TuneReconciler:
    """Reconciles the one NodeFrequencies object named after this node.

    Present: apply its entries (restoring devices no longer listed), hand its budgets to the `guard`, and write
    status when it says something new. Absent (deleted, or not created yet): the guard keeps no budget, and every
    device this tuner changed is restored. Either way, look again after `resync` seconds so that a clock someone
    else changed is put back. `REPORT_KEY` writes the guard's latest statuses.
    """

    def __init__(self, *, node_name: str, cache: CacheReader, api: ResourceClient, applier: Applier,
                 events: EventRecorder | None, clock: Clock, metrics: TuneMetrics | None = None,
                 dry_run: bool = False, resync: float = 30.0, guard: GuardLoop | None = None) -> None:
        self._node = node_name
        self._cache = cache
        self._api = api
        self._applier = applier
        self._events = events
        self._clock = clock
        self._metrics = metrics
        self._dry_run = dry_run
        self._resync = resync
        self._guard = guard
        self._failing: set[str] = set()

    def __call__(self, key: str) -> Result:
        if key == REPORT_KEY:
            self._write_guard_report()
            return Result()
        if key != self._node:
            return Result()
        obj = self._cache.get(key)
        if obj is None or obj.get("metadata", {}).get("deletionTimestamp"):
            if self._guard is not None:
                self._guard.enforce([])  # before the clocks: a cap still in force would hold a restored clock
            restored = [] if self._dry_run else self._applier.restore_all()
            if restored:
                log.info("defaults_restored", controller="tune", key=key, devices=[r.key for r in restored])
            return Result(requeue_after=self._resync)
        nf = NodeFrequencies.from_api(obj)
        started = self._clock.now()
        report = self._applier.apply(nf.spec.gpu_frequencies or [], nf.spec.cpu_frequencies or [],
                                     dry_run=self._dry_run)
        if self._metrics is not None:
            self._metrics.observe(report, self._clock.now() - started)
        # After the targets, so that the guard's first tick caps below the new ones; before the status, so that
        # the generation it acknowledges comes with budgets already in force.
        tick = self._guard.enforce(nf.spec.power_budgets or []) if self._guard is not None else None
        latest = self._guard.latest() if self._guard is not None else None
        # The guard's statuses go with this write only when they say something new (new budgets always do).
        guarded = tick is not None and latest is not None and self._guard is not None and self._guard.due(*latest)
        generation = nf.metadata.generation

        def mutate(current: dict[str, Any]) -> dict[str, Any] | None:
            status = dict(current.get("status") or {})
            kept = {field: status.pop(field) for field in GUARDED_FIELDS if field in status}
            body = desired_status(status, report, generation=generation, now=self._clock.wall()) or status
            body = {**body, **kept}
            return with_guard_status(body, tick) if tick is not None and guarded else body

        result = update_status(self._api, key, mutate, current=obj)
        if result.written:
            log.info("status_updated", controller="tune", key=key, applied=report.applied_count,
                     pending=report.pending_count, failed=report.failed_count, dry_run=self._dry_run)
        if result.object is not None and guarded and latest is not None and self._guard is not None:
            self._guard.written(*latest)
        self._report_failures(obj, report)
        return Result(requeue_after=self._resync)

    def _write_guard_report(self) -> None:
        """Write the guard's latest statuses; a failure waits for the guard to ask again."""
        latest = self._guard.latest() if self._guard is not None else None
        obj = self._cache.get(self._node)
        if latest is None or self._guard is None or obj is None or obj.get("metadata", {}).get("deletionTimestamp"):
            return
        tick, at = latest
        try:
            result = update_status(self._api, self._node, lambda current: _guarded(current, tick), current=obj)
        except KubeError as error:
            log.warning("guard_report_failed", controller="tune", key=self._node, error=str(error))
            return
        if result.written:
            log.debug("guard_report_written", controller="tune", key=self._node,
                      budgets=[budget.policy for budget in tick.budgets])
        if result.object is not None:
            self._guard.written(tick, at)

    def _report_failures(self, obj: Mapping[str, Any], report: ApplyReport) -> None:
        """An Event when a device starts failing (not on every resync while it keeps failing)."""
        troubled = troubled_entries(report)
        for device, status, message in troubled:
            if device not in self._failing and self._events is not None:
                self._events.warning(obj, f"Apply{status}", f"{device}: {message}")
        self._failing = {device for device, _, _ in troubled}


def _guarded(current: dict[str, Any], tick: GuardTick) -> dict[str, Any]:
    return with_guard_status(current.get("status") or {}, tick)
