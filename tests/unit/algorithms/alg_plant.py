"""A small GPU plant for algorithm tests: N GPUs whose power follows the clock, with noise and lag.

Each GPU draws `idle + u * (p_max - idle) * (beta + (1 - beta) * (f / f_max) ** 2.7)` at load u. A cap set at
one tick is running by the next; a reading (power and SM clock, taken together as the exporter collects them)
is `power_lag` ticks old when it is observed, as slow exporter collects and scrapes make it, although it carries
the time it is observed at. `run` drives an algorithm through the framework (`run_step`) with a simulated
clock, persisting its state as text between steps as the recommender does.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from climatik.algorithms import (
    Algorithm,
    AlgorithmInput,
    CpuLimits,
    GpuLimits,
    Inventory,
    Observation,
    ObservedGpu,
    Targets,
    decode_state,
    run_step,
)
from climatik.api import LabelSelector, PolicySpec

MAX_MHZ = 1980
MIN_MHZ = 210
STEPS = tuple(range(MIN_MHZ, MAX_MHZ + 1, 15))
IDLE_W = 75.0
P_MAX_W = 700.0
CPU_MAX_MHZ = 3000
CPUS_PER_NODE = 4
T0 = 1_700_000_000.0


def spec_for(threshold_watts: float, **extra: object) -> PolicySpec:
    """A policy whose capping threshold (90% of the limit) is `threshold_watts`."""
    return PolicySpec(power_cap_limit=round(threshold_watts / 0.9), selector=LabelSelector(),
                      **extra)  # type: ignore[arg-type]


@dataclass
class Plant:
    """GPUs spread over nodes; `load(t, i)` is GPU i's utilisation at time t."""

    gpus: int = 8
    per_node: int = 4
    power_lag: int = 1
    noise: float = 0.01
    beta: float = 0.0
    load: Callable[[float, int], float] = lambda t, i: 1.0
    cpu_watts_per_node: float = 0.0
    seed: int = 7
    clocks: list[int] = field(init=False)
    cpu_fraction: dict[str, float] = field(init=False)
    history: list[tuple[list[float], list[int]]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.clocks = [MAX_MHZ] * self.gpus
        self.cpu_fraction = {self.node(i): 1.0 for i in range(self.gpus)}
        self.rng = random.Random(self.seed)

    def uuid(self, i: int) -> str:
        return f"GPU-{i:04d}"

    def node(self, i: int) -> str:
        return f"node-{i // self.per_node}"

    def inventory(self) -> Inventory:
        gpus = {self.uuid(i): GpuLimits(self.uuid(i), MIN_MHZ, MAX_MHZ, STEPS, MAX_MHZ, P_MAX_W)
                for i in range(self.gpus)}
        cpus = {(node, cpu): CpuLimits(800, CPU_MAX_MHZ) for node in self.cpu_fraction
                for cpu in range(CPUS_PER_NODE)}
        return Inventory(gpus, cpus)

    def gpu_power(self, t: float, i: int) -> float:
        x = self.clocks[i] / MAX_MHZ
        return IDLE_W + self.load(t, i) * (P_MAX_W - IDLE_W) * (self.beta + (1 - self.beta) * float(x**2.7))

    def true_power(self, t: float) -> float:
        cpu = sum(self.cpu_watts_per_node * f for f in self.cpu_fraction.values())
        return sum(self.gpu_power(t, i) for i in range(self.gpus)) + cpu

    def tick(self, t: float) -> None:
        """Record the power drawn and the clocks run at time t (what a reading `power_lag` ticks later reports)."""
        self.history.append(([self.gpu_power(t, i) for i in range(self.gpus)], list(self.clocks)))

    def observe(self, t: float) -> Observation:
        powers, clocks = self.history[max(len(self.history) - 1 - self.power_lag, 0)]
        noisy = [p * (1 + self.rng.gauss(0, self.noise)) for p in powers]
        cpu = sum(self.cpu_watts_per_node * f for f in self.cpu_fraction.values())
        readings = tuple(ObservedGpu(self.uuid(i), self.node(i), noisy[i], clocks[i]) for i in range(self.gpus))
        return Observation(at=t, power=sum(noisy) + cpu, gpus=readings)

    def apply(self, targets: Targets) -> None:
        for i in range(self.gpus):
            cap = targets.gpus.get(self.uuid(i))
            self.clocks[i] = MAX_MHZ if cap is None else min(cap, MAX_MHZ)
        for node in self.cpu_fraction:
            caps = [mhz for (n, _), mhz in targets.cpu_entries().items() if n == node]
            self.cpu_fraction[node] = min(caps) / CPU_MAX_MHZ if caps else 1.0


@dataclass
class Trace:
    """What happened in a run: per tick the true power, the targets and whether they changed."""

    times: list[float] = field(default_factory=list)
    power: list[float] = field(default_factory=list)
    targets: list[Targets] = field(default_factory=list)
    changed: list[bool] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def changes(self, start: int = 0) -> int:
        return sum(self.changed[start:])

    @property
    def final(self) -> Targets:
        return self.targets[-1]


def run(algorithm: Algorithm, plant: Plant, spec: PolicySpec, ticks: int, *, period: float = 10.0,
        trace: Trace | None = None, state_text: str = "", start: Targets | None = None,
        capping: Callable[[float, bool], bool] | None = None) -> tuple[Trace, str, Targets]:
    """Drive `algorithm` against `plant` for `ticks` steps of `period` seconds; returns trace, state, targets."""
    trace = trace or Trace()
    current = start or Targets()
    t = T0 + len(trace.times) * period
    required = False
    for _ in range(ticks):
        plant.tick(t)
        obs = plant.observe(t)
        if capping is not None and obs.power is not None:
            required = capping(obs.power, required)
            obs = Observation(obs.at, obs.power, required, obs.gpus)
        inp = AlgorithmInput(spec=spec, observation=obs, inventory=plant.inventory(), current=current,
                             state=decode_state(state_text), now=t + 1.0)
        result = run_step(algorithm, inp)
        state_text = result.state_text
        current = result.targets
        plant.apply(current)
        trace.times.append(t)
        trace.power.append(plant.true_power(t))
        trace.targets.append(current)
        trace.changed.append(result.changed)
        trace.reasons.append(result.reason)
        t += period
    return trace, state_text, current


def hysteresis(spec: PolicySpec) -> Callable[[float, bool], bool]:
    """The monitor's capping decision: on at the threshold, off only under the release level."""
    release = spec.power_cap_limit * spec.release_percent(5) / 100.0

    def decide(power: float, was: bool) -> bool:
        return power >= spec.threshold_watts or (was and power >= release)

    return decide
