"""The recommender's part of a policy's status: it agrees with the monitor, keeps the monitor's fields, and is not
rewritten while nothing changes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from climatik.api import Recommendation
from climatik.monitor.decision import CappingDecision
from climatik.monitor.status import Verdict, WritePolicy, monitor_status
from climatik.recommend.status import ConditionState, Report, recommend_status

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
PROBLEMS = ("unknown algorithm 'turbo'; registered: closed-loop, dynamic-frequency-scaler",)


def a_report(*, problems: tuple[str, ...] = (), mhz: int = 1200) -> Report:
    return Report(recommendation=Recommendation(algorithm="closed-loop", gpu_frequency=mhz, target_count=2,
                                                applied=True, last_changed="2025-01-01T00:00:00Z"),
                  actuated=ConditionState(True, "TargetsWritten", f"2 GPUs at {mhz} MHz"),
                  conflict=ConditionState(False, "NoSharedGpus", "no GPU of this policy is claimed by another policy"),
                  problems=problems)


def monitor_wrote(problems: tuple[str, ...]) -> dict[str, Any]:
    verdict = Verdict(CappingDecision(True, "AboveThreshold", "over"), None, False, "NoSampleYet", "none yet",
                      problems)
    status = monitor_status({}, verdict, limit=1000, generation=3, now=NOW, rules=WritePolicy())
    assert status is not None
    return status


def invalid_spec(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "InvalidSpec")


def test_the_invalid_spec_condition_is_the_monitors_to_the_letter() -> None:
    by_monitor = monitor_wrote(PROBLEMS)
    by_both = recommend_status(by_monitor, a_report(problems=PROBLEMS), generation=3, now=NOW)

    assert by_both is not None
    assert invalid_spec(by_both) == invalid_spec(by_monitor)


def test_a_valid_spec_is_said_valid_in_the_monitors_words() -> None:
    by_monitor = monitor_wrote(())
    by_both = recommend_status(by_monitor, a_report(), generation=3, now=NOW)

    assert by_both is not None and invalid_spec(by_both) == invalid_spec(by_monitor)


def test_the_monitors_fields_and_conditions_are_kept() -> None:
    by_monitor = {**monitor_wrote(()), "currentPower": 950.0, "nodes": [{"name": "n1"}]}
    status = recommend_status(by_monitor, a_report(), generation=3, now=NOW)

    assert status is not None
    assert status["currentPower"] == 950.0 and status["nodes"] == [{"name": "n1"}]
    assert {c["type"] for c in status["conditions"]} == {"MetricsAvailable", "CappingRequired", "InvalidSpec",
                                                         "Conflict", "Actuated"}
    assert status["recommendation"]["gpuFrequency"] == 1200


def test_nothing_is_written_while_nothing_changes_however_much_time_passes() -> None:
    written = recommend_status({}, a_report(), generation=3, now=NOW)
    assert written is not None

    later = NOW + dt.timedelta(hours=1)
    assert recommend_status(written, a_report(), generation=3, now=later) is None


def test_a_new_target_is_written_without_moving_the_conditions_transition_times() -> None:
    written = recommend_status({}, a_report(), generation=3, now=NOW)
    assert written is not None
    changed = recommend_status(written, a_report(mhz=900), generation=3, now=NOW + dt.timedelta(minutes=5))

    assert changed is not None and changed["recommendation"]["gpuFrequency"] == 900
    actuated = next(c for c in changed["conditions"] if c["type"] == "Actuated")
    assert actuated["lastTransitionTime"] == "2025-01-01T00:00:00Z" and actuated["message"] == "2 GPUs at 900 MHz"
