"""The tuner's status says what was applied, and says nothing new when nothing changed (no steady writes)."""

from __future__ import annotations

import datetime as dt

from climatik.api import GpuFrequencyStatus, GpuInventory, NodeInventory
from climatik.tune.applier import ApplyReport, desired_status

T0 = dt.datetime(2026, 11, 29, 6, 0, tzinfo=dt.UTC)


def report(*statuses: tuple[str, str, str | None]) -> ApplyReport:
    gpus = [GpuFrequencyStatus(gpu_id=uuid, status=status, target_frequency=1200, current_frequency=1200,
                               message=message) for uuid, status, message in statuses]
    inventory = NodeInventory(backend="sim", gpus=[GpuInventory(uuid="GPU-a"), GpuInventory(uuid="GPU-b")])
    return ApplyReport(gpus=gpus, cpus=[], inventory=inventory)


def test_all_applied_is_ready_with_counts_and_inventory() -> None:
    status = desired_status(None, report(("GPU-a", "Applied", None)), generation=3, now=T0)
    assert status is not None
    assert (status["appliedCount"], status["pendingCount"], status["gpuCount"]) == (1, 0, 2)
    assert status["observedGeneration"] == 3 and status["lastUpdated"] == "2026-11-29T06:00:00Z"
    ready = {c["type"]: c for c in status["conditions"]}
    assert ready["Ready"]["status"] == "True" and ready["Degraded"]["status"] == "False"


def test_the_same_outcome_later_writes_nothing() -> None:
    first = desired_status(None, report(("GPU-a", "Applied", None)), generation=3, now=T0)
    later = T0 + dt.timedelta(minutes=5)
    assert desired_status(first, report(("GPU-a", "Applied", None)), generation=3, now=later) is None


def test_a_failed_entry_degrades_the_node_and_names_the_device() -> None:
    status = desired_status(None, report(("GPU-a", "Applied", None), ("GPU-b", "Failed", "NVML: GPU is lost")),
                            generation=1, now=T0)
    assert status is not None and status["pendingCount"] == 1
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and "GPU-b: Failed: NVML: GPU is lost" in degraded["message"]
