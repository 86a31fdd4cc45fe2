"""The closed loop on simulated time: the data path's delays, the status and state the algorithm sees, and
reproducibility."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from climatik.algorithms import AlgorithmInput, AlgorithmOutput, Targets, default_registry
from climatik.api import AlgorithmRef
from climatik.sim.loop import (
    CapChange,
    DataPath,
    GpuPlan,
    PolicyPlan,
    ProductionLoop,
    Scenario,
    policy_metrics,
    run,
)
from climatik.sim.loop import scenario as standard
from climatik.sim.physics import H100, Phase, PhaseMix
from climatik.sim.traces import Breakpoint, ScriptedParams

HEAVY = ScriptedParams((Breakpoint(0.0, 0.9, PhaseMix.only(Phase.TRAINING)),))
EPOCH = DataPath().epoch_s


class CapOnce:
    """Caps every GPU at 990 MHz (a supported step) once capping is required; counts its steps in its state."""

    name = "cap-once"

    def __init__(self) -> None:
        self.inputs: list[AlgorithmInput] = []

    def step(self, inp: AlgorithmInput) -> AlgorithmOutput:
        self.inputs.append(inp)
        steps = int(inp.state.get("steps", 0)) + 1
        state = {"steps": steps, "trail": (steps, "tuple")}
        if not inp.observation.capping_required and not inp.current.gpu_entries():
            return AlgorithmOutput(inp.current, state, "nothing to do")
        return AlgorithmOutput(Targets({gpu.uuid: 990 for gpu in inp.observation.gpus}), state, "capping")


def two_gpus(cap: int = 1000) -> Scenario:
    return Scenario(name="two", title="two busy GPUs", nodes={"n": 2},
                    gpus=(GpuPlan("n", 0, HEAVY), GpuPlan("n", 1, HEAVY)),
                    policies=(PolicyPlan("p", (("n", 0), ("n", 1)), (CapChange(0.0, cap),)),), duration_s=4.0)


def test_the_clock_changes_after_every_delay_of_the_data_path() -> None:
    algorithm = CapOnce()
    series = run(two_gpus(), ProductionLoop(algorithm), datapath=DataPath()).policies["p"]
    clocks = dict(zip((round(t, 2) for t in series.end_s), series.clock, strict=True))
    # The full load is in the 1 s average collected at 1.0 s, scraped at 1.3 s, read by the monitor at 1.6 s;
    # the recommender runs at 1.65 s, the tuner applies at 1.9 s and the clock follows 0.03 s later.
    assert clocks[1.9] == H100.max_sm_mhz
    assert clocks[1.95] == 990
    capping = [inp for inp in algorithm.inputs if inp.observation.capping_required]
    assert capping[0].now == pytest.approx(EPOCH + 1.65)


def test_the_algorithm_sees_the_status_the_monitor_writes() -> None:
    algorithm = CapOnce()
    run(two_gpus(), ProductionLoop(algorithm))
    first = next(inp for inp in algorithm.inputs if inp.observation.capping_required)
    observation = first.observation
    # lastUpdated is the scrape time (1.3 s), in milliseconds as the monitor writes it.
    assert observation.at == pytest.approx(EPOCH + 1.3)
    assert [gpu.node for gpu in observation.gpus] == ["n", "n"]
    assert all(gpu.sm_clock == H100.max_sm_mhz for gpu in observation.gpus)
    assert observation.power == pytest.approx(sum(gpu.power or 0.0 for gpu in observation.gpus))
    assert observation.power == pytest.approx(2 * (75.0 + 0.9 * (740.0 - 75.0)), rel=1e-3)
    assert set(first.inventory.gpus) == {gpu.uuid for gpu in observation.gpus}


def test_state_round_trips_through_json_and_targets_come_back_from_node_frequencies() -> None:
    algorithm = CapOnce()
    run(two_gpus(), ProductionLoop(algorithm))
    assert algorithm.inputs[0].state == {}
    for index, inp in enumerate(algorithm.inputs[1:], start=1):
        assert inp.state == json.loads(json.dumps({"steps": index, "trail": [index, "tuple"]}))
    after = [inp for inp in algorithm.inputs if inp.current.gpu_entries()]
    assert after and all(set(inp.current.gpu_entries().values()) == {990} for inp in after)


def test_a_slower_control_period_reacts_later() -> None:
    fast = run(two_gpus(), ProductionLoop(CapOnce()), datapath=DataPath()).policies["p"]
    slow_path = DataPath().with_period(5.0)
    slow = run(replace(two_gpus(), duration_s=8.0), ProductionLoop(CapOnce()), datapath=slow_path).policies["p"]
    assert policy_metrics(slow).energy_above_cap_j > policy_metrics(fast).energy_above_cap_j


def test_runs_are_reproducible_for_a_seed_and_differ_between_seeds() -> None:
    registry = default_registry(plugins=False)

    def powers(seed: int) -> list[float]:
        scenario = replace(standard.llm(seed=seed), duration_s=60.0)
        loop = ProductionLoop(registry.create(AlgorithmRef("closed-loop")))
        return run(scenario, loop).policies["serve"].power

    assert powers(3) == powers(3)
    assert powers(3) != powers(4)


def test_the_default_algorithm_brings_a_load_step_back_under_the_cap() -> None:
    registry = default_registry(plugins=False)
    scenario = replace(standard.step(), duration_s=40.0)
    loop = ProductionLoop(registry.create(None))
    series = run(scenario, loop).policies["train"]
    late = [p / c for p, c, end in zip(series.power, series.cap, series.end_s, strict=True) if end > 30.0]
    assert max(late) <= 1.0
    assert loop.applies > 0
