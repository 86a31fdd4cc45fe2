"""Which controllers the control benchmark runs on each scenario, and running them.

Baselines (no capping, a static per-GPU power limit, the best static clock in hindsight) and the oracle are
run once per scenario; every registered built-in algorithm runs through the production loop once per control
period, with its default parameters and the policy's default spec, as a user would deploy it. Diagnostic
variants change one thing each, to show what limits the default configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from climatik.algorithms import AlgorithmRegistry
from climatik.api import AlgorithmRef
from climatik.sim.loop import (
    Controller,
    DataPath,
    NoCapping,
    Oracle,
    PolicyMetrics,
    ProductionLoop,
    Recording,
    Scenario,
    StaticClock,
    StaticPowerLimit,
    policy_metrics,
    run,
)


@dataclass(frozen=True)
class Variant:
    """A diagnostic configuration: algorithm parameters and a capping threshold other than the defaults."""

    label: str
    algorithm: str
    parameters: dict[str, str] = field(default_factory=dict)
    capping_threshold: int | None = None


@dataclass
class Case:
    """One controller's run on one scenario, with the control period it ran at (None: not a loop)."""

    label: str
    kind: str
    period_s: float | None
    recording: Recording
    metrics: dict[str, PolicyMetrics]
    applies: int = 0


@dataclass
class ScenarioResult:
    """Every case of one scenario; `static_clocks` is the hindsight-best clock per policy."""

    scenario: Scenario
    cases: list[Case]
    static_clocks: dict[str, int]

    def case(self, label: str, period_s: float | None = None) -> Case:
        return next(c for c in self.cases if c.label == label and c.period_s == period_s)


def run_scenario(scenario: Scenario, registry: AlgorithmRegistry, *, algorithms: list[str], periods: list[float],
                 variants: list[Variant], datapath: DataPath, dt_s: float) -> ScenarioResult:
    """Baselines, the oracle, each algorithm at each period, and each variant at the shortest period."""
    oracle = Oracle()
    cases = [_case(scenario, oracle, "oracle", None, datapath=datapath, dt_s=dt_s)]
    baselines: list[Controller] = [NoCapping(), StaticPowerLimit(), StaticClock(oracle.lowest)]
    cases += [_case(scenario, controller, "baseline", None, datapath=datapath, dt_s=dt_s) for controller in baselines]
    for name in algorithms:
        for period in periods:
            ref = AlgorithmRef(name)
            loop = ProductionLoop(registry.create(ref), ref=ref, label=name)
            cases.append(_case(scenario, loop, "algorithm", period, datapath=datapath.with_period(period),
                                   dt_s=dt_s))
    for variant in variants:
        ref = AlgorithmRef(variant.algorithm, dict(variant.parameters) or None)
        loop = ProductionLoop(registry.create(ref), ref=ref, label=variant.label)
        varied = scenario
        if variant.capping_threshold is not None:
            varied = replace(scenario, policies=tuple(replace(p, capping_threshold=variant.capping_threshold)
                                                      for p in scenario.policies))
        cases.append(_case(varied, loop, "variant", periods[0],
                           datapath=datapath.with_period(periods[0]), dt_s=dt_s))
    return ScenarioResult(scenario, cases, dict(oracle.lowest))


def _case(scenario: Scenario, controller: Controller, kind: str, period_s: float | None, *, datapath: DataPath,
          dt_s: float) -> Case:
    recording = run(scenario, controller, datapath=datapath, dt_s=dt_s)
    metrics = {name: policy_metrics(series) for name, series in recording.policies.items()}
    applies = controller.applies if isinstance(controller, ProductionLoop) else 0
    return Case(controller.label, kind, period_s, recording, metrics, applies)
