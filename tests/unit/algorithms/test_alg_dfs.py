"""dynamic-frequency-scaler against the plant: the seed's multiplicative cut, a safe step-wise release."""

from __future__ import annotations

import pytest
from alg_plant import MAX_MHZ, STEPS, T0, Plant, hysteresis, run, spec_for

from climatik.algorithms import AlgorithmInput, DynamicFrequencyScaler, InvalidParameterError, Targets, run_step


def dfs(**parameters: str) -> DynamicFrequencyScaler:
    return DynamicFrequencyScaler.from_parameters(parameters)


@pytest.mark.parametrize("lag", [1, 2])
def test_converges_under_the_threshold_from_30_percent_over(lag: int) -> None:
    plant = Plant(power_lag=lag, noise=0.01)
    spec = spec_for(plant.true_power(T0) / 1.3)
    trace, _, _ = run(dfs(), plant, spec, ticks=60, capping=hysteresis(spec))

    assert all(p <= spec.threshold_watts for p in trace.power[-30:])
    assert trace.changes(start=30) == 0


def test_each_cut_multiplies_the_clock_by_the_scaling_factor() -> None:
    plant = Plant(noise=0.0)
    spec = spec_for(plant.true_power(T0) / 3)
    trace, _, _ = run(dfs(**{"scaling-factor": "0.5", "settle-seconds": "0"}), plant, spec, ticks=3,
                      capping=lambda power, was: True)

    clocks = [next(iter(t.gpu_entries().values())) for t in trace.targets]
    assert clocks == [990, 495, 240]  # 247.5 snapped down to a 15 MHz step


def test_never_goes_below_min_frequency_and_uses_supported_clocks_only() -> None:
    plant = Plant(noise=0.01)
    spec = spec_for(plant.true_power(T0) / 8)
    trace, _, _ = run(dfs(**{"min-frequency": "700"}), plant, spec, ticks=40, capping=hysteresis(spec))

    every_target = [mhz for targets in trace.targets for mhz in targets.gpu_entries().values()]
    assert min(every_target) == 705
    assert set(every_target) <= set(STEPS)


def test_releases_every_cap_when_the_load_falls() -> None:
    load = {"u": 1.0}
    plant = Plant(load=lambda t, i: load["u"], noise=0.01)
    spec = spec_for(plant.true_power(T0) / 1.3)
    algorithm = dfs()
    trace, state, targets = run(algorithm, plant, spec, ticks=30, capping=hysteresis(spec))
    assert targets.gpu_entries()
    load["u"] = 0.4
    trace, _, targets = run(algorithm, plant, spec, ticks=80, trace=trace, state_text=state, start=targets,
                            capping=hysteresis(spec))

    assert targets.gpu_entries() == {}
    assert plant.clocks == [MAX_MHZ] * plant.gpus


def test_steady_noisy_load_causes_a_bounded_number_of_changes() -> None:
    plant = Plant(noise=0.03, power_lag=2)
    spec = spec_for(plant.true_power(T0) / 1.3)
    trace, _, _ = run(dfs(), plant, spec, ticks=300, capping=hysteresis(spec))

    assert trace.changes(start=60) <= 2


def test_holds_without_power_data() -> None:
    plant = Plant()
    plant.tick(T0)
    observation = plant.observe(T0)
    capped = Targets({plant.uuid(i): 1200 for i in range(plant.gpus)})
    inp = AlgorithmInput(spec=spec_for(100_000.0), observation=observation.__class__(at=T0, gpus=observation.gpus),
                         inventory=plant.inventory(), current=capped, state={}, now=T0 + 1)

    assert run_step(dfs(), inp).targets.gpu_entries() == capped.gpu_entries()


@pytest.mark.parametrize(("name", "value"), [
    ("scaling-factor", "1"), ("scaling-factor", "0"), ("scaling-factor", "1.5"), ("scaling-factor", "eighty"),
    ("scaling-factor", "nan"), ("min-frequency", "-5"), ("min-frequency", "300.5"), ("step-up", "0"),
    ("settle-seconds", "-1"), ("scaling", "0.8"),
])
def test_rejects_bad_parameters_naming_them(name: str, value: str) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        dfs(**{name: value})

    assert caught.value.parameter == name
    assert caught.value.value == value
    assert name in str(caught.value) and "dynamic-frequency-scaler" in str(caught.value)


def test_accepts_the_seed_parameters() -> None:
    algorithm = dfs(**{"scaling-factor": "0.8", "min-frequency": "300"})

    assert (algorithm.scaling_factor, algorithm.min_frequency) == (0.8, 300)
