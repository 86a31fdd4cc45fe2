"""Workload traces: deterministic per seed, and shaped like the workloads they stand for."""

from __future__ import annotations

import random

import pytest

from climatik.sim import (
    Breakpoint,
    InferenceParams,
    Load,
    Phase,
    PhaseMix,
    ScriptedTrace,
    Trace,
    TrainingParams,
)

TIMES = [i * 0.25 for i in range(4 * 600)]


def sample(trace: Trace, times: list[float]) -> list[Load]:
    return [trace.at(t) for t in times]


@pytest.mark.parametrize("params", [InferenceParams(), TrainingParams()], ids=["inference", "training"])
def test_same_seed_gives_the_same_trace(params: InferenceParams | TrainingParams) -> None:
    first = sample(params.build(random.Random(7)), TIMES)
    second = sample(params.build(random.Random(7)), TIMES)
    assert first == second


@pytest.mark.parametrize("params", [InferenceParams(), TrainingParams()], ids=["inference", "training"])
def test_different_seeds_give_different_traces(params: InferenceParams | TrainingParams) -> None:
    assert sample(params.build(random.Random(1)), TIMES) != sample(params.build(random.Random(2)), TIMES)


def test_answers_do_not_depend_on_the_order_of_questions() -> None:
    in_order = InferenceParams().build(random.Random(3))
    backwards = InferenceParams().build(random.Random(3))
    expected = sample(in_order, TIMES)
    assert list(reversed(sample(backwards, list(reversed(TIMES))))) == expected


def test_inference_mixes_prefill_and_decode_and_has_bursts() -> None:
    loads = sample(InferenceParams().build(random.Random(11)), TIMES)
    utilisations = [load.utilisation for load in loads]
    assert max(utilisations) - min(utilisations) > 0.4
    assert any(0.0 < load.mix.prefill < 1.0 for load in loads)
    assert all(load.mix.training == 0.0 for load in loads)
    # Bursts: busy stretches well above the base level, not just noise.
    busy = sum(1 for u in utilisations if u > 0.9)
    assert 0 < busy < len(utilisations) / 2


def test_inference_prefills_in_sub_second_bursts_that_a_one_second_average_hides() -> None:
    trace = InferenceParams(burst_rps=1.0).build(random.Random(4))
    fine = [trace.at(i * 0.05) for i in range(20 * 300)]
    prefill = [load.utilisation * load.mix.prefill for load in fine]
    # Whole 50 ms buckets of prefill exist, and stretches of them last from about 0.1 s to over a second.
    assert any(share == pytest.approx(1.0) for share in prefill)
    runs, length = [], 0
    for share in prefill:
        if share > 0.99:
            length += 1
        elif length:
            runs.append(length * 0.05)
            length = 0
    assert min(runs) <= 0.15
    assert max(runs) >= 0.5
    seconds = [prefill[i:i + 20] for i in range(0, len(prefill), 20)]
    hidden = [second for second in seconds if max(second) > 0.99 and sum(second) / 20 < 0.5]
    assert len(hidden) > len(seconds) / 10
    assert sum(prefill) / len(prefill) == pytest.approx(0.15, abs=0.07)


def test_inference_without_requests_is_idle() -> None:
    trace = InferenceParams(base_rps=0.0, burst_rps=0.0).build(random.Random(0))
    assert trace.at(30.0) == Load.idle()


def test_training_is_steady_and_high() -> None:
    loads = sample(TrainingParams(utilisation=0.95, jitter=0.02).build(random.Random(5)), TIMES)
    assert all(load.mix == PhaseMix.only(Phase.TRAINING) for load in loads)
    assert all(0.85 <= load.utilisation <= 1.0 for load in loads)


def test_training_pauses_for_checkpoints() -> None:
    trace = TrainingParams(checkpoint_every_s=100.0, checkpoint_s=10.0).build(random.Random(5))
    assert trace.at(105.0).utilisation < 0.1
    assert trace.at(115.0).utilisation > 0.8


def test_scripted_load_step() -> None:
    decode = PhaseMix.only(Phase.DECODE)
    trace = ScriptedTrace([Breakpoint(0.0, 0.5, decode), Breakpoint(60.0, 0.65, decode)])
    assert trace.at(59.9) == Load(0.5, decode)
    assert trace.at(60.0) == Load(0.65, decode)
    assert trace.at(1e6) == Load(0.65, decode)


def test_scripted_trace_is_idle_before_its_first_breakpoint_and_can_ramp() -> None:
    mix = PhaseMix.only(Phase.PREFILL)
    trace = ScriptedTrace([Breakpoint(10.0, 0.2, mix), Breakpoint(20.0, 0.6, mix)], interpolate=True)
    assert trace.at(5.0) == Load.idle()
    assert trace.at(15.0).utilisation == pytest.approx(0.4)


def test_scripted_breakpoints_must_be_ordered() -> None:
    mix = PhaseMix.only(Phase.DECODE)
    with pytest.raises(ValueError, match="time order"):
        ScriptedTrace([Breakpoint(5.0, 0.2, mix), Breakpoint(1.0, 0.6, mix)])
