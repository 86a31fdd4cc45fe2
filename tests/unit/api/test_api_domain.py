"""A domain's budget in force: schedule windows in its time zone, rises spread by the ramp, scheduled falls in
place when their window opens."""

from __future__ import annotations

import datetime as dt

import pytest

from climatik.api.domain import BudgetWindow, PowerDomainSpec, effective_budget, schedule_problems, scheduled_budget
from climatik.api.policy import LabelSelector

RACK = LabelSelector(match_labels={"rack": "b07"})


def spec(**changes: object) -> PowerDomainSpec:
    return PowerDomainSpec(**{"budget": 20000, "node_selector": RACK, **changes})  # type: ignore[arg-type]


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


PEAK = BudgetWindow(start="14:00", end="18:00", budget=15000, days=["Mon", "Tue", "Wed", "Thu", "Fri"])
NIGHT = BudgetWindow(start="22:00", end="06:00", budget=12000)


def test_a_window_lowers_the_budget_while_it_is_open_on_its_days_in_the_domains_time_zone() -> None:
    peak = spec(schedule=[PEAK], time_zone="America/Chicago")
    assert scheduled_budget(peak, at("2026-12-01T20:30:00+00:00")) == 15000, "14:30 in Chicago, a Tuesday"
    assert scheduled_budget(peak, at("2026-12-01T14:30:00+00:00")) == 20000, "08:30 in Chicago"
    assert scheduled_budget(peak, at("2026-12-05T20:30:00+00:00")) == 20000, "a Saturday"


def test_a_window_past_midnight_belongs_to_the_day_it_opened() -> None:
    night = spec(schedule=[BudgetWindow(start="22:00", end="06:00", budget=12000, days=["Fri"])])
    assert scheduled_budget(night, at("2026-12-04T23:00:00+00:00")) == 12000, "Friday night"
    assert scheduled_budget(night, at("2026-12-05T05:00:00+00:00")) == 12000, "Saturday early: Friday's window"
    assert scheduled_budget(night, at("2026-12-06T05:00:00+00:00")) == 20000, "Sunday early: Saturday has none"


def test_overlapping_windows_give_the_lowest_and_never_raise_the_spec_budget() -> None:
    both = spec(schedule=[BudgetWindow(start="00:00", end="23:59", budget=30000), NIGHT])
    assert scheduled_budget(both, at("2026-12-01T12:00:00+00:00")) == 20000
    assert scheduled_budget(both, at("2026-12-01T23:00:00+00:00")) == 12000


def test_a_rise_is_spread_by_the_ramp_and_a_lowered_spec_applies_at_once() -> None:
    ramped = spec(ramp_watts_per_second=500)
    start = at("2026-12-01T12:00:00+00:00")
    assert effective_budget(ramped, (10000.0, start), start + dt.timedelta(seconds=4)) == 12000.0
    assert effective_budget(ramped, (10000.0, start), start + dt.timedelta(seconds=60)) == 20000.0
    lowered = spec(budget=8000, ramp_watts_per_second=500)
    assert effective_budget(lowered, (20000.0, start), start + dt.timedelta(seconds=1)) == 8000.0
    assert effective_budget(ramped, None, start) == 20000.0, "a new domain starts at its budget"


def test_a_scheduled_fall_starts_early_so_that_it_is_in_place_when_its_window_opens() -> None:
    night = spec(schedule=[NIGHT], ramp_watts_per_second=100)
    before = at("2026-12-01T21:59:00+00:00")  # 60 s before the window: at most 12000 + 100 * 60
    assert effective_budget(night, (20000.0, before), before) == pytest.approx(18000.0)
    opening = at("2026-12-01T22:00:00+00:00")
    assert effective_budget(night, (18000.0, before), opening) == 12000.0
    assert effective_budget(night, (20000.0, at("2026-12-01T20:00:00+00:00")),
                            at("2026-12-01T20:00:00+00:00")) == 20000.0, "two hours before, nothing yet"


def test_problems_the_api_server_cannot_judge_are_named() -> None:
    assert schedule_problems(spec(time_zone="Mars/Olympus")) == [
        "time zone 'Mars/Olympus' is not known (an IANA name such as Europe/Paris)"]
    assert schedule_problems(spec(schedule=[PEAK, NIGHT], time_zone="Europe/Paris")) == []
