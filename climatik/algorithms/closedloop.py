"""closed-loop: the default algorithm. Aims the workload's measured power at the policy's threshold in one step.

Each new observation is compared with the threshold itself (the monitor's hysteresis flag is not needed):

* above `threshold * (1 + deadband)`: solve the power model (climatik.algorithms.model) for the highest clocks
  predicted to hold power at `threshold * (1 - margin)`, never below `min-frequency`; once the GPUs are at
  their floor and power is still too high, and the spec tunes CPUs, lower the CPU caps of the workload's nodes
  by `cpu-step-percent` per step, down to `cpu-min-percent` of their maximum;
* below the release level (releaseThreshold, or the threshold minus the release band): give CPU caps back first
  (one step at a time), then raise the GPU caps by the model towards the same goal, by at most
  `max-step-up-percent` of the maximum clock per step, removing them once they reach the maximum;
* otherwise hold.

It acts only on observations newer than the last one it used; with no power, or an observation older than
`stale-seconds`, it holds the current targets exactly. After a change it waits until an observation taken at
least `settle-seconds` later shows the clocks at their new caps (measurement lag), then learns how much power
really moved. Computing every step from the measured operating point, not from an accumulated command, is its
anti-windup: a cap that did not take effect or a clock stuck at its floor never drives the next step further.
GPUs of the workload share one clock fraction unless `uniform` is false, in which case power is water-filled.

Parameters (strings, all optional):

| name                | default        | meaning                                                              |
| ------------------- | -------------- | -------------------------------------------------------------------- |
| margin-percent      | 3 (0..50)      | aim this far under the threshold                                     |
| deadband-percent    | 1 (0..20)      | act downwards only this far over the threshold                       |
| min-frequency       | hardware min   | lowest GPU clock (MHz), snapped up to a supported step               |
| uniform             | true           | one clock fraction for all GPUs of the workload                      |
| settle-seconds      | 40 (0..3600)   | wait after a change; cover scrape interval + averaging + apply delay |
| stale-seconds       | 180            | older observations never drive a change                              |
| max-step-up-percent | 25 (1..100)    | largest raise per step, in percent of the maximum clock              |
| exponent            | 2.7 (1..4)     | how steeply clock-dependent power grows with the clock               |
| cpu-step-percent    | 10 (1..50)     | CPU cap change per step, in percent of the CPU maximum               |
| cpu-min-percent     | 50 (10..100)   | lowest CPU cap, in percent of the CPU maximum                        |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from climatik.algorithms import operating as op
from climatik.algorithms.base import AlgorithmInput, AlgorithmOutput, Targets
from climatik.algorithms.closedloop_memory import Memory
from climatik.algorithms.fresh import hold_reason
from climatik.algorithms.model import PowerModel, learned_theta, observed_theta
from climatik.algorithms.params import ParamReader
from climatik.algorithms.solve import solve_per_gpu, solve_uniform, uniform_xs

NAME = "closed-loop"
PARAMETERS = ("margin-percent", "deadband-percent", "min-frequency", "uniform", "settle-seconds", "stale-seconds",
              "max-step-up-percent", "exponent", "cpu-step-percent", "cpu-min-percent")


@dataclass(frozen=True)
class ClosedLoopConfig:
    """Validated parameters; fractions are 0..1 here, percent in the spec."""

    margin: float = 0.03
    deadband: float = 0.01
    min_frequency: int | None = None
    uniform: bool = True
    settle_seconds: float = 40.0
    stale_seconds: float = 180.0
    max_step_up: float = 0.25
    exponent: float = 2.7
    cpu_step: float = 0.1
    cpu_floor: float = 0.5

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str] | None) -> ClosedLoopConfig:
        read = ParamReader(NAME, parameters, PARAMETERS)
        return cls(
            margin=read.number("margin-percent", 3.0, minimum=0.0, maximum=50.0) / 100.0,
            deadband=read.number("deadband-percent", 1.0, minimum=0.0, maximum=20.0) / 100.0,
            min_frequency=read.integer("min-frequency", None, minimum=1, maximum=10000),
            uniform=read.boolean("uniform", True),
            settle_seconds=read.number("settle-seconds", 40.0, minimum=0.0, maximum=3600.0),
            stale_seconds=read.number("stale-seconds", 180.0, minimum=1.0, maximum=86400.0),
            max_step_up=read.number("max-step-up-percent", 25.0, minimum=1.0, maximum=100.0) / 100.0,
            exponent=read.number("exponent", 2.7, minimum=1.0, maximum=4.0),
            cpu_step=read.number("cpu-step-percent", 10.0, minimum=1.0, maximum=50.0) / 100.0,
            cpu_floor=read.number("cpu-min-percent", 50.0, minimum=10.0, maximum=100.0) / 100.0,
        )


class ClosedLoop:
    """The closed-loop controller; see the module docstring for its behaviour and parameters."""

    name = NAME

    def __init__(self, config: ClosedLoopConfig | None = None) -> None:
        self.config = config or ClosedLoopConfig()

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str] | None) -> ClosedLoop:
        return cls(ClosedLoopConfig.from_parameters(parameters))

    def step(self, inp: AlgorithmInput) -> AlgorithmOutput:
        memory = Memory.load(inp.state)
        obs = inp.observation
        held = hold_reason(inp, memory.seen, self.config.stale_seconds)
        if held is not None or obs.power is None:
            return AlgorithmOutput(inp.current, memory.dump(), held or "holding: no power data")
        memory = replace(memory, seen=obs.at)
        work = op.workload(inp, self.config.min_frequency)
        if not work.points:
            return AlgorithmOutput(self._held(inp, work), memory.dump(), "no GPU with known limits")
        if not self._settled(inp, work, memory):
            return AlgorithmOutput(self._held(inp, work), memory.dump(), "waiting for the last change to take effect")
        memory = self._learn(memory, obs.power)
        return self._decide(inp, work, memory, obs.power)

    def _decide(self, inp: AlgorithmInput, work: op.Workload, memory: Memory, power: float) -> AlgorithmOutput:
        config = self.config
        goal = inp.threshold_watts * (1.0 - config.margin)
        held = self._held(inp, work)
        scope = op.cpu_scope(inp)
        cpu = op.cpu_level(inp, scope)
        if power > inp.threshold_watts * (1.0 + config.deadband):
            at_floor = all(p.x_cap <= p.x_floor + 1e-9 for p in work.points)
            if at_floor and scope and cpu > config.cpu_floor:
                level = max(cpu - config.cpu_step, config.cpu_floor)
                return self._emit(inp, work, memory, replace(held, cpus=op.cpu_targets(inp, scope, level)),
                                  power=power, reason=f"lowering CPUs to {level:.0%}: GPUs are at their floor "
                                                      f"and {power:.0f} W is over {inp.threshold_watts:.0f} W")
            gpus = {**held.gpus, **self._solve(work, memory, goal, raising=False)}
            return self._emit(inp, work, memory, replace(held, gpus=gpus), power=power,
                              reason=f"capping: {power:.0f} W is over {inp.threshold_watts:.0f} W")
        if power < inp.release_watts:
            if cpu < 1.0 and scope:
                level = min(cpu + config.cpu_step, 1.0)
                return self._emit(inp, work, memory, replace(held, cpus=op.cpu_targets(inp, scope, level)),
                                  power=power, reason=f"raising CPUs to {level:.0%}: "
                                                      f"{power:.0f} W is under {inp.release_watts:.0f} W")
            gpus = {**held.gpus, **self._solve(work, memory, goal, raising=True)}
            return self._emit(inp, work, memory, replace(held, gpus=gpus), power=power,
                              reason=f"releasing: {power:.0f} W is under {inp.release_watts:.0f} W")
        return self._emit(inp, work, memory, held, power=power, reason="holding: power is within the band")

    def _solve(self, work: op.Workload, memory: Memory, goal: float, *, raising: bool) -> dict[str, int | None]:
        model = PowerModel(learned_theta(memory.gains), self.config.exponent)
        step_up = self.config.max_step_up
        if self.config.uniform:
            x = solve_uniform(model, work.points, work.other, goal, raising=raising, max_step_up=step_up)
            xs = uniform_xs(work.points, x, raising=raising)
        else:
            xs = solve_per_gpu(model, work.points, work.other, goal, raising=raising, max_step_up=step_up)
        return op.gpu_targets(work, xs)

    def _emit(self, inp: AlgorithmInput, work: op.Workload, memory: Memory, targets: Targets, *, power: float,
              reason: str) -> AlgorithmOutput:
        """The output; a change starts a settling period and, when GPU caps moved, a prediction to learn from."""
        if targets.same_as(inp.current):
            return AlgorithmOutput(targets, memory.dump(), reason)
        anchor = None
        if targets.gpu_entries() != inp.current.gpu_entries():
            model = PowerModel(learned_theta(memory.gains), self.config.exponent)
            predicted = model.total(work.points, op.fractions(work, targets.gpu_entries()), work.other)
            anchor = (power, predicted, model.theta, model.operating_share(work.points))
        return AlgorithmOutput(targets, replace(memory, changed=inp.now, anchor=anchor).dump(), reason)

    def _held(self, inp: AlgorithmInput, work: op.Workload) -> Targets:
        """The current caps carried over to the GPUs the workload uses now (uniform: new GPUs join the level)."""
        obs = inp.observation
        present = {gpu.uuid for gpu in obs.gpus} | (set(inp.current.gpus) if obs.truncated else set())
        gpus: dict[str, int | None] = {
            uuid: mhz for uuid, mhz in inp.current.gpu_entries().items() if uuid in present}
        capped = [(gpus[p.uuid] or p.max_mhz) / p.max_mhz for p in work.points if p.uuid in gpus]
        if self.config.uniform and capped:
            level = op.gpu_targets(work, [max(capped)] * len(work.points))
            gpus.update({uuid: mhz for uuid, mhz in level.items() if uuid not in gpus})
        scope = op.cpu_scope(inp)
        return Targets(gpus, op.cpu_targets(inp, scope, op.cpu_level(inp, scope)))

    def _settled(self, inp: AlgorithmInput, work: op.Workload, memory: Memory) -> bool:
        """Whether the observation reflects the last change: late enough, and clocks at or under their caps."""
        at = inp.observation.at
        if memory.changed is None or at is None:
            return True
        if at < memory.changed + self.config.settle_seconds:
            return False
        # A cap that never takes effect (a failed tuner) must not block the loop forever.
        if at >= memory.changed + 4 * self.config.settle_seconds:
            return True
        return all(p.x_op <= p.x_cap + 0.02 for p in work.points)

    def _learn(self, memory: Memory, power: float) -> Memory:
        if memory.anchor is None:
            return memory
        before, predicted, theta, share = memory.anchor
        gain = observed_theta(theta, share, before, predicted, power)
        gains = memory.gains if gain is None else (*memory.gains, round(gain, 3))[-3:]
        return replace(memory, gains=gains, anchor=None)

