"""The tuner's reconciler: make this node's hardware match its NodeFrequencies object, and report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from climatik.api import NodeFrequencies
from climatik.clock import Clock
from climatik.kube.client import ResourceClient
from climatik.kube.controller import Result
from climatik.kube.events import EventRecorder
from climatik.kube.status import update_status
from climatik.kube.store import CacheReader
from climatik.tune.applier import Applier, ApplyReport
from climatik.tune.metrics import TuneMetrics
from climatik.tune.report import desired_status, troubled_entries

log = structlog.get_logger(__name__)


class TuneReconciler:
    """Reconciles the one NodeFrequencies object named after this node.

    Present: apply its entries (restoring devices no longer listed) and write status when it says something
    new. Absent (deleted, or not created yet): restore every device this tuner changed. Either way, look
    again after `resync` seconds so that a clock someone else changed is put back.
    """

    def __init__(self, *, node_name: str, cache: CacheReader, api: ResourceClient, applier: Applier,
                 events: EventRecorder | None, clock: Clock, metrics: TuneMetrics | None = None,
                 dry_run: bool = False, resync: float = 30.0) -> None:
        self._node = node_name
        self._cache = cache
        self._api = api
        self._applier = applier
        self._events = events
        self._clock = clock
        self._metrics = metrics
        self._dry_run = dry_run
        self._resync = resync
        self._failing: set[str] = set()

    def __call__(self, key: str) -> Result:
        if key != self._node:
            return Result()
        obj = self._cache.get(key)
        if obj is None or obj.get("metadata", {}).get("deletionTimestamp"):
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
        generation = nf.metadata.generation

        def mutate(current: dict[str, Any]) -> dict[str, Any] | None:
            return desired_status(current.get("status"), report, generation=generation, now=self._clock.wall())

        result = update_status(self._api, key, mutate, current=obj)
        if result.written:
            log.info("status_updated", controller="tune", key=key, applied=report.applied_count,
                     pending=report.pending_count, failed=report.failed_count, dry_run=self._dry_run)
        self._report_failures(obj, report)
        return Result(requeue_after=self._resync)

    def _report_failures(self, obj: Mapping[str, Any], report: ApplyReport) -> None:
        """An Event when a device starts failing (not on every resync while it keeps failing)."""
        troubled = troubled_entries(report)
        for device, status, message in troubled:
            if device not in self._failing and self._events is not None:
                self._events.warning(obj, f"Apply{status}", f"{device}: {message}")
        self._failing = {device for device, _, _ in troubled}
