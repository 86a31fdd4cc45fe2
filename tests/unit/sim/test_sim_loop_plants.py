"""Plants the controllers' model does not match, and a cap that cannot be met: what the world is built from."""

from __future__ import annotations

from dataclasses import replace

import pytest

from climatik.sim.loop import NoCapping, Plant, StaticPowerLimit, plants, policy_metrics, run
from climatik.sim.loop import scenario as standard
from climatik.sim.loop.scenario import INFEASIBLE_LOAD, World, floor_power
from climatik.sim.physics import H100


def world(plant: Plant, seed: int = 0) -> World:
    return World(replace(standard.step(seed=seed), plant=plant), dt_s=0.05, gpu_lag_s=0.0)


def test_the_default_plant_is_the_profile_read_exactly() -> None:
    default = plants()[0]
    assert default == Plant()
    assert all(placed.gpu.profile == H100 for placed in world(default).all_gpus())


def test_boards_differ_by_a_spread_drawn_once_per_seed() -> None:
    spread = Plant("boards", p_max_spread=0.06)
    draws = [placed.gpu.profile.training.p_max_w for placed in world(spread).all_gpus()]
    again = [placed.gpu.profile.training.p_max_w for placed in world(spread).all_gpus()]
    other = [placed.gpu.profile.training.p_max_w for placed in world(spread, seed=1).all_gpus()]
    assert draws == again != other
    assert len(set(draws)) == len(draws)
    low, high = 75.0 + 0.94 * (740.0 - 75.0), 75.0 + 1.06 * (740.0 - 75.0)
    assert all(low <= watts <= high for watts in draws)


def test_another_power_exponent_reaches_every_phase() -> None:
    profile = world(Plant("steep", alpha=3.5)).all_gpus()[0].gpu.profile
    assert {profile.prefill.alpha, profile.decode.alpha, profile.training.alpha} == {3.5}


def test_noisy_readings_reach_what_prometheus_stores_but_not_the_energy() -> None:
    scenario = replace(standard.cap_drop(), duration_s=20.0)
    exact = run(scenario, NoCapping()).policies["train"]
    noisy = run(replace(scenario, plant=Plant("noise", noise=0.01)), NoCapping()).policies["train"]
    assert noisy.power == pytest.approx(exact.power)
    errors = [n / e - 1.0 for n, e in zip(noisy.prom[40:], exact.prom[40:], strict=True)]
    assert max(abs(error) for error in errors) > 0.001


def test_the_infeasible_cap_is_under_what_the_gpus_draw_at_their_floor() -> None:
    scenario = standard.infeasible()
    (policy,) = scenario.policies
    floor = 8 * max(floor_power(H100, INFEASIBLE_LOAD), H100.power_limit_range[0])
    assert policy.cap_at(40.0) < floor < policy.cap_at(10.0) == policy.cap_at(100.0)
    uncapped = run(replace(scenario, duration_s=20.0), NoCapping()).policies["train"]
    assert max(uncapped.power) < 0.8 * policy.cap_at(0.0)


def test_the_firmware_response_is_a_property_of_the_plant() -> None:
    scenario = replace(standard.step(), duration_s=25.0)
    lagging = policy_metrics(run(scenario, StaticPowerLimit()).policies["train"])
    instant = policy_metrics(run(replace(scenario, plant=Plant("instant", firmware_tau_s=0.0)),
                                 StaticPowerLimit()).policies["train"])
    assert lagging.worst_span_s > 0.0
    assert instant.worst_span_s == 0.0
