"""The event schedule of simulated-time runs: actions run in time order, told their own time, without drift."""

from __future__ import annotations

import pytest

from climatik.sim.loop.harness import Schedule


def test_actions_due_within_a_step_run_in_time_then_order_with_their_own_time() -> None:
    schedule = Schedule()
    seen: list[tuple[str, float]] = []
    schedule.at(0.32, lambda t: seen.append(("monitor", t)), order=2)
    schedule.at(0.30, lambda t: seen.append(("scrape", t)), order=1)
    schedule.at(0.30, lambda t: seen.append(("collect", t)), order=0)
    schedule.at(0.40, lambda t: seen.append(("late", t)))
    assert schedule.run_due(0.35) == 3
    assert seen == [("collect", 0.30), ("scrape", 0.30), ("monitor", 0.32)]


def test_an_action_can_schedule_another_that_is_already_due() -> None:
    schedule = Schedule()
    seen: list[float] = []
    schedule.at(1.0, lambda t: schedule.at(t + 0.05, seen.append))
    schedule.run_due(1.1)
    assert seen == [pytest.approx(1.05)]


def test_periodic_actions_keep_their_phase_over_long_runs() -> None:
    schedule = Schedule()
    seen: list[float] = []
    schedule.every(0.1, seen.append, phase_s=0.03)
    now = 0.0
    for _ in range(100_000):
        now += 0.05
        schedule.run_due(now)
    assert len(seen) == 50_000
    assert seen[-1] == pytest.approx(0.03 + 49_999 * 0.1, abs=1e-9)


def test_bad_times_are_refused() -> None:
    schedule = Schedule()
    with pytest.raises(ValueError, match="finite"):
        schedule.at(float("inf"), print)
    with pytest.raises(ValueError, match="positive interval"):
        schedule.every(0.0, print)
