"""The online power model: its one-step solution meets the goal, and a change reveals the true sensitivity."""

from __future__ import annotations

import pytest

from climatik.algorithms.model import (
    GpuPoint,
    PowerModel,
    learned_theta,
    observed_theta,
    solve_per_gpu,
    solve_uniform,
    uniform_xs,
)


def plant_power(x: float, theta: float, load: float = 1.0) -> float:
    return 70.0 + load * 630.0 * ((1 - theta) + theta * float(x**2.7))


def point(uuid: str, x: float, *, theta: float = 0.8, load: float = 1.0, x_cap: float = 1.0) -> GpuPoint:
    return GpuPoint(uuid=uuid, max_mhz=1980.0, x_op=x, x_cap=x_cap, x_floor=0.2,
                    power=plant_power(x, theta, load), idle=70.0)


def test_the_model_passes_through_the_measured_point_and_follows_the_plant() -> None:
    model = PowerModel(theta=0.8)
    here = point("a", 0.9)

    assert model.gpu_power(here, 0.9) == pytest.approx(here.power)
    assert model.gpu_power(here, 0.6) == pytest.approx(plant_power(0.6, 0.8))


def test_a_gpu_below_its_cap_gains_nothing_from_a_higher_cap() -> None:
    idle_ish = point("a", 0.4, x_cap=0.8)

    assert not idle_ish.binding
    assert PowerModel().gpu_power(idle_ish, 1.0) == idle_ish.power
    assert PowerModel().gpu_power(idle_ish, 0.3) < idle_ish.power


def test_uniform_solution_is_predicted_to_land_on_the_goal() -> None:
    model = PowerModel(theta=0.8)
    points = [point(str(i), 1.0) for i in range(4)]
    goal = 0.75 * sum(p.power for p in points)
    x = solve_uniform(model, points, 0.0, goal, raising=False, max_step_up=0.25)

    assert 0.2 < x < 1.0
    assert model.total(points, uniform_xs(points, x, raising=False), 0.0) == pytest.approx(goal, rel=1e-6)
    assert sum(plant_power(x, 0.8) for _ in points) == pytest.approx(goal, rel=1e-6)


def test_an_unreachable_goal_saturates_at_the_floor() -> None:
    points = [point(str(i), 1.0) for i in range(2)]

    assert solve_uniform(PowerModel(), points, 0.0, 10.0, raising=False, max_step_up=0.25) == 0.2


def test_raising_is_limited_to_one_step_of_the_maximum() -> None:
    points = [point(str(i), 0.5, x_cap=0.5, load=0.2) for i in range(2)]

    assert solve_uniform(PowerModel(), points, 0.0, 1e6, raising=True, max_step_up=0.25) == 0.75


def test_per_gpu_water_filling_lowers_the_hungriest_first() -> None:
    model = PowerModel(theta=0.8)
    points = [point("busy", 1.0, load=1.0), point("light", 1.0, load=0.4)]
    goal = sum(p.power for p in points) - 150.0
    xs = solve_per_gpu(model, points, 0.0, goal, raising=False, max_step_up=0.25)

    assert xs[0] < xs[1] == 1.0
    assert model.total(points, xs, 0.0) == pytest.approx(goal, rel=1e-3)


def learned_from(x_before: float, x_after: float, before: float, after: float, *, noise: float = 0.0,
                 idle: float = 70.0) -> float | None:
    """What a change from clock x_before to x_after (measured) that moved one GPU from `before` to `after` W
    teaches."""
    model = PowerModel()
    share_before = model.operating_share([GpuPoint("a", 1980.0, x_before, x_before, 0.2, before, idle)])
    share_after = model.operating_share([GpuPoint("a", 1980.0, x_after, x_after, 0.2, after, idle)])
    return observed_theta(share_before, share_after, before - idle, before, after, noise=noise)


@pytest.mark.parametrize("true_theta", [0.5, 0.8, 1.0])
@pytest.mark.parametrize(("x_before", "x_after"), [(1.0, 0.7), (0.8, 0.55), (0.6, 0.9)])
def test_a_change_reveals_the_true_sensitivity(true_theta: float, x_before: float, x_after: float) -> None:
    gain = learned_from(x_before, x_after, plant_power(x_before, true_theta), plant_power(x_after, true_theta))

    assert gain == pytest.approx(true_theta, abs=0.01)


def test_a_change_too_small_to_tell_from_noise_teaches_nothing() -> None:
    assert learned_from(1.0, 0.99, 700.0, 690.0) is None
    assert learned_from(1.0, 0.9, 700.0, 600.0, noise=0.25) is None  # a bursty load moves more by itself


def test_a_load_that_moved_against_the_clock_teaches_nothing() -> None:
    assert learned_from(1.0, 0.8, 700.0, 720.0) is None  # clock cut, power up: a burst arrived
    assert learned_from(1.0, 0.8, 700.0, 300.0) is None  # more than the clock can explain: the load left
    assert learned_from(0.7, 0.9, 400.0, 420.0) is None  # barely moved with a big raise: the load eased off


def test_nothing_is_learned_near_idle_where_the_idle_estimate_dominates() -> None:
    assert learned_from(0.8, 1.0, 110.0, 125.0, idle=70.0) is None


def test_the_learned_value_is_the_median_of_recent_observations() -> None:
    assert learned_theta([]) == 0.8
    assert learned_theta([0.5, 0.9, 0.52]) == 0.52
    assert learned_theta([0.01, 0.5, 9.0, 0.6]) == 0.6  # bounded, and only the last three count
