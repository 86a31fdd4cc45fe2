"""The baselines and the oracle of the control benchmark: what they promise about the cap, on the standard
scenarios (shortened so that the tests stay fast)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from climatik.sim.loop import (
    NoCapping,
    Oracle,
    PolicySeries,
    Scenario,
    StaticClock,
    StaticPowerLimit,
    policy_metrics,
    run,
)
from climatik.sim.loop import scenario as standard


def short(scenario: Scenario, duration_s: float) -> Scenario:
    return replace(scenario, duration_s=duration_s)


def steps_over_cap(series: PolicySeries) -> int:
    # A relative hair of slack: step power is an energy difference over the step, so it carries float noise.
    return sum(1 for power, cap in zip(series.power, series.cap, strict=True) if power > cap * (1 + 1e-9))


@pytest.mark.parametrize("scenario", [
    short(standard.step(), 60.0), short(standard.llm(), 90.0), short(standard.cap_drop(), 90.0),
    short(standard.shared(), 80.0),
], ids=lambda s: s.name)
def test_the_oracle_never_draws_more_than_the_cap(scenario: Scenario) -> None:
    recording = run(scenario, Oracle())
    for series in recording.policies.values():
        assert steps_over_cap(series) == 0
        assert policy_metrics(series).energy_above_cap_j == 0.0


def test_without_capping_the_step_scenario_goes_30_percent_over_the_cap() -> None:
    series = run(short(standard.step(), 60.0), NoCapping()).policies["train"]
    after_step = [p for p, end in zip(series.power, series.end_s, strict=True) if 25.0 <= end <= 60.0]
    assert sum(after_step) / len(after_step) == pytest.approx(1.3 * series.cap[0], rel=0.01)
    assert policy_metrics(series).energy_above_cap_j > 0.0


def test_static_settings_keep_the_step_scenario_under_the_cap() -> None:
    scenario = short(standard.step(), 60.0)
    oracle = Oracle()
    by_oracle = run(scenario, oracle).policies["train"]
    by_power_limit = policy_metrics(run(scenario, StaticPowerLimit()).policies["train"])
    by_clock = run(scenario, StaticClock(oracle.lowest)).policies["train"]
    # The firmware takes a few tens of milliseconds to pull the clock down when the load steps up.
    assert 0.0 < by_power_limit.worst_span_s <= 0.25
    assert by_power_limit.energy_above_cap_share < 0.0005
    assert steps_over_cap(by_clock) == 0
    assert by_clock.total_work <= by_oracle.total_work


def test_the_static_power_limit_follows_a_lowered_cap() -> None:
    series = run(short(standard.cap_drop(), 90.0), StaticPowerLimit()).policies["train"]
    assert series.cap[0] > series.cap[-1]
    assert series.limit[-1] == pytest.approx(series.cap[-1])
    assert policy_metrics(series).worst_span_s <= 0.25


def test_a_static_power_limit_under_the_boards_floor_is_clamped_to_it() -> None:
    series = run(short(standard.infeasible(), 50.0), StaticPowerLimit()).policies["train"]
    # 1200 W over 8 H100s would be 150 W each; the lowest limit an H100 takes is 200 W.
    assert series.limit[-1] == pytest.approx(8 * 200.0)
    assert series.power[-1] > series.cap[-1]


def test_the_oracle_at_the_threshold_holds_the_threshold_and_does_less_work() -> None:
    scenario = short(standard.step(), 60.0)
    at_cap = run(scenario, Oracle()).policies["train"]
    at_threshold = run(scenario, Oracle(at_threshold=True)).policies["train"]
    assert max(at_threshold.power) <= 0.9 * at_threshold.cap[0] * (1 + 1e-9)
    assert 0.85 < at_threshold.total_work / at_cap.total_work < 1.0


def test_the_best_static_clock_is_the_lowest_clock_the_oracle_needed() -> None:
    scenario = short(standard.cap_drop(), 90.0)
    oracle = Oracle()
    series = run(scenario, oracle).policies["train"]
    assert oracle.lowest["train"] == pytest.approx(min(series.clock), abs=1e-9)
    one_step_higher = StaticClock({"train": oracle.lowest["train"] + scenario.profile.step_mhz})
    assert steps_over_cap(run(scenario, one_step_higher).policies["train"]) > 0
