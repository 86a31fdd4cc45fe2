"""Status conditions: the conditions Climatik's objects carry, who writes each, and the reasons one
controller writes and another reads; and the standard metav1.Condition, set in a status dict without churning
lastTransitionTime.

Each condition has exactly one writer, so two controllers never fight over it:

| object             | condition          | writer      | says                                                |
| ------------------ | ------------------ | ----------- | --------------------------------------------------- |
| PowerCappingPolicy | MetricsAvailable   | monitor     | fresh, complete power data backs the observation    |
| PowerCappingPolicy | CappingRequired    | monitor     | the hysteresis decision, with the power behind it   |
| PowerCappingPolicy | InvalidSpec        | recommender | what the schema cannot catch: selector, algorithm   |
| PowerCappingPolicy | Actuated           | recommender | whether the policy's targets reach its GPUs         |
| PowerCappingPolicy | Conflict           | recommender | GPUs this policy shares with another one            |
| PowerCappingPolicy | Feasible           | recommender | whether its GPUs can be held under its budget at all|
| NodeFrequencies    | Ready, Degraded    | tuner       | whether the node's entries are applied              |
| NodeFrequencies    | GpusCappable       | tuner       | whether every GPU can be capped (visible, not MIG)  |
| PowerDomain        | Valid              | recommender | the spec and its place in the tree make sense       |
| PowerDomain        | MetricsAvailable   | recommender | every node's tuner reports its GPU power            |
| PowerDomain        | Overcommitted      | recommender | guarantees add up to more than the budget           |
| PowerDomain        | Infeasible         | recommender | the GPUs' floors add up to more than the budget     |

The helpers are pure: they take the current list and return a new one, so status mutation functions can use
them on read-only cached objects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from climatik.api.meta import format_time

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"

# PowerCappingPolicy, written by the monitor.
METRICS_AVAILABLE = "MetricsAvailable"
CAPPING_REQUIRED = "CappingRequired"
#: MetricsAvailable's reason when a fresh observation lacks some GPUs' readings: the recommender then lets the
#: algorithm lower clocks on the part it sees, never raise them.
INCOMPLETE_DATA = "IncompleteData"

# PowerCappingPolicy, written by the recommender.
INVALID_SPEC = "InvalidSpec"
ACTUATED = "Actuated"
CONFLICT = "Conflict"
FEASIBLE = "Feasible"

# NodeFrequencies, written by its node's tuner.
READY = "Ready"
DEGRADED = "Degraded"
#: False (reason NoGpusVisible, GpusHidden, MigEnabled or BackendUnavailable) when some of the node's GPUs cannot
#: be capped: the runtime hid them, MIG shares their clocks between tenants, or the GPU library cannot start.
GPUS_CAPPABLE = "GpusCappable"

# PowerDomain, written by the recommender (and MetricsAvailable, as for policies).
VALID = "Valid"
OVERCOMMITTED = "Overcommitted"
INFEASIBLE = "Infeasible"


@dataclass(frozen=True)
class Condition:
    """A metav1.Condition."""

    type: str
    status: str
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int | None = None


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    *,
    type: str,
    status: str | bool,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: dt.datetime,
) -> list[dict[str, Any]]:
    """The conditions with `type` set; lastTransitionTime moves only when the status changes.

    `status` may be a bool (True/False); reasons must be CamelCase (the API server rejects others).
    """
    status_text = _status_text(status)
    if not reason:
        raise ValueError("a condition needs a reason")
    fields: dict[str, Any] = {"reason": reason, "message": message, "observed_generation": observed_generation}
    result: list[dict[str, Any]] = []
    found = False
    for existing in conditions or ():
        if existing.get("type") != type:
            result.append(dict(existing))
            continue
        found = True
        unchanged = existing.get("status") == status_text and existing.get("lastTransitionTime")
        since = existing["lastTransitionTime"] if unchanged else format_time(now)
        result.append(_condition(type, status_text, **fields, since=since))
    if not found:
        result.append(_condition(type, status_text, **fields, since=format_time(now)))
    return result


def find_condition(conditions: Sequence[Mapping[str, Any]] | None, type: str) -> Mapping[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type:
            return condition
    return None


def is_condition_true(conditions: Sequence[Mapping[str, Any]] | None, type: str) -> bool:
    condition = find_condition(conditions, type)
    return condition is not None and condition.get("status") == TRUE


def remove_condition(conditions: Sequence[Mapping[str, Any]] | None, type: str) -> list[dict[str, Any]]:
    return [dict(c) for c in conditions or () if c.get("type") != type]


def _status_text(status: str | bool) -> str:
    if isinstance(status, bool):
        return TRUE if status else FALSE
    if status not in (TRUE, FALSE, UNKNOWN):
        raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
    return status


def _condition(
    type_: str, status: str, *, reason: str, message: str, observed_generation: int | None, since: str
) -> dict[str, Any]:
    condition: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if observed_generation is not None:
        condition["observedGeneration"] = observed_generation
    return condition
