"""Conditions keep their transition time while their status holds, and carry the observed generation."""

from __future__ import annotations

import datetime as dt

import pytest

from climatik.api.conditions import (
    find_condition,
    is_condition_true,
    remove_condition,
    set_condition,
)
from climatik.kube.store import freeze

T0 = dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)


def ready(conditions: list[dict[str, object]] | None, status: str | bool, *, now: dt.datetime, reason: str = "Ok",
          generation: int = 1) -> list[dict[str, object]]:
    return set_condition(conditions, type="Ready", status=status, reason=reason, message=f"{reason}!",
                         observed_generation=generation, now=now)


def test_a_new_condition_gets_every_field() -> None:
    assert ready(None, True, now=T0) == [{
        "type": "Ready", "status": "True", "reason": "Ok", "message": "Ok!",
        "lastTransitionTime": "2025-01-01T12:00:00Z", "observedGeneration": 1,
    }]


def test_the_transition_time_holds_while_the_status_does() -> None:
    first = ready(None, "True", now=T0)
    again = ready(first, "True", now=T1, reason="StillOk", generation=2)
    assert again[0]["lastTransitionTime"] == "2025-01-01T12:00:00Z"
    assert again[0]["reason"] == "StillOk"
    assert again[0]["observedGeneration"] == 2


def test_the_transition_time_moves_when_the_status_flips() -> None:
    flipped = ready(ready(None, True, now=T0), False, now=T1, reason="Broken")
    assert flipped[0]["status"] == "False"
    assert flipped[0]["lastTransitionTime"] == "2025-01-01T12:05:00Z"


def test_other_conditions_are_left_alone_and_the_input_is_not_changed() -> None:
    existing = freeze([{"type": "Degraded", "status": "False", "reason": "Fine", "message": "",
                        "lastTransitionTime": "2024-12-31T00:00:00Z"}])
    updated = ready(existing, True, now=T0)
    assert [c["type"] for c in updated] == ["Degraded", "Ready"]
    assert len(existing) == 1
    assert is_condition_true(updated, "Ready")
    assert not is_condition_true(updated, "Degraded")
    assert find_condition(updated, "Missing") is None
    assert [c["type"] for c in remove_condition(updated, "Degraded")] == ["Ready"]


def test_setting_the_same_condition_twice_is_a_no_op() -> None:
    once = ready(None, True, now=T0)
    assert ready(once, True, now=T1) == once


@pytest.mark.parametrize("status", ["yes", "true", ""])
def test_status_must_be_true_false_or_unknown(status: str) -> None:
    with pytest.raises(ValueError):
        ready(None, status, now=T0)
