"""The monitor's part of a policy's status, and whether a new one is worth a write.

The monitor owns the observation fields and the MetricsAvailable, CappingRequired and InvalidSpec conditions;
everything else in the status (the recommender's) is carried over untouched. A steady policy is written only
when something a reader acts on changed, or when the heartbeat is due.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from climatik.api import format_precise_time, parse_time, to_dict
from climatik.api.conditions import set_condition
from climatik.monitor.decision import CappingDecision
from climatik.monitor.measure import Measurement

METRICS_AVAILABLE = "MetricsAvailable"
CAPPING_REQUIRED = "CappingRequired"
INVALID_SPEC = "InvalidSpec"

OWNED_CONDITIONS = (METRICS_AVAILABLE, CAPPING_REQUIRED, INVALID_SPEC)


@dataclass(frozen=True)
class Verdict:
    """What the monitor concluded about one policy in one cycle."""

    capping: CappingDecision
    measurement: Measurement | None
    metrics_available: bool
    metrics_reason: str
    metrics_message: str
    spec_problems: tuple[str, ...] = ()
    #: The loop is in motion (over the threshold, or under the release level with clocks still capped): every new
    #: observation is worth a write, since the recommender acts only on new ones.
    urgent: bool = False


@dataclass(frozen=True)
class WritePolicy:
    """When a changed observation is worth a write: power moved by `power_delta_percent` of the limit (at least
    `power_delta_watts`), a GPU's clock moved by `clock_delta_mhz`, or `heartbeat` seconds passed."""

    power_delta_percent: float = 1.0
    power_delta_watts: float = 1.0
    clock_delta_mhz: int = 15
    heartbeat: float = 60.0


def monitor_status(current: Mapping[str, Any] | None, verdict: Verdict, *, limit: int, generation: int | None,
                   now: dt.datetime, rules: WritePolicy) -> dict[str, Any] | None:
    """The whole new status (the recommender's fields kept), or None when no write is due.

    Without a measurement (no data this cycle) the last observation stays as it was, so that its age tells
    readers how old it is; the conditions say why nothing newer is there.
    """
    current = dict(current or {})
    candidate = {**current, "cappingActionRequired": verdict.capping.required, "observedGeneration": generation}
    if verdict.measurement is not None:
        candidate = {k: v for k, v in candidate.items() if k != "podsWithoutMetrics"}
        candidate.update(_observation_fields(verdict.measurement, now))
    candidate["conditions"] = _conditions(current.get("conditions"), verdict, generation, now)
    if verdict.urgent and candidate.get("lastUpdated") != current.get("lastUpdated"):
        return candidate
    if not _worth_writing(current, candidate, limit=limit, now=now, rules=rules):
        return None
    return candidate


def _observation_fields(measurement: Measurement, now: dt.datetime) -> dict[str, Any]:
    observed = dt.datetime.fromtimestamp(measurement.sample_time, dt.UTC)
    fields: dict[str, Any] = {
        "lastUpdated": format_precise_time(min(observed, now)),
        "currentPower": measurement.power,
        "gpuCount": measurement.gpu_count,
        "nodes": [to_dict(node) for node in measurement.nodes],
        "truncated": measurement.truncated,
    }
    if measurement.pods_without_metrics:
        fields["podsWithoutMetrics"] = measurement.pods_without_metrics
    return fields


def _conditions(existing: Any, verdict: Verdict, generation: int | None, now: dt.datetime) -> list[dict[str, Any]]:
    def put(conditions: Any, type: str, status: bool, reason: str, message: str) -> list[dict[str, Any]]:
        return set_condition(conditions, type=type, status=status, reason=reason, message=message,
                             observed_generation=generation, now=now)

    conditions = put(existing, METRICS_AVAILABLE, verdict.metrics_available, verdict.metrics_reason,
                     verdict.metrics_message)
    conditions = put(conditions, CAPPING_REQUIRED, verdict.capping.required, verdict.capping.reason,
                     verdict.capping.message)
    if verdict.spec_problems:
        return put(conditions, INVALID_SPEC, True, "InvalidSpec", "; ".join(verdict.spec_problems))
    return put(conditions, INVALID_SPEC, False, "Valid", "spec is valid")


def _worth_writing(old: Mapping[str, Any], new: Mapping[str, Any], *, limit: int, now: dt.datetime,
                   rules: WritePolicy) -> bool:
    for key in ("cappingActionRequired", "observedGeneration", "gpuCount", "podsWithoutMetrics", "truncated"):
        if old.get(key) != new.get(key):
            return True
    if _condition_states(old) != _condition_states(new) or _layout(old) != _layout(new):
        return True
    if "currentPower" in new:
        if "currentPower" not in old:
            return True
        threshold = max(rules.power_delta_watts, limit * rules.power_delta_percent / 100.0)
        if abs(float(new["currentPower"]) - float(old["currentPower"])) >= threshold:
            return True
        if _clock_moved(old, new, rules.clock_delta_mhz):
            return True
    last = old.get("lastUpdated")
    return last is None or (now - parse_time(str(last))).total_seconds() >= rules.heartbeat


def _condition_states(status: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {c["type"]: (c.get("status"), c.get("reason")) for c in status.get("conditions") or []
            if c.get("type") in OWNED_CONDITIONS}


def _layout(status: Mapping[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    """Which GPUs on which nodes serve which pods: a change here is always news."""
    return [(node["name"], gpu["uuid"], tuple(gpu.get("pods") or []))
            for node in status.get("nodes") or [] for gpu in node.get("gpus") or []]


def _clock_moved(old: Mapping[str, Any], new: Mapping[str, Any], delta: int) -> bool:
    def clocks(status: Mapping[str, Any]) -> dict[str, int]:
        return {gpu["uuid"]: gpu["smClock"] for node in status.get("nodes") or [] for gpu in node.get("gpus") or []
                if gpu.get("smClock") is not None}

    before, after = clocks(old), clocks(new)
    return any(abs(after[uuid] - before.get(uuid, after[uuid])) >= delta for uuid in after)

