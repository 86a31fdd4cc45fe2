"""The recommender's part of a policy's status, and whether a new one is worth a write.

The recommender owns status.recommendation and the Conflict and Actuated conditions; it also writes the
InvalidSpec condition, computed exactly as the monitor computes it (climatik.validation), so that the two
agree and never flap it. Everything else (the monitor's observation) is carried over untouched. Nothing in
here moves with time alone: an unchanged decision gives an unchanged status, which costs no write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from climatik.api import Recommendation, to_dict
from climatik.api.conditions import set_condition

ACTUATED = "Actuated"
CONFLICT = "Conflict"
INVALID_SPEC = "InvalidSpec"

OWNED_CONDITIONS = (ACTUATED, CONFLICT, INVALID_SPEC)


@dataclass(frozen=True)
class ConditionState:
    """One condition's status, CamelCase reason and message."""

    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Report:
    """What the recommender tells about one policy. `recommendation` None keeps the status's as it is."""

    recommendation: Recommendation | None
    actuated: ConditionState
    conflict: ConditionState
    problems: tuple[str, ...] = ()


def recommend_status(current: Mapping[str, Any] | None, report: Report, *, generation: int | None,
                     now: dt.datetime) -> dict[str, Any] | None:
    """The whole new status (the monitor's fields kept), or None when it would not change."""
    current = dict(current or {})
    candidate = dict(current)
    if report.recommendation is not None:
        candidate["recommendation"] = to_dict(report.recommendation)
    conditions = current.get("conditions")
    for type, state in ((CONFLICT, report.conflict), (ACTUATED, report.actuated), (INVALID_SPEC, _valid(report))):
        conditions = set_condition(conditions, type=type, status=state.status, reason=state.reason,
                                   message=state.message, observed_generation=generation, now=now)
    candidate["conditions"] = conditions
    return None if candidate == current else candidate


def condition_of(status: Mapping[str, Any] | None, type: str) -> Mapping[str, Any]:
    """The condition `type` in a status dict ({} when absent)."""
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") == type:
            return dict(condition)
    return {}


def _valid(report: Report) -> ConditionState:
    # The monitor's exact wording (climatik.monitor.status), so whichever writes last changes nothing.
    if report.problems:
        return ConditionState(True, "InvalidSpec", "; ".join(report.problems))
    return ConditionState(False, "Valid", "spec is valid")
