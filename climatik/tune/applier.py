"""The tuner's core, free of Kubernetes: turn a node's GPU and CPU targets into hardware settings and statuses.

`Applier.apply` takes the entries of a NodeFrequencies spec, applies what changed, restores devices whose
entries are gone (and, on the first call, devices an earlier run changed that the spec no longer lists),
and returns one status per entry plus the node inventory. `restore_all` puts every changed device back, for
object deletion and shutdown. A dry run computes and reports what would be set and changes nothing.

Several entries naming the same device (several policies sharing a node), or CPUs of one cpufreq policy,
resolve to the lowest target: the one that keeps every policy within its budget.

After each call the GPU backend may let go of what it holds (NVML's session, where persistence mode keeps the
GPUs' state), so that the tuner does not stand in the way of a driver upgrade, a GPU reset or a MIG change.

`desired_status` turns a report into the NodeFrequencies status the tuner writes: entries, counts, inventory
and the Ready, Degraded and (with a GPU backend) GpusCappable conditions; lastUpdated moves only with content.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from climatik.api import NodeFrequenciesStatus, format_time, to_dict
from climatik.api.conditions import DEGRADED, GPUS_CAPPABLE, READY, set_condition
from climatik.api.nodefrequencies import (
    APPLIED,
    FAILED,
    PENDING,
    UNSUPPORTED,
    CpuFrequency,
    CpuFrequencyStatus,
    GpuFrequency,
    GpuFrequencyStatus,
    NodeInventory,
)
from climatik.clock import Clock
from climatik.tune.backends.base import CpuBackend, DeviceResult, GpuBackend, join_notes
from climatik.tune.devices import CpuDevices, DeviceTracker, GpuAccess, GpuDevices, Restoration
from climatik.tune.state import StateStore


@dataclass(frozen=True)
class ApplyReport:
    """One status per spec entry (in spec order), the node inventory, the devices put back, and why GPUs cannot
    be capped (None when all can, or without a GPU backend)."""

    gpus: list[GpuFrequencyStatus]
    cpus: list[CpuFrequencyStatus]
    inventory: NodeInventory
    restored: list[Restoration] = field(default_factory=list)
    dry_run: bool = False
    gpu_access: GpuAccess | None = None

    @property
    def gpu_count(self) -> int:
        """GPUs on the node (from the inventory), whether or not the spec names them."""
        return len(self.inventory.gpus or [])

    def count(self, status: str) -> int:
        """GPU and CPU entries with `status`."""
        statuses = [entry.status for entry in self.gpus] + [entry.status for entry in self.cpus]
        return statuses.count(status)

    @property
    def applied_count(self) -> int:
        return self.count(APPLIED)

    @property
    def pending_count(self) -> int:
        return self.count(PENDING)

    @property
    def failed_count(self) -> int:
        return self.count(FAILED)

    @property
    def unsupported_count(self) -> int:
        return self.count(UNSUPPORTED)


class Applier:
    """Applies a node's targets through its backends and keeps the state file of originals.

    `gpu_expected_count` answers how many GPUs the node should have (its nvidia.com/gpu.count label), so that
    GPUs the container runtime hid are reported as such. Bounds are checked every `verify_interval_s` and set
    again every `reassert_interval_s` even when they read as held. Thread-safe: a reconcile worker may apply
    while a shutdown handler restores.
    """

    def __init__(
        self,
        *,
        state: StateStore,
        clock: Clock,
        gpu_backend: GpuBackend | None = None,
        cpu_backend: CpuBackend | None = None,
        verify_interval_s: float = 60.0,
        reassert_interval_s: float = 300.0,
        inventory_interval_s: float = 300.0,
        gpu_expected_count: Callable[[], int | None] | None = None,
    ) -> None:
        self._backend_name = gpu_backend.name if gpu_backend is not None else None
        self._gpus = (GpuDevices(gpu_backend, expected_count=gpu_expected_count)
                      if gpu_backend is not None else None)
        self._cpus = CpuDevices(cpu_backend) if cpu_backend is not None else None
        self._gpu_tracker = self._tracker(self._gpus, state, clock, verify_interval_s, reassert_interval_s)
        self._cpu_tracker = self._tracker(self._cpus, state, clock, verify_interval_s, reassert_interval_s)
        self._clock = clock
        self._inventory_interval_s = inventory_interval_s
        self._inventory_at: float | None = None
        self._lock = threading.Lock()

    def inventory(self, *, refresh: bool = False) -> NodeInventory:
        """The node's GPUs and CPUs, read again if `refresh` or the last reading is old."""
        with self._lock:
            try:
                self._refresh(force=refresh)
                return self._node_inventory()
            finally:
                self._release()

    def apply(
        self, gpus: Sequence[GpuFrequency] = (), cpus: Sequence[CpuFrequency] = (), *, dry_run: bool = False
    ) -> ApplyReport:
        """Bring the hardware to these targets; restore what is no longer listed (unless `dry_run`)."""
        with self._lock:
            try:
                self._refresh(force=False)
                gpu_desired, gpu_copies = _desired([(entry.gpu_id, entry.target_frequency) for entry in gpus])
                cpu_desired, cpu_copies = _desired([(str(entry.cpu_id), entry.target_frequency) for entry in cpus])
                gpu_results, restored = self._run(self._gpu_tracker, gpu_desired, dry_run, "GPU")
                cpu_results, cpu_restored = self._run(self._cpu_tracker, cpu_desired, dry_run, "CPU")
                return ApplyReport(
                    gpus=[_gpu_status(entry, gpu_results[entry.gpu_id], gpu_copies[entry.gpu_id]) for entry in gpus],
                    cpus=[_cpu_status(entry, cpu_results[str(entry.cpu_id)], cpu_copies[str(entry.cpu_id)])
                          for entry in cpus],
                    inventory=self._node_inventory(),
                    restored=restored + cpu_restored,
                    dry_run=dry_run,
                    gpu_access=self._gpus.access if self._gpus is not None else None,
                )
            finally:
                self._release()

    def restore_all(self) -> list[Restoration]:
        """Put every device this tuner changed back to its original (object deleted, tuner stopping).

        Call it from the shutdown path once workers have stopped, not from inside a signal handler: it waits
        for an apply in progress on the same lock.
        """
        with self._lock:
            try:
                self._refresh(force=False)
                return [
                    *(self._gpu_tracker.restore_all() if self._gpu_tracker else []),
                    *(self._cpu_tracker.restore_all() if self._cpu_tracker else []),
                ]
            finally:
                self._release()

    @staticmethod
    def _tracker(devices: GpuDevices | CpuDevices | None, state: StateStore, clock: Clock,
                 verify_interval_s: float, reassert_interval_s: float) -> DeviceTracker | None:
        if devices is None:
            return None
        return DeviceTracker(devices=devices, state=state, clock=clock, verify_interval_s=verify_interval_s,
                             reassert_interval_s=reassert_interval_s)

    def _release(self) -> None:
        if self._gpus is not None:
            self._gpus.release()

    def _run(self, tracker: DeviceTracker | None, desired: dict[str, int], dry_run: bool,
             noun: str) -> tuple[dict[str, DeviceResult], list[Restoration]]:
        if tracker is None:
            message = f"this node's tuner has no {noun} backend"
            return {key: DeviceResult(UNSUPPORTED, requested_mhz=mhz, message=message)
                    for key, mhz in desired.items()}, []
        return tracker.apply(desired, dry_run=dry_run)

    def _refresh(self, *, force: bool) -> None:
        now = self._clock.now()
        due = self._inventory_at is None or now - self._inventory_at >= self._inventory_interval_s
        for devices in (self._gpus, self._cpus):
            # A backend that could not be read is retried on every call rather than after the interval.
            if devices is not None and (force or due or devices.error is not None):
                devices.refresh()
        if force or due:
            self._inventory_at = now

    def _node_inventory(self) -> NodeInventory:
        return NodeInventory(
            backend=self._backend_name,
            gpus=self._gpus.listing if self._gpus is not None else None,
            cpus=self._cpus.listing if self._cpus is not None else None,
        )


def _desired(entries: Sequence[tuple[str, int]]) -> tuple[dict[str, int], Counter[str]]:
    """The target per device (the lowest where several entries name it) and how many entries name each."""
    desired: dict[str, int] = {}
    for key, mhz in entries:
        desired[key] = min(mhz, desired.get(key, mhz))
    return desired, Counter(key for key, _ in entries)


def _message(result: DeviceResult, copies: int) -> str | None:
    shared = f"{copies} entries name this device; the lowest target applies" if copies > 1 else None
    return join_notes(result.message, shared)


def _target(result: DeviceResult, requested: int) -> int:
    # The bound really in force (after fitting to the hardware); the message says when it differs.
    return result.applied_mhz if result.applied_mhz is not None else requested


def _gpu_status(entry: GpuFrequency, result: DeviceResult, copies: int) -> GpuFrequencyStatus:
    return GpuFrequencyStatus(gpu_id=entry.gpu_id, status=result.status,
                              target_frequency=_target(result, entry.target_frequency),
                              current_frequency=result.current_mhz, message=_message(result, copies))


def _cpu_status(entry: CpuFrequency, result: DeviceResult, copies: int) -> CpuFrequencyStatus:
    return CpuFrequencyStatus(cpu_id=entry.cpu_id, status=result.status,
                              target_frequency=_target(result, entry.target_frequency),
                              current_frequency=result.current_mhz, message=_message(result, copies))


def desired_status(current: Mapping[str, Any] | None, report: ApplyReport, *, generation: int | None,
                   now: dt.datetime) -> dict[str, Any] | None:
    """The status to write, or None when it would say nothing new (lastUpdated only moves with content)."""
    current = dict(current or {})
    body = to_dict(NodeFrequenciesStatus(
        observed_generation=generation,
        gpu_count=report.gpu_count,
        applied_count=report.applied_count,
        pending_count=report.pending_count + report.failed_count + report.unsupported_count,
        gpu_frequencies=report.gpus,
        cpu_frequencies=report.cpus,
        inventory=report.inventory,
    ))
    body["conditions"] = _conditions(current.get("conditions"), report, generation, now)
    unchanged = {k: v for k, v in current.items() if k != "lastUpdated"} == body
    if unchanged:
        return None
    body["lastUpdated"] = format_time(now)
    return body


def _conditions(existing: Any, report: ApplyReport, generation: int | None, now: dt.datetime) -> list[dict[str, Any]]:
    total = len(report.gpus) + len(report.cpus)
    troubled = report.failed_count + report.unsupported_count
    if report.dry_run:
        ready = (False, "DryRun", f"dry run: {total} entries computed, nothing applied")
    elif report.pending_count or troubled:
        ready = (False, "NotAllApplied", f"{report.applied_count} of {total} entries applied")
    else:
        ready = (True, "Applied", f"all {total} entries applied")
    conditions = set_condition(existing, type=READY, status=ready[0], reason=ready[1], message=ready[2],
                               observed_generation=generation, now=now)
    if troubled:
        problems = [f"{device}: {status}: {message}" for device, status, message in troubled_entries(report)]
        degraded = (True, "EntriesFailed", "; ".join(problems)[:1000])
    else:
        degraded = (False, "AsExpected", "no entry failed")
    conditions = set_condition(conditions, type=DEGRADED, status=degraded[0], reason=degraded[1],
                               message=degraded[2], observed_generation=generation, now=now)
    if report.inventory.backend is None:
        return conditions  # no GPU backend on this node: nothing to say about GPUs
    access = report.gpu_access
    cappable = ((True, "AllGpusCappable", f"the tuner can cap all {report.gpu_count} GPUs it sees")
                if access is None else (False, access.reason, access.message[:1000]))
    return set_condition(conditions, type=GPUS_CAPPABLE, status=cappable[0], reason=cappable[1],
                         message=cappable[2], observed_generation=generation, now=now)


def troubled_entries(report: ApplyReport) -> list[tuple[str, str, str]]:
    """(device, status, message) of every entry that failed or is unsupported."""
    entries = [(g.gpu_id, g.status, g.message or "") for g in report.gpus]
    entries += [(f"cpu{c.cpu_id}", c.status, c.message or "") for c in report.cpus]
    return [entry for entry in entries if entry[1] in (FAILED, UNSUPPORTED)]
