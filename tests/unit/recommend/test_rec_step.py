"""One policy's step as the framework runs it: the fail-safe holds for every algorithm, plug-ins included."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest

from climatik.algorithms import (
    AlgorithmInput,
    AlgorithmOutput,
    AlgorithmRegistry,
    Targets,
    builtin_factories,
)
from climatik.api import NodeFrequencies, PowerCappingPolicy, format_precise_time
from climatik.recommend.step import HOLD, LOWER, RAISE, RELEASE, StepSettings, classify, decide, spec_problems

NOW = 1_750_000_000.0
GPU_A, GPU_B = "GPU-a", "GPU-b"


class Scripted:
    """A plug-in that returns the targets it was given, and counts its steps."""

    name = "scripted"
    steps = 0
    targets = Targets()

    @classmethod
    def create(cls, parameters: Mapping[str, str]) -> Scripted:
        return cls()

    def step(self, inp: AlgorithmInput) -> AlgorithmOutput:
        Scripted.steps += 1
        return AlgorithmOutput(Scripted.targets, {"n": Scripted.steps}, "scripted")


@pytest.fixture
def registry() -> AlgorithmRegistry:
    Scripted.steps, Scripted.targets = 0, Targets()
    return AlgorithmRegistry({**builtin_factories(), "scripted": Scripted.create})


def a_policy(*, age: float = 5.0, metrics: tuple[str, str] = ("True", "MetricsFresh"),
             algorithm: str = "scripted", parameters: dict[str, str] | None = None) -> PowerCappingPolicy:
    status: dict[str, Any] = {
        "lastUpdated": _rfc3339(NOW - age), "currentPower": 950.0, "cappingActionRequired": True,
        "nodes": [{"name": "n1", "gpus": [{"uuid": GPU_A, "power": 500.0}, {"uuid": GPU_B, "power": 450.0}]}],
        "conditions": [{"type": "MetricsAvailable", "status": metrics[0], "reason": metrics[1], "message": "",
                        "lastTransitionTime": "2025-01-01T00:00:00Z"}],
    }
    spec = {"powerCapLimit": 1000, "selector": {},
            "customAlgorithms": [{"name": algorithm, "parameters": parameters or {}}]}
    return PowerCappingPolicy.from_api({"metadata": {"name": "llm", "namespace": "ml"}, "spec": spec,
                                        "status": status})


def node_with_caps(**caps: int) -> NodeFrequencies:
    inventory = [{"uuid": uuid, "minFrequency": 210, "maxFrequency": 1980} for uuid in (GPU_A, GPU_B)]
    entries = [{"gpuId": uuid, "targetFrequency": mhz, "policy": "ml/llm"} for uuid, mhz in caps.items()]
    return NodeFrequencies.from_api({"metadata": {"name": "n1"}, "spec": {"nodeName": "n1", "gpuFrequencies": entries},
                                     "status": {"inventory": {"gpus": inventory}}})


def _rfc3339(seconds: float) -> str:
    return format_precise_time(dt.datetime.fromtimestamp(seconds, dt.UTC))


def step(policy: PowerCappingPolicy, registry: AlgorithmRegistry, **caps: int) -> Any:
    return decide(policy, [node_with_caps(**caps)], registry=registry, previous=None, now=NOW,
                  settings=StepSettings(max_observation_age=60.0))


@pytest.mark.parametrize("reason", ["PrometheusError", "SampleStale", "NoSampleYet"])
def test_without_metrics_no_algorithm_runs_and_the_caps_are_held(registry: AlgorithmRegistry, reason: str) -> None:
    Scripted.targets = Targets()  # would release every cap
    decision = step(a_policy(metrics=("False", reason)), registry, **{GPU_A: 900})

    assert Scripted.steps == 0
    assert decision.output.targets.gpu_entries() == {GPU_A: 900}
    assert decision.action == HOLD and reason in (decision.held or "")


def test_a_stale_observation_runs_no_algorithm(registry: AlgorithmRegistry) -> None:
    decision = step(a_policy(age=61.0), registry, **{GPU_A: 900})

    assert Scripted.steps == 0
    assert decision.output.targets.gpu_entries() == {GPU_A: 900}
    assert "older than 60 s" in (decision.held or "")


def test_incomplete_metrics_may_lower_caps(registry: AlgorithmRegistry) -> None:
    Scripted.targets = Targets({GPU_A: 600, GPU_B: 600})
    decision = step(a_policy(metrics=("False", "IncompleteData")), registry, **{GPU_A: 900})

    assert decision.output.targets.gpu_entries() == {GPU_A: 600, GPU_B: 600}
    assert decision.action == LOWER and decision.held is None


def test_incomplete_metrics_never_raise_a_cap(registry: AlgorithmRegistry) -> None:
    Scripted.targets = Targets({GPU_A: 1200, GPU_B: 600})
    decision = step(a_policy(metrics=("False", "IncompleteData")), registry, **{GPU_A: 900})

    assert decision.output.targets.gpu_entries() == {GPU_A: 900}
    assert decision.action == HOLD and "only lowering" in (decision.held or "")


def test_an_invalid_spec_gives_the_shared_problems_and_no_output(registry: AlgorithmRegistry) -> None:
    policy = a_policy(algorithm="closed-loop", parameters={"margin-percent": "lots"})
    decision = step(policy, registry)

    assert decision.output is None
    assert list(decision.problems) == spec_problems(policy.spec, registry) != []


def test_a_failing_algorithm_is_reported_and_produces_nothing(registry: AlgorithmRegistry) -> None:
    Scripted.targets = Targets({GPU_A: -5})
    decision = step(a_policy(), registry, **{GPU_A: 900})

    assert decision.output is None
    assert "not a positive number" in (decision.failure or "")


def test_the_step_resumes_from_the_state_persisted_in_status(registry: AlgorithmRegistry) -> None:
    policy = a_policy(algorithm="dynamic-frequency-scaler")
    first = decide(policy, [node_with_caps()], registry=registry, previous=None, now=NOW, settings=StepSettings())
    assert first.action == LOWER and first.output is not None
    persisted = PowerCappingPolicy.from_api({**policy.to_api(), "status": {
        **policy.to_api()["status"], "recommendation": {"state": first.output.state_text}}})

    again = decide(persisted, [node_with_caps(**first.output.targets.gpu_entries())], registry=registry,
                   previous=None, now=NOW + 1, settings=StepSettings())

    assert again.action == HOLD, "one observation drives one step, across a restart too"


@pytest.mark.parametrize(("before", "after", "action"), [
    ({}, {GPU_A: 900}, LOWER),
    ({GPU_A: 900}, {GPU_A: 600}, LOWER),
    ({GPU_A: 900}, {GPU_A: 1200}, RAISE),
    ({GPU_A: 900, GPU_B: 900}, {GPU_A: 900}, RAISE),
    ({GPU_A: 900}, {}, RELEASE),
    ({GPU_A: 900}, {GPU_A: 900}, HOLD),
    ({GPU_A: 900}, {GPU_A: 1200, GPU_B: 600}, LOWER),
])
def test_actions_are_named_by_the_most_cautious_move(before: dict[str, int], after: dict[str, int],
                                                      action: str) -> None:
    assert classify(Targets(before), Targets(after)) == action
