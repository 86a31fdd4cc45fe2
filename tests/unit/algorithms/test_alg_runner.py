"""The framework around a step: whatever an algorithm returns, what leaves run_step is safe to apply."""

from __future__ import annotations

from typing import Any

import pytest

from climatik.algorithms import (
    MAX_STATE_CHARS,
    AlgorithmFailedError,
    AlgorithmInput,
    AlgorithmOutput,
    CpuLimits,
    GpuLimits,
    Inventory,
    Observation,
    ObservedGpu,
    Targets,
    decode_state,
    encode_state,
    run_step,
)
from climatik.api import LabelSelector, PolicySpec

LIMITS = tuple(range(210, 1981, 15))


class Returns:
    """An algorithm that returns a fixed output (or raises)."""

    name = "returns"

    def __init__(self, targets: Targets | None = None, state: dict[str, Any] | None = None,
                 error: Exception | None = None) -> None:
        self.targets = targets or Targets()
        self.state = state or {}
        self.error = error

    def step(self, inp: AlgorithmInput) -> AlgorithmOutput:
        if self.error is not None:
            raise self.error
        return AlgorithmOutput(self.targets, self.state, "fixed")


def an_input(*, tune_cpus: bool = False, current: Targets | None = None) -> AlgorithmInput:
    observation = Observation(at=100.0, power=1000.0, gpus=(
        ObservedGpu("GPU-1", "n1", 500.0, 1980), ObservedGpu("GPU-2", "n1", 500.0, 1980),
        ObservedGpu("GPU-new", "n2", 500.0, 1980)))
    inventory = Inventory({uuid: GpuLimits(uuid, 210, 1980, LIMITS) for uuid in ("GPU-1", "GPU-2", "GPU-other")},
                          {("n1", 0): CpuLimits(800, 3000), ("n3", 0): CpuLimits(800, 3000)})
    spec = PolicySpec(power_cap_limit=1000, selector=LabelSelector(), tune_cpus=tune_cpus)
    return AlgorithmInput(spec=spec, observation=observation, inventory=inventory, current=current or Targets(),
                          state={}, now=101.0)


def test_targets_are_clamped_and_snapped_whatever_the_algorithm_asked() -> None:
    result = run_step(Returns(Targets({"GPU-1": 1234.5, "GPU-2": 50})), an_input())  # type: ignore[dict-item]

    assert result.targets.gpus == {"GPU-1": 1230, "GPU-2": 210}
    assert result.changed


def test_gpus_without_inventory_wait_and_gpus_of_others_are_out_of_scope() -> None:
    result = run_step(Returns(Targets({"GPU-new": 1200, "GPU-other": 1200, "GPU-1": 1500})), an_input())

    assert result.targets.gpu_entries() == {"GPU-1": 1500}
    assert result.waiting_for_inventory == ("GPU-new",)
    assert result.out_of_scope == ("GPU-other",)


def test_cpu_targets_apply_only_when_the_policy_tunes_cpus_and_only_on_its_nodes() -> None:
    targets = Targets(cpus={("n1", 0): 1500, ("n3", 0): 1500})

    assert run_step(Returns(targets), an_input()).targets.cpu_entries() == {}
    tuned = run_step(Returns(targets), an_input(tune_cpus=True))
    assert tuned.targets.cpu_entries() == {("n1", 0): 1500}
    assert tuned.out_of_scope == ("n3/cpu0",)


def test_unchanged_bounds_are_not_a_change() -> None:
    current = Targets({"GPU-1": 1500})
    result = run_step(Returns(Targets({"GPU-1": 1500, "GPU-2": None})), an_input(current=current))

    assert not result.changed


@pytest.mark.parametrize("bad", [float("nan"), -5, "1500", True])
def test_nonsense_targets_fail_the_step(bad: Any) -> None:
    with pytest.raises(AlgorithmFailedError, match="not a positive number"):
        run_step(Returns(Targets({"GPU-1": bad})), an_input())


def test_an_exception_inside_the_algorithm_becomes_a_failure_naming_it() -> None:
    with pytest.raises(AlgorithmFailedError, match="algorithm 'returns' failed: KeyError"):
        run_step(Returns(error=KeyError("x")), an_input())


def test_state_must_be_json_and_fit_the_status_field() -> None:
    with pytest.raises(AlgorithmFailedError, match="more than 4096"):
        run_step(Returns(state={"blob": "x" * MAX_STATE_CHARS}), an_input())
    with pytest.raises(AlgorithmFailedError, match="not plain JSON"):
        run_step(Returns(state={"when": object()}), an_input())


def test_state_round_trips_compactly_and_deterministically() -> None:
    text = encode_state({"b": [1, 2.5], "a": None})

    assert text == '{"a":null,"b":[1,2.5]}'
    assert decode_state(text) == {"a": None, "b": [1, 2.5]}
    assert decode_state(None) == decode_state("") == decode_state("{broken") == decode_state("NaN") == {}
