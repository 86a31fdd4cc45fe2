"""dynamic-frequency-scaler against the plant: the seed's multiplicative cut, a safe step-wise release."""

from __future__ import annotations

import pytest
from alg_plant import MAX_MHZ, MIN_MHZ, STEPS, T0, Plant, hysteresis, run, spec_for

from climatik.algorithms import (
    AlgorithmInput,
    DynamicFrequencyScaler,
    InvalidParameterError,
    Observation,
    ObservedGpu,
    Targets,
    decode_state,
    run_step,
)


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
    plant = Plant(noise=0.0, power_lag=0)  # every reading already shows the last cut
    spec = spec_for(plant.true_power(T0) / 8)  # still over the threshold after each cut
    trace, _, _ = run(dfs(**{"scaling-factor": "0.5"}), plant, spec, ticks=3)

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


THRESHOLD = 4000.0


def reading(plant: Plant, at: float, *, mhz: int, watts: float, flag: bool = True) -> Observation:
    """Every GPU of `plant` read at `mhz`, the workload drawing `watts`; `flag` is the monitor's hysteresis flag."""
    gpus = tuple(ObservedGpu(plant.uuid(i), plant.node(i), watts / plant.gpus, mhz) for i in range(plant.gpus))
    return Observation(at=at, power=watts, capping_required=flag, gpus=gpus)


def step(plant: Plant, observation: Observation, *, current: Targets, state: str = "",
         now: float | None = None) -> tuple[Targets, str, str]:
    inp = AlgorithmInput(spec=spec_for(THRESHOLD), observation=observation, inventory=plant.inventory(),
                         current=current, state=decode_state(state), now=now or (observation.at or T0) + 1)
    result = run_step(dfs(), inp)
    return result.targets, result.state_text, result.reason


def test_cuts_only_once_power_reaches_the_threshold_whatever_the_monitor_flag_says() -> None:
    plant = Plant()
    # Between the release level and the threshold the monitor still says capping is required (hysteresis).
    in_band, _, _ = step(plant, reading(plant, T0, mhz=MAX_MHZ, watts=THRESHOLD * 0.97), current=Targets())
    at_threshold, _, _ = step(plant, reading(plant, T0, mhz=MAX_MHZ, watts=THRESHOLD), current=Targets())

    assert in_band.gpu_entries() == {}
    assert set(at_threshold.gpu_entries().values()) == {1575}  # 1980 * 0.8 snapped to a step


def test_a_burst_after_a_raise_is_cut_at_once_but_a_reading_from_before_a_cut_is_not_cut_again() -> None:
    plant = Plant()
    capped = Targets({plant.uuid(i): 1200 for i in range(plant.gpus)})
    raised, after_raise, _ = step(plant, reading(plant, T0, mhz=1200, watts=1000.0), current=capped)
    cut, after_cut, _ = step(plant, reading(plant, T0, mhz=MAX_MHZ, watts=5000.0), current=Targets())
    burst = reading(plant, T0 + 1, mhz=1200, watts=5000.0)  # one second later: the raise has not shown yet

    cut_after_raise, _, _ = step(plant, burst, current=raised, state=after_raise, now=T0 + 2)
    again, _, reason = step(plant, reading(plant, T0 + 1, mhz=MAX_MHZ, watts=5000.0), current=cut,
                            state=after_cut, now=T0 + 2)

    assert max(cut_after_raise.gpu_entries().values()) < 1200
    assert again.gpu_entries() == cut.gpu_entries()
    assert reason.startswith("waiting")


def test_raises_again_only_once_a_reading_shows_the_last_raise() -> None:
    plant = Plant()
    capped = Targets({plant.uuid(i): 1200 for i in range(plant.gpus)})
    raised, state, _ = step(plant, reading(plant, T0, mhz=1200, watts=1000.0), current=capped)
    stale, _, reason = step(plant, reading(plant, T0 + 10, mhz=1200, watts=1000.0), current=raised, state=state)
    shown, _, _ = step(plant, reading(plant, T0 + 10, mhz=1290, watts=1100.0), current=raised, state=state)

    assert set(raised.gpu_entries().values()) == {1290}  # 1200 + 100, snapped down to a supported step
    assert stale.gpu_entries() == raised.gpu_entries() and reason.startswith("waiting")
    assert set(shown.gpu_entries().values()) == {1380}


def test_climbs_back_from_its_floor_once_the_cap_is_restored() -> None:
    # A cap that could not be met left every GPU at 210 MHz; the cap is back. At the floor the GPUs draw little
    # more than idle, and only that part grows with the clock: the seed's step up must be taken.
    plant = Plant()
    floor = Targets(dict.fromkeys((plant.uuid(i) for i in range(plant.gpus)), MIN_MHZ))
    at_floor = plant.gpus * 213.0  # decode at 210 MHz: the memory-bound part does not follow the clock
    release = THRESHOLD * (85 / 90)
    assert at_floor * (310 / 210) ** 3 >= release, "the old test refused this step"
    targets, _, reason = step(plant, reading(plant, T0, mhz=MIN_MHZ, watts=at_floor), current=floor,
                              state='{"v":2,"changed":0}')

    assert all(mhz > MIN_MHZ for mhz in targets.gpu_entries().values()), reason
