"""closed-loop against the plant: it caps in one well-sized step, gives clocks back, and settles."""

from __future__ import annotations

import pytest
from alg_plant import MAX_MHZ, STEPS, T0, Plant, Trace, run, spec_for

from climatik.algorithms import (
    AlgorithmInput,
    ClosedLoop,
    Observation,
    ObservedGpu,
    Targets,
    decode_state,
    encode_state,
    run_step,
)


def settled_power(trace: Trace, last: int = 10) -> list[float]:
    return trace.power[-last:]


@pytest.mark.parametrize("lag", [1, 2])
def test_converges_under_the_threshold_from_30_percent_over(lag: int) -> None:
    plant = Plant(power_lag=lag, noise=0.01)
    spec = spec_for(plant.true_power(T0) / 1.3)
    trace, _, _ = run(ClosedLoop.from_parameters({}), plant, spec, ticks=30)

    assert trace.power[0] <= spec.threshold_watts  # the very first step already brings it under
    assert all(p <= spec.threshold_watts * 1.01 for p in settled_power(trace, 20))
    assert min(settled_power(trace)) >= spec.threshold_watts * 0.97  # it aims at the threshold itself
    assert trace.changes() <= 3


def test_memory_bound_workload_is_learned_and_capped_in_few_steps() -> None:
    plant = Plant(beta=0.5, noise=0.01, power_lag=2)  # half of its power ignores the clock
    spec = spec_for(plant.true_power(T0) / 1.2)
    trace, state, _ = run(ClosedLoop.from_parameters({}), plant, spec, ticks=40)

    assert all(p <= spec.threshold_watts * 1.01 for p in settled_power(trace, 20))
    assert trace.changes() <= 4
    gains = decode_state(state)["gains"]
    assert 0.35 <= gains[-1] <= 0.65  # the clock-sensitive share it learned is close to the plant's 0.5


def test_a_second_overload_is_capped_in_one_step_with_what_was_learned() -> None:
    heavy = {"on": True}
    plant = Plant(beta=0.5, noise=0.005, load=lambda t, i: 1.0 if heavy["on"] else 0.4)
    spec = spec_for(plant.true_power(T0) / 1.2)
    algorithm = ClosedLoop.from_parameters({})
    trace, state, targets = run(algorithm, plant, spec, ticks=30)
    heavy["on"] = False
    trace, state, targets = run(algorithm, plant, spec, ticks=30, trace=trace, state_text=state, start=targets)
    assert targets.gpu_entries() == {}
    heavy["on"] = True
    before = trace.changes()
    trace, _, _ = run(algorithm, plant, spec, ticks=20, trace=trace, state_text=state, start=targets)

    assert trace.changes() - before == 1
    assert spec.threshold_watts * 0.93 <= trace.power[-1] <= spec.threshold_watts


def test_releases_every_cap_when_the_load_falls() -> None:
    load = {"u": 1.0}
    plant = Plant(load=lambda t, i: load["u"], noise=0.01)
    spec = spec_for(plant.true_power(T0) / 1.3)
    algorithm = ClosedLoop.from_parameters({})
    trace, state, targets = run(algorithm, plant, spec, ticks=20)
    assert targets.gpu_entries()
    load["u"] = 0.5
    trace, _, targets = run(algorithm, plant, spec, ticks=20, trace=trace, state_text=state, start=targets)

    assert targets.gpus == {} or all(mhz is None for mhz in targets.gpus.values())
    assert plant.clocks == [MAX_MHZ] * plant.gpus


def test_gives_clocks_back_by_the_model_not_straight_to_the_maximum() -> None:
    load = {"u": 1.0}
    plant = Plant(load=lambda t, i: load["u"], noise=0.0)
    spec = spec_for(plant.true_power(T0) / 1.5)
    algorithm = ClosedLoop.from_parameters({})
    trace, state, targets = run(algorithm, plant, spec, ticks=20)
    load["u"] = 0.8  # some headroom, not enough to run at full clock
    trace, _, targets = run(algorithm, plant, spec, ticks=20, trace=trace, state_text=state, start=targets)

    assert targets.gpu_entries()
    assert all(p <= spec.threshold_watts * 1.01 for p in trace.power[-10:])
    assert trace.power[-1] >= spec.threshold_watts * 0.9


def test_steady_noisy_load_causes_a_bounded_number_of_changes() -> None:
    plant = Plant(noise=0.03, power_lag=2)
    spec = spec_for(plant.true_power(T0) / 1.3)
    trace, _, _ = run(ClosedLoop.from_parameters({}), plant, spec, ticks=300)

    assert trace.changes(start=30) <= 3


def test_never_goes_below_min_frequency_and_uses_supported_clocks_only() -> None:
    plant = Plant(noise=0.01)
    spec = spec_for(plant.true_power(T0) / 4)  # unreachable even at the floor
    trace, _, _ = run(ClosedLoop.from_parameters({"min-frequency": "700"}), plant, spec, ticks=20)

    every_target = [mhz for targets in trace.targets for mhz in targets.gpu_entries().values()]
    assert min(every_target) == 705  # 700 snapped up to the next supported step
    assert set(every_target) <= set(STEPS)


def test_keeps_the_gpus_of_a_workload_at_one_clock_by_default() -> None:
    plant = Plant(load=lambda t, i: 1.0 if i % 2 else 0.6, noise=0.01)
    spec = spec_for(plant.true_power(T0) / 1.2)
    _, _, targets = run(ClosedLoop.from_parameters({}), plant, spec, ticks=20)

    assert len(set(targets.gpu_entries().values())) == 1
    assert len(targets.gpu_entries()) == plant.gpus


def test_per_gpu_mode_lowers_the_hungriest_gpus_most() -> None:
    plant = Plant(load=lambda t, i: 1.0 if i < 4 else 0.5, noise=0.0)
    spec = spec_for(plant.true_power(T0) / 1.15)
    trace, _, targets = run(ClosedLoop.from_parameters({"uniform": "false"}), plant, spec, ticks=20)

    busy = [targets.gpus.get(plant.uuid(i)) or MAX_MHZ for i in range(4)]
    light = [targets.gpus.get(plant.uuid(i)) or MAX_MHZ for i in range(4, 8)]
    assert max(busy) < min(light)
    assert trace.power[-1] <= spec.threshold_watts


def test_uses_cpus_once_the_gpus_are_at_their_floor_and_gives_them_back_first() -> None:
    load = {"u": 1.0}
    plant = Plant(load=lambda t, i: load["u"], cpu_watts_per_node=400.0, noise=0.005)
    spec = spec_for(3400.0, tune_cpus=True)
    algorithm = ClosedLoop.from_parameters({"min-frequency": "1500"})
    trace, state, targets = run(algorithm, plant, spec, ticks=40)

    assert set(targets.gpu_entries().values()) == {1500}
    assert targets.cpu_entries() and max(targets.cpu_entries().values()) < 3000
    assert trace.power[-1] <= spec.threshold_watts
    first_cpu_change = next(i for i, t in enumerate(trace.targets) if t.cpu_entries())
    assert trace.targets[first_cpu_change - 1].gpu_entries() == targets.gpu_entries()

    load["u"] = 0.4
    trace, _, targets = run(algorithm, plant, spec, ticks=60, trace=trace, state_text=state, start=targets)
    released_cpus = next(i for i in range(40, len(trace.targets)) if not trace.targets[i].cpu_entries())
    assert all(t.gpu_entries() for t in trace.targets[40:released_cpus])  # GPUs stayed capped until then
    assert targets.cpu_entries() == {}


def test_leaves_cpus_alone_unless_the_policy_tunes_them() -> None:
    plant = Plant(cpu_watts_per_node=400.0, noise=0.0)
    spec = spec_for(3400.0)
    trace, _, _ = run(ClosedLoop.from_parameters({"min-frequency": "1500"}), plant, spec, ticks=30)

    assert all(not t.cpu_entries() for t in trace.targets)


def one_step(algorithm: ClosedLoop, plant: Plant, spec_watts: float, observation: Observation, *,
             current: Targets, state: str = "", now: float | None = None) -> tuple[Targets, str, str]:
    inp = AlgorithmInput(spec=spec_for(spec_watts), observation=observation, inventory=plant.inventory(),
                         current=current, state=decode_state(state), now=now or (observation.at or T0) + 1)
    result = run_step(algorithm, inp)
    return result.targets, result.state_text, result.reason


def test_holds_the_current_targets_without_fresh_data() -> None:
    plant = Plant()
    algorithm = ClosedLoop.from_parameters({"stale-seconds": "60"})
    capped = Targets({plant.uuid(i): 1200 for i in range(plant.gpus)})
    plant.tick(T0)
    fresh = plant.observe(T0)
    no_power = Observation(at=T0, power=None, gpus=fresh.gpus)

    for observation, now in ((no_power, T0 + 1), (fresh, T0 + 300)):
        targets, _, reason = one_step(algorithm, plant, 100_000.0, observation, current=capped, now=now)
        assert targets.gpu_entries() == capped.gpu_entries()  # far under budget, yet nothing is raised
        assert reason.startswith("holding")


def test_acts_only_once_on_the_same_observation() -> None:
    plant = Plant()
    algorithm = ClosedLoop.from_parameters({})
    plant.tick(T0)
    observation = plant.observe(T0)
    first, state, _ = one_step(algorithm, plant, 3000.0, observation, current=Targets())
    second, _, reason = one_step(algorithm, plant, 3000.0, observation, current=first, state=state, now=T0 + 50)

    assert first.gpu_entries()
    assert second.gpu_entries() == first.gpu_entries()
    assert reason == "holding: no new observation"


def test_waits_while_the_clocks_have_not_reached_their_new_caps() -> None:
    plant = Plant()
    algorithm = ClosedLoop.from_parameters({"settle-seconds": "20"})
    plant.tick(T0)
    first, state, _ = one_step(algorithm, plant, 3000.0, plant.observe(T0), current=Targets())
    lagging = plant.observe(T0 + 30)  # the plant never applied the caps: clocks still at the maximum
    second, _, reason = one_step(algorithm, plant, 3000.0, lagging, current=first, state=state)

    assert second.gpu_entries() == first.gpu_entries()
    assert reason.startswith("waiting")


def test_a_new_gpu_joins_the_workload_at_its_clock() -> None:
    plant = Plant(gpus=3)
    current = Targets({plant.uuid(0): 1200, plant.uuid(1): 1200})
    power = 2 * (75 + 625 * (1200 / MAX_MHZ) ** 2.7) + 700
    readings = (ObservedGpu(plant.uuid(0), "node-0", None, 1200), ObservedGpu(plant.uuid(1), "node-0", None, 1200),
                ObservedGpu(plant.uuid(2), "node-0", None, MAX_MHZ))
    targets, _, _ = one_step(ClosedLoop(), plant, power * 1.01, Observation(at=T0, power=power, gpus=readings),
                             current=current)

    assert targets.gpu_entries() == {plant.uuid(0): 1200, plant.uuid(1): 1200, plant.uuid(2): 1200}


def test_a_gpu_that_joins_during_a_cut_joins_the_workloads_level_first() -> None:
    # The second node's tuner reported its inventory after the first cut: its GPU comes in uncapped, at its
    # maximum, while the others run at 1185 MHz. Cuts never raise a GPU, so it must join the level before the cut.
    plant = Plant(gpus=3)
    current = Targets({plant.uuid(0): 1185, plant.uuid(1): 1185})
    power = 2 * (75 + 625 * (1185 / MAX_MHZ) ** 2.7) + 700
    readings = (ObservedGpu(plant.uuid(0), "node-0", None, 1185), ObservedGpu(plant.uuid(1), "node-0", None, 1185),
                ObservedGpu(plant.uuid(2), "node-1", None, MAX_MHZ))
    targets, _, _ = one_step(ClosedLoop(), plant, power / 1.05, Observation(at=T0, power=power, gpus=readings),
                             current=current)

    clocks = targets.gpu_entries()
    assert len(set(clocks.values())) == 1, clocks
    assert clocks[plant.uuid(2)] <= 1185


def test_state_stays_small_with_many_gpus_and_survives_a_restart() -> None:
    plant = Plant(gpus=64, per_node=8, noise=0.01)
    spec = spec_for(plant.true_power(T0) / 1.3)
    trace, state, targets = run(ClosedLoop.from_parameters({}), plant, spec, ticks=15)
    assert len(state) < 300
    assert decode_state(state) == decode_state(encode_state(decode_state(state)))

    restarted = ClosedLoop.from_parameters({})  # a new process: only the persisted text carries over
    trace, _, _ = run(restarted, plant, spec, ticks=30, trace=trace, state_text=state, start=targets)
    assert trace.changes(start=15) <= 2
    assert trace.power[-1] <= spec.threshold_watts * 1.01


def test_garbage_state_is_a_fresh_start_not_a_crash() -> None:
    plant = Plant()
    plant.tick(T0)
    for state in ('{"v": 2, "gains": ["x", 7, null], "anchor": [1, 2]}', "not json", "[1,2]"):
        targets, _, _ = one_step(ClosedLoop(), plant, 3000.0, plant.observe(T0), current=Targets(), state=state)
        assert targets.gpu_entries()


def readings(plant: Plant, at: float, *, mhz: int, watts: float) -> Observation:
    """Every GPU of `plant` read at `mhz` drawing `watts`."""
    gpus = tuple(ObservedGpu(plant.uuid(i), plant.node(i), watts, mhz) for i in range(plant.gpus))
    return Observation(at=at, power=watts * plant.gpus, gpus=gpus)


def clock_of(targets: Targets) -> int:
    (mhz,) = set(targets.gpu_entries().values())
    return mhz


THRESHOLD = 4000.0


def test_cuts_further_before_the_last_cut_shows_when_the_load_grows() -> None:
    plant = Plant()
    algorithm = ClosedLoop()
    first, state, _ = one_step(algorithm, plant, THRESHOLD, readings(plant, T0, mhz=MAX_MHZ, watts=650.0),
                               current=Targets())
    # One second later the reading still carries the power from before the cut: collected before it took
    # effect (old clocks), or averaged across it (new clocks already).
    collected_before = readings(plant, T0 + 1, mhz=MAX_MHZ, watts=650.0)
    averaged_across = readings(plant, T0 + 1, mhz=clock_of(first), watts=650.0)
    grown_load = readings(plant, T0 + 1, mhz=MAX_MHZ, watts=780.0)
    for early in (collected_before, averaged_across):
        held, _, reason = one_step(algorithm, plant, THRESHOLD, early, current=first, state=state, now=T0 + 2)
        assert held.gpu_entries() == first.gpu_entries(), "a reading from before the cut asks for no second cut"
        assert reason.startswith("waiting")
    further, _, _ = one_step(algorithm, plant, THRESHOLD, grown_load, current=first, state=state, now=T0 + 2)

    assert clock_of(further) < clock_of(first), "a load that grew is cut further at once"


def test_a_burst_right_after_a_cut_teaches_the_model_nothing() -> None:
    plant = Plant()
    algorithm = ClosedLoop()
    first, state, _ = one_step(algorithm, plant, THRESHOLD, readings(plant, T0, mhz=MAX_MHZ, watts=650.0),
                               current=Targets())
    mhz = clock_of(first)
    expected = 75.0 + 575.0 * (0.2 + 0.8 * (mhz / MAX_MHZ) ** 2.7)  # what the cut alone does to a steady load
    _, steady, _ = one_step(algorithm, plant, THRESHOLD, readings(plant, T0 + 5, mhz=mhz, watts=expected),
                            current=first, state=state)
    _, burst, _ = one_step(algorithm, plant, THRESHOLD, readings(plant, T0 + 5, mhz=mhz, watts=700.0),
                           current=first, state=state)

    assert decode_state(steady)["gains"] == [pytest.approx(0.8, abs=0.05)]
    assert "gains" not in decode_state(burst)


def test_a_single_cut_is_bounded_even_after_learning_that_the_clock_hardly_matters() -> None:
    plant = Plant()
    collapsed = encode_state({"v": 3, "gains": [0.1, 0.1, 0.1]})
    targets, _, _ = one_step(ClosedLoop(), plant, THRESHOLD / 2, readings(plant, T0, mhz=MAX_MHZ, watts=700.0),
                             current=Targets(), state=collapsed)

    assert 0.6 * MAX_MHZ - 15 <= clock_of(targets) < MAX_MHZ


def test_a_lower_threshold_is_acted_on_at_once_with_the_latest_observation() -> None:
    plant = Plant()
    algorithm = ClosedLoop()
    observation = readings(plant, T0, mhz=MAX_MHZ, watts=500.0)
    held, state, _ = one_step(algorithm, plant, THRESHOLD * 1.2, observation, current=Targets())
    lowered, _, _ = one_step(algorithm, plant, THRESHOLD * 0.8, observation, current=held, state=state)

    assert held.gpu_entries() == {}
    assert lowered.gpu_entries()


def test_raises_again_only_once_a_reading_shows_the_last_raise() -> None:
    plant = Plant()
    algorithm = ClosedLoop()
    capped = Targets({plant.uuid(i): 1200 for i in range(plant.gpus)})
    raised, state, _ = one_step(algorithm, plant, THRESHOLD, readings(plant, T0, mhz=1200, watts=250.0),
                                current=capped)
    assert clock_of(raised) > 1200
    stale = readings(plant, T0 + 10, mhz=1200, watts=250.0)  # collected before the raise took effect
    fresh = readings(plant, T0 + 10, mhz=clock_of(raised), watts=300.0)
    after_stale, _, reason = one_step(algorithm, plant, THRESHOLD, stale, current=raised, state=state)
    after_fresh, _, _ = one_step(algorithm, plant, THRESHOLD, fresh, current=raised, state=state)

    assert after_stale.gpu_entries() == raised.gpu_entries()
    assert reason.startswith("waiting")
    assert (after_fresh.gpus.get(plant.uuid(0)) or MAX_MHZ) > clock_of(raised)


def test_a_slow_data_path_neither_oscillates_nor_unlearns_the_clock() -> None:
    plant = Plant(power_lag=3, noise=0.02)  # readings three control periods old, like a 30 s exporter collect
    spec = spec_for(plant.true_power(T0) / 1.3)
    trace, state, _ = run(ClosedLoop.from_parameters({}), plant, spec, ticks=80)

    assert all(p <= spec.threshold_watts * 1.01 for p in trace.power[20:])
    assert min(trace.power[20:]) >= spec.threshold_watts * 0.9
    assert trace.changes() <= 6
    assert all(gain >= 0.5 for gain in decode_state(state).get("gains", []))
