"""The monitor writes a policy's status only when a reader would act on the change, or when the heartbeat is due,
and never touches the recommender's part of the status."""

from __future__ import annotations

import datetime as dt
from typing import Any

from climatik.api import GpuObservation, NodeObservation
from climatik.monitor.decision import CappingDecision
from climatik.monitor.measure import Measurement
from climatik.monitor.status import Verdict, WritePolicy, monitor_status

T0 = dt.datetime(2026, 11, 29, 6, 0, tzinfo=dt.UTC)
RULES = WritePolicy(power_delta_percent=1.0, power_delta_watts=1.0, clock_delta_mhz=15, heartbeat=60.0)


def verdict(power: float, *, capping: bool = False, clock: int = 1980, at: dt.datetime = T0,
            available: bool = True) -> Verdict:
    gpu = GpuObservation(uuid="GPU-a", index=0, model="H100", power=power, sm_clock=clock, pods=["ns/p"])
    measurement = Measurement(power=power, complete=True, gpu_count=1,
                              nodes=[NodeObservation(name="n1", power=power, gpus=[gpu])], pods_without_metrics=[],
                              missing_gpus=[], truncated=False, sample_time=at.timestamp())
    decision = CappingDecision(capping, "AboveThreshold" if capping else "BelowThreshold", f"{power} W")
    return Verdict(decision, measurement if available else None, available,
                   "MetricsFresh" if available else "PrometheusUnreachable", "m")


def write(current: dict[str, Any] | None, v: Verdict, now: dt.datetime = T0) -> dict[str, Any] | None:
    return monitor_status(current, v, limit=1000, generation=2, now=now, rules=RULES)


def test_the_first_observation_is_written_with_its_sample_time() -> None:
    status = write(None, verdict(500.0))
    assert status is not None
    assert status["currentPower"] == 500.0 and status["lastUpdated"] == "2026-11-29T06:00:00.000Z"
    assert status["observedGeneration"] == 2 and status["cappingActionRequired"] is False


def test_small_power_changes_of_a_steady_policy_cost_no_write() -> None:
    first = write(None, verdict(500.0))
    later = T0 + dt.timedelta(seconds=5)
    assert write(first, verdict(505.0, at=later), later) is None


def test_a_change_of_one_percent_of_the_limit_is_written() -> None:
    first = write(None, verdict(500.0))
    later = T0 + dt.timedelta(seconds=5)
    assert write(first, verdict(511.0, at=later), later) is not None


def test_a_clock_change_is_written_so_the_recommender_can_learn_from_it() -> None:
    first = write(None, verdict(500.0))
    later = T0 + dt.timedelta(seconds=5)
    assert write(first, verdict(500.5, clock=1500, at=later), later) is not None


def test_the_heartbeat_writes_a_steady_policy_once_a_minute() -> None:
    first = write(None, verdict(500.0))
    later = T0 + dt.timedelta(seconds=61)
    status = write(first, verdict(500.0, at=later), later)
    assert status is not None and status["lastUpdated"] == "2026-11-29T06:01:01.000Z"


def test_a_capping_flip_is_always_written() -> None:
    first = write(None, verdict(500.0))
    assert write(first, verdict(500.0, capping=True)) is not None


def test_the_recommenders_fields_are_kept() -> None:
    first = write(None, verdict(500.0))
    assert first is not None
    first["recommendation"] = {"algorithm": "closed-loop", "gpuFrequency": 1410}
    first["conditions"].append({"type": "Conflict", "status": "False", "reason": "NoSharedGpus", "message": "",
                                "lastTransitionTime": "2026-11-29T05:00:00Z"})
    status = write(first, verdict(900.0, capping=True))
    assert status is not None and status["recommendation"] == first["recommendation"]
    assert "Conflict" in {c["type"] for c in status["conditions"]}


def test_losing_metrics_keeps_the_last_observation_and_says_why() -> None:
    first = write(None, verdict(950.0, capping=True))
    status = write(first, verdict(0.0, available=False))
    assert status is not None
    assert status["currentPower"] == 950.0 and status["lastUpdated"] == first["lastUpdated"]  # type: ignore[index]
    metrics = next(c for c in status["conditions"] if c["type"] == "MetricsAvailable")
    assert (metrics["status"], metrics["reason"]) == ("False", "PrometheusUnreachable")


def test_every_new_observation_is_written_while_the_loop_is_in_motion() -> None:
    first = write(None, verdict(400.0))
    later = T0 + dt.timedelta(seconds=1)
    steady = verdict(400.0, at=later)
    assert write(first, steady, later) is None
    moving = Verdict(steady.capping, steady.measurement, True, "MetricsFresh", "m", urgent=True)
    status = write(first, moving, later)
    assert status is not None and status["lastUpdated"] == "2026-11-29T06:00:01.000Z"
    assert write(status, moving, later) is None, "the same observation twice is still one write"
