"""The recommender's core: the status summary of a decision (stable while nothing changes) and its part of a
policy's status, which keeps the monitor's fields and is not rewritten while nothing changes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from climatik.algorithms import Targets
from climatik.api import Recommendation
from climatik.monitor.core import CappingDecision, Rules, Verdict
from climatik.monitor.core import desired_status as monitor_status
from climatik.recommend.report import BudgetReport, ConditionState, Report, recommendation
from climatik.recommend.report import desired_status as recommend_status

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
PROBLEMS = ("unknown algorithm 'turbo'; registered: closed-loop, dynamic-frequency-scaler",)


def test_uniform_targets_are_summarised_by_their_clock() -> None:
    summary = recommendation(algorithm="closed-loop", targets=Targets({"a": 1200, "b": 1200}, {("n", 0): 2000}),
                             state_text='{"v":2}', applied=True, changed=True, previous=None,
                             now="2025-01-01T00:00:00Z")

    assert summary == Recommendation(algorithm="closed-loop", gpu_frequency=1200, cpu_frequency=2000,
                                     target_count=3, applied=True, last_changed="2025-01-01T00:00:00Z",
                                     state='{"v":2}')


def test_mixed_targets_have_no_single_clock_and_unchanged_keeps_the_last_change_time() -> None:
    previous = Recommendation(last_changed="2024-12-31T23:00:00Z")
    summary = recommendation(algorithm="x", targets=Targets({"a": 1200, "b": 900}), state_text="", applied=False,
                             changed=False, previous=previous, now="2025-01-01T00:00:00Z")

    assert summary.gpu_frequency is None and summary.state is None
    assert summary.last_changed == "2024-12-31T23:00:00Z"


def a_report(*, problems: tuple[str, ...] = (), mhz: int = 1200) -> Report:
    return Report(recommendation=Recommendation(algorithm="closed-loop", gpu_frequency=mhz, target_count=2,
                                                applied=True, last_changed="2025-01-01T00:00:00Z"),
                  actuated=ConditionState(True, "TargetsWritten", f"2 GPUs at {mhz} MHz"),
                  conflict=ConditionState(False, "NoSharedGpus", "no GPU of this policy is claimed by another policy"),
                  problems=problems)


def monitor_wrote() -> dict[str, Any]:
    verdict = Verdict(CappingDecision(True, "AboveThreshold", "over"), None, False, "NoSampleYet", "none yet")
    status = monitor_status({}, verdict, limit=1000, generation=3, now=NOW, rules=Rules())
    assert status is not None
    return status


def invalid_spec(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "InvalidSpec")


def test_the_recommender_is_the_one_writer_of_invalid_spec() -> None:
    by_monitor = monitor_wrote()
    assert "InvalidSpec" not in {c["type"] for c in by_monitor["conditions"]}
    invalid = recommend_status(by_monitor, a_report(problems=PROBLEMS), generation=3, now=NOW)
    assert invalid is not None
    assert invalid_spec(invalid) | {"lastTransitionTime": ""} == {
        "type": "InvalidSpec", "status": "True", "reason": "InvalidSpec", "message": PROBLEMS[0],
        "lastTransitionTime": "", "observedGeneration": 3}
    valid = recommend_status(invalid, a_report(), generation=3, now=NOW)
    assert valid is not None and (invalid_spec(valid)["status"], invalid_spec(valid)["reason"]) == ("False", "Valid")


def test_the_monitors_fields_and_conditions_are_kept() -> None:
    by_monitor = {**monitor_wrote(), "currentPower": 950.0, "nodes": [{"name": "n1"}]}
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


def a_state_report(state: str, *, targets: int = 0, node_power: float = 9000.0) -> Report:
    summary = Recommendation(algorithm="closed-loop", target_count=targets, applied=True, state=state,
                             last_changed="2025-01-01T00:00:00Z")
    return Report(recommendation=summary, actuated=ConditionState(True, "TargetsWritten", "no caps"),
                  conflict=ConditionState(False, "NoSharedGpus", "none"),
                  budgets=BudgetReport(budget=18000.0, node_power=node_power,
                                       feasible=ConditionState(True, "WithinReach", "within reach")))


def test_a_policy_at_rest_does_not_write_its_algorithm_state_or_node_power_alone() -> None:
    written = recommend_status({"cappingActionRequired": False}, a_state_report('{"last":1}'), generation=3, now=NOW)
    assert written is not None
    assert recommend_status(written, a_state_report('{"last":2}', node_power=12000.0), generation=3, now=NOW) is None
    # They ride along with news: here a new Feasible message.
    news = a_state_report('{"last":3}', node_power=12000.0)
    news = Report(news.recommendation, news.actuated, news.conflict, budgets=BudgetReport(
        budget=17000.0, node_power=12000.0, feasible=news.budgets.feasible if news.budgets else None))  # type: ignore[arg-type]
    rewritten = recommend_status(written, news, generation=3, now=NOW)
    assert rewritten is not None
    assert rewritten["recommendation"]["state"] == '{"last":3}' and rewritten["nodePower"] == 12000.0


def test_a_capping_policy_writes_every_new_algorithm_state() -> None:
    written = recommend_status({"cappingActionRequired": True}, a_state_report('{"last":1}'), generation=3, now=NOW)
    assert written is not None
    moved = recommend_status(written, a_state_report('{"last":2}'), generation=3, now=NOW)
    assert moved is not None and moved["recommendation"]["state"] == '{"last":2}'


def test_a_policy_holding_caps_writes_every_new_algorithm_state() -> None:
    written = recommend_status({"cappingActionRequired": False}, a_state_report('{"last":1}', targets=8),
                               generation=3, now=NOW)
    assert written is not None
    assert recommend_status(written, a_state_report('{"last":2}', targets=8), generation=3, now=NOW) is not None
