"""The node guard keeps a budget by itself: per-GPU power limits split by demand when the budget allows them,
a clock cap that settles under the budget when it does not, and a report of what it did."""

from __future__ import annotations

import math
import random

from climatik.tune.budget import GpuReading, GuardState, step

H100_CLOCKS = tuple(range(210, 1981, 15))


def gpu(uuid: str, power: float, *, limit: float | None = 700.0, limits: bool = True,
        target: int | None = None, mhz: int | None = None) -> GpuReading:
    return GpuReading(uuid=uuid, power=power, min_limit=200.0 if limits else None,
                      max_limit=700.0 if limits else None, limit=limit if limits else None, target_mhz=target,
                      clocks=H100_CLOCKS, clock_mhz=mhz)


def test_a_budget_above_the_lowest_limits_is_split_into_limits_that_follow_demand() -> None:
    gpus = [gpu("a", 645.0, limit=650.0), gpu("b", 640.0, limit=650.0), gpu("c", 90.0), gpu("d", 95.0)]
    decision = step(1800.0, gpus, GuardState(), now=0.0)

    limits = decision.limits
    assert sum(v or 0 for v in limits.values()) <= 1800
    assert limits["a"] > 650 and limits["b"] > 650, "the busy GPUs held at their limits get more"
    assert all(200 <= (v or 0) <= 700 for v in limits.values())
    assert decision.report.lever == "PowerLimit"
    assert decision.clock_caps == dict.fromkeys("abcd")


def test_a_budget_the_gpus_cannot_reach_limits_nothing() -> None:
    decision = step(3000.0, [gpu("a", 600.0), gpu("b", 600.0), gpu("c", 600.0), gpu("d", 600.0)], GuardState(), 0.0)

    assert decision.report.lever == "None"
    assert decision.limits == dict.fromkeys("abcd")


def test_small_changes_of_a_limit_are_not_written() -> None:
    gpus = [gpu("a", 400.0, limit=450.0), gpu("b", 400.0, limit=450.0)]
    first = step(900.0, gpus, GuardState(), 0.0)
    again = step(900.0, [gpu(u, 402.0, limit=first.limits[u]) for u in "ab"], GuardState(), 0.1)
    assert again.limits == first.limits


def plant_power(fraction: float, load: float = 1.0, limit: float = 700.0) -> float:
    """One H100 under training load capped at `fraction` of its highest clock, held under `limit` by its
    firmware."""
    return min(75.0 + load * 665.0 * (0.2 + 0.8 * fraction ** 2.7), limit)


def plant_clock(fraction: float, load: float = 1.0, limit: float = 700.0) -> int:
    """The clock the firmware runs that GPU at: its cap, or lower to stay under its power limit."""
    while fraction > 210 / 1980 and plant_power(fraction, load, math.inf) > limit:
        fraction -= 15 / 1980
    return round(fraction * 1980)


def test_a_budget_under_the_lowest_limits_is_kept_with_a_clock_cap_that_settles() -> None:
    # Four GPUs at their lowest limit (200 W) could draw 800 W; the budget is 700 W, and they draw 622 W at
    # their lowest clock: the clock cap must find the level between and stay there.
    state = GuardState()
    fraction, powers, caps = 1.0, [], []
    for tick in range(60):
        gpus = [gpu(u, plant_power(fraction, load=0.6, limit=200.0), mhz=plant_clock(fraction, 0.6, 200.0))
                for u in "abcd"]
        decision = step(700.0, gpus, state, now=tick * 0.1)
        assert set(decision.limits.values()) == {200.0}, "every GPU at its lowest limit"
        cap = decision.clock_caps["a"]
        caps.append(cap)
        fraction = (cap or 1980) / 1980
        powers.append(sum(g.power for g in gpus))
    assert decision.report.lever == "ClockCap"
    assert max(powers[5:]) <= 700.0 * 1.01, powers
    reversals = sum(1 for x, y, z in zip(caps, caps[1:], caps[2:], strict=False) if (y - x) * (z - y) < 0)
    assert reversals <= 2, caps


def test_a_budget_under_the_floor_holds_the_lowest_clock_and_reports_the_floor() -> None:
    state = GuardState()
    fraction = 1.0
    for tick in range(40):
        gpus = [gpu(u, plant_power(fraction)) for u in "abcd"]
        decision = step(300.0, gpus, state, now=tick * 0.1)
        fraction = (decision.clock_caps["a"] or 1980) / 1980
    assert decision.clock_caps["a"] == 210
    assert decision.report.floor == round(4 * plant_power(210 / 1980), 1)
    assert not decision.report.met


def test_a_budget_raised_to_the_floor_still_reports_it_until_raised_clearly_above() -> None:
    state = GuardState()
    for tick in range(30):
        decision = step(700.0, [gpu(u, 205.0, limit=200.0, mhz=210) for u in "abcd"], state, now=tick * 0.1)
    assert decision.report.lever == "ClockCap" and decision.report.floor == 820.0

    at_floor = step(820.0, [gpu(u, 204.0, limit=200.0) for u in "abcd"], state, now=3.1)
    assert at_floor.report.lever == "PowerLimit"
    assert at_floor.report.floor is not None and at_floor.report.floor >= 816.0, \
        "a recommender that gave the floor must keep seeing it, or it cuts under it again"

    raised = step(1200.0, [gpu(u, 204.0, limit=200.0) for u in "abcd"], state, now=3.2)
    assert raised.report.floor is None


def test_gpus_over_a_budget_at_their_lowest_limits_report_what_they_draw_there_as_the_floor() -> None:
    state = GuardState()
    for tick in range(12):  # a board that draws 207 W at its lowest limit of 200 W
        decision = step(800.0, [gpu(u, 207.0, limit=200.0) for u in "abcd"], state, now=tick * 0.1)
    assert decision.report.lever == "PowerLimit" and not decision.report.met
    assert decision.report.floor == 828.0, "the recommender must not count on the lowest limits holding them"

    met = step(800.0, [gpu(u, 199.0, limit=200.0) for u in "abcd"], GuardState(), now=0.0)
    assert met.report.floor is None, "GPUs under the budget at their lowest limits have no floor to report"


def test_gpus_that_refuse_power_limits_are_held_by_their_clocks() -> None:
    decision = step(1800.0, [gpu("a", 700.0, limits=False), gpu("b", 700.0, limits=False),
                             gpu("c", 700.0, limits=False)], GuardState(), 0.0)

    assert decision.report.lever == "ClockCap"
    assert "refuse power limits" in decision.report.message
    assert all(cap is not None and cap < 1980 for cap in decision.clock_caps.values())


def test_the_report_holds_the_mean_of_the_last_second_and_the_peak_of_the_last_ten() -> None:
    state = GuardState()
    for tick, watts in enumerate([300.0, 900.0, 300.0, 300.0]):
        decision = step(800.0, [gpu("a", watts / 2), gpu("b", watts / 2)], state, now=tick * 0.25)
    assert (decision.report.power_mean, decision.report.power_max) == (450.0, 900.0)
    assert decision.report.met, "a burst above the budget within a second whose mean is under it"
    later = step(800.0, [gpu("a", 150.0), gpu("b", 150.0)], state, now=2.0)
    assert (later.report.power_mean, later.report.power_max) == (300.0, 900.0), "the burst is still the peak"
    much_later = step(800.0, [gpu("a", 150.0), gpu("b", 150.0)], state, now=12.0)
    assert much_later.report.power_max == 300.0, "readings older than ten seconds are forgotten"


def test_the_clock_cap_stays_near_the_budget_under_noisy_readings() -> None:
    rng = random.Random(7)
    state = GuardState()
    fraction, powers = 1.0, []
    for tick in range(200):
        truth = [plant_power(fraction, load=0.6, limit=200.0) for _ in "abcd"]
        gpus = [gpu(u, p * rng.uniform(0.97, 1.03), mhz=plant_clock(fraction, 0.6, 200.0))
                for u, p in zip("abcd", truth, strict=True)]
        decision = step(700.0, gpus, state, now=tick * 0.1)
        fraction = (decision.clock_caps["a"] or 1980) / 1980
        powers.append(sum(truth))
    settled = powers[20:]
    assert max(settled) <= 700.0 * 1.02, max(settled)
    assert sum(settled) / len(settled) >= 700.0 * 0.85, "the cap does not sink far below the budget"
