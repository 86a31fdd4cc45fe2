"""closed-loop: the default algorithm. Aims the workload's measured power at the policy's threshold in one step.

Each new observation is compared with the threshold itself (the monitor's hysteresis flag is not needed):

* above `threshold * (1 + deadband)`: solve the power model (climatik.algorithms.model) for the highest clocks
  predicted to hold power at `threshold * (1 - margin)`, never below `min-frequency` and never more than
  `max-step-down-percent` under the clock the GPUs run at; once the GPUs are at their floor and power is still
  too high, and the spec tunes CPUs, lower the CPU caps of the workload's nodes by `cpu-step-percent` per step,
  down to `cpu-min-percent` of their maximum;
* below the release level (releaseThreshold, or the threshold minus the release band): give CPU caps back first
  (one step at a time), then raise the GPU caps by the model towards the same goal, by at most
  `max-step-up-percent` of the maximum clock per step (up to twice that when power is far under the release
  level), removing them once they reach the maximum;
* otherwise hold.

It acts only on observations newer than the last one it used (or on the same one when the threshold changed);
with no power, or an observation older than `stale-seconds`, it holds the current targets exactly.

After a change it raises, holds and learns only on an observation that shows the change
(climatik.algorithms.settle: taken at least `settle-seconds` after it with every GPU at or under its cap and,
after a raise, some GPU above its old clock; or `settle-max-seconds` after it). Cutting further never waits
while power is over the threshold: a cut is safe. Such a reading may still carry power from before the last
cuts, so it is read at the highest clocks it may reflect (those before the first pending change, or the caps of
the latest one that has had time to show): a reading from before a cut then asks for no second cut, and only a
load that grew meanwhile is cut further.

Only the model's clock sensitivity is learned, by comparing how far power moved with how far the measured clocks
moved between the reading a change was decided on and the first reading that shows it; changes the clocks
cannot explain (the load moved meanwhile), clock movements small against the load's own noise (the median
step-to-step change of recent readings) and near-idle GPUs teach nothing. Whatever was learned, cuts assume
that 50 to 90 % of the above-idle power follows the clock and raises at least 50 %. Computing every step from
the measured operating point, not from an accumulated command, is its anti-windup: a cap that did not take
effect or a clock stuck at its floor never drives the next step further. GPUs of the workload share one clock
fraction unless `uniform` is false, in which case power is water-filled.

Parameters (strings, all optional):

| name                  | default        | meaning                                                            |
| --------------------- | -------------- | ------------------------------------------------------------------ |
| margin-percent        | 1 (0..50)      | aim this far under the threshold                                   |
| deadband-percent      | 1 (0..20)      | act downwards only this far over the threshold                     |
| min-frequency         | hardware min   | lowest GPU clock (MHz), snapped up to a supported step             |
| uniform               | true           | one clock fraction for all GPUs of the workload                    |
| settle-seconds        | 2 (0..3600)    | least time from a change to a reading that may show it (averaging  |
|                       |                | window plus actuation delay)                                       |
| settle-max-seconds    | 60             | after this long a change counts as shown whatever the clocks read  |
| stale-seconds         | 180            | older observations never drive a change                            |
| max-step-up-percent   | 25 (1..100)    | largest raise per step, in percent of the maximum clock            |
| max-step-down-percent | 40 (5..90)     | largest cut per step, in percent of the clock the GPUs run at      |
| exponent              | 2.7 (1..4)     | how steeply clock-dependent power grows with the clock             |
| cpu-step-percent      | 10 (1..50)     | CPU cap change per step, in percent of the CPU maximum             |
| cpu-min-percent       | 50 (10..100)   | lowest CPU cap, in percent of the CPU maximum                      |
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from climatik.algorithms.base import AlgorithmInput, AlgorithmOutput, ParamReader, Targets, as_float
from climatik.algorithms.model import (
    CUT_THETA,
    RAISE_THETA,
    THETA_MAX,
    THETA_MIN,
    PowerModel,
    Workload,
    above_idle,
    anchored_at,
    cpu_level,
    cpu_scope,
    cpu_targets,
    gpu_targets,
    learned_theta,
    observed_theta,
    raised_from,
    solve_per_gpu,
    solve_uniform,
    uniform_xs,
    workload,
)
from climatik.algorithms.settle import hold_reason, settled

NAME = "closed-loop"
PARAMETERS = ("margin-percent", "deadband-percent", "min-frequency", "uniform", "settle-seconds", "stale-seconds",
              "max-step-up-percent", "exponent", "cpu-step-percent", "cpu-min-percent", "max-step-down-percent",
              "settle-max-seconds")


@dataclass(frozen=True)
class ClosedLoopConfig:
    """Validated parameters; fractions are 0..1 here, percent in the spec."""

    margin: float = 0.01
    deadband: float = 0.01
    min_frequency: int | None = None
    uniform: bool = True
    settle_seconds: float = 2.0
    stale_seconds: float = 180.0
    max_step_up: float = 0.25
    exponent: float = 2.7
    cpu_step: float = 0.1
    cpu_floor: float = 0.5
    max_step_down: float = 0.4
    settle_max_seconds: float = 60.0

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str] | None) -> ClosedLoopConfig:
        read = ParamReader(NAME, parameters, PARAMETERS)
        settle = read.number("settle-seconds", 2.0, minimum=0.0, maximum=3600.0)
        return cls(
            margin=read.number("margin-percent", 1.0, minimum=0.0, maximum=50.0) / 100.0,
            deadband=read.number("deadband-percent", 1.0, minimum=0.0, maximum=20.0) / 100.0,
            min_frequency=read.integer("min-frequency", None, minimum=1, maximum=10000),
            uniform=read.boolean("uniform", True),
            settle_seconds=settle,
            stale_seconds=read.number("stale-seconds", 180.0, minimum=1.0, maximum=86400.0),
            max_step_up=read.number("max-step-up-percent", 25.0, minimum=1.0, maximum=100.0) / 100.0,
            exponent=read.number("exponent", 2.7, minimum=1.0, maximum=4.0),
            cpu_step=read.number("cpu-step-percent", 10.0, minimum=1.0, maximum=50.0) / 100.0,
            cpu_floor=read.number("cpu-min-percent", 50.0, minimum=10.0, maximum=100.0) / 100.0,
            max_step_down=read.number("max-step-down-percent", 40.0, minimum=5.0, maximum=90.0) / 100.0,
            settle_max_seconds=read.number("settle-max-seconds", max(60.0, settle), minimum=settle,
                                           maximum=86400.0),
        )


_VERSION = 3
#: How many recent step-to-step power changes the load's noise is the median of (robust to a load step).
MAX_JUMPS = 5
#: How many earlier changes of a chain not shown yet are remembered (a chain is a few cuts into a rising load).
MAX_STEPS = 4
#: Keys holding a time or a power, kept exactly; the others are fractions, rounded to keep the state short.
_EXACT = ("seen", "threshold", "changed", "rise", "last")
_ROUNDED = ("before",)


@dataclass(frozen=True)
class LoopState:
    """What one step leaves to the next.

    `seen`: time of the last observation used, and `threshold` the threshold (W) it was judged against.
    While changes have not shown in an observation yet (a chain of further cuts may follow the first):
    `changed`, the time of the last; `rise`, when it raised GPUs that ran at their caps, the highest clock
    (MHz) they ran at before it (a reading shows the raise once a clock exceeds it); `before`, the highest clock
    fraction measured before the first (what a reading taken before it may show); `steps`, for each earlier
    change of the chain, its time and the highest cap fraction it set (what a reading taken after it but before
    the next may show). `gains`: recent learned clock sensitivities. `anchor`: (power, above-idle GPU power,
    operating share) measured before the last GPU change made on a settled observation, to learn from once it
    has taken effect. `last`: the power of the last settled observation when targets were held on it; `jumps`:
    the relative changes of power between recent such observations, whose median is the load's noise.
    """

    seen: float | None = None
    threshold: float | None = None
    changed: float | None = None
    rise: float | None = None
    before: float | None = None
    steps: tuple[tuple[float, float], ...] = ()
    gains: tuple[float, ...] = ()
    anchor: tuple[float, float, float] | None = None
    last: float | None = None
    jumps: tuple[float, ...] = ()

    @property
    def noise(self) -> float | None:
        """How much the load's power typically changes from one reading to the next (a share; None: unknown)."""
        return float(statistics.median(self.jumps)) if self.jumps else None

    @classmethod
    def load(cls, state: Mapping[str, Any]) -> LoopState:
        """Read back persisted state; anything malformed is forgotten rather than trusted."""
        if state.get("v") != _VERSION:
            return cls()
        gains = [g for g in _floats(state.get("gains")) if g is not None and THETA_MIN <= g <= THETA_MAX]
        anchor_values = _floats(state.get("anchor"))
        anchor = None
        if len(anchor_values) == 3 and all(a is not None and a >= 0.0 for a in anchor_values):
            power, dyn, share = (float(a or 0.0) for a in anchor_values)
            anchor = (power, dyn, share)
        raw_steps = state.get("steps")
        steps = [_floats(step) for step in raw_steps] if isinstance(raw_steps, list) else []
        before = as_float(state.get("before"))
        jumps = [j for j in _floats(state.get("jumps")) if j is not None and 0.0 <= j <= 1.0]
        return cls(
            seen=as_float(state.get("seen")),
            threshold=as_float(state.get("threshold")),
            changed=as_float(state.get("changed")),
            rise=as_float(state.get("rise")),
            before=before if before is not None and 0.0 < before <= 1.0 else None,
            steps=tuple((float(at or 0.0), float(x or 0.0)) for step in steps if len(step) == 2
                        for at, x in [step] if at is not None and x is not None and 0.0 < x <= 1.0)[-MAX_STEPS:],
            gains=tuple(gains)[-3:],
            anchor=anchor,
            last=as_float(state.get("last")),
            jumps=tuple(jumps)[-MAX_JUMPS:],
        )

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": _VERSION}
        for key in _EXACT + _ROUNDED:
            value = getattr(self, key)
            if value is not None:
                out[key] = round(value, 4) if key in _ROUNDED else value
        if self.steps:
            out["steps"] = [[at, round(x, 4)] for at, x in self.steps]
        if self.gains:
            out["gains"] = list(self.gains)
        if self.jumps:
            out["jumps"] = [round(j, 3) for j in self.jumps]
        if self.anchor is not None:
            out["anchor"] = [round(value, 4) for value in self.anchor]
        return out


def _floats(value: Any) -> list[float | None]:
    return [as_float(item) for item in value] if isinstance(value, list) else []


__all__ = ["NAME", "PARAMETERS", "ClosedLoop", "ClosedLoopConfig"]

#: A relative change of the operating share under this is no clock movement (readings round to a clock step).
_UNMOVED = 0.01
#: The load's noise assumed before two settled readings in a row have measured it.
_NOISE_PRIOR = 0.05
#: How much faster than `max-step-up-percent` clocks may be given back when power is far under the release level.
_FAST_RAISE = 2.0


class ClosedLoop:
    """The closed-loop controller; see the module docstring for its behaviour and parameters."""

    name = NAME

    def __init__(self, config: ClosedLoopConfig | None = None) -> None:
        self.config = config or ClosedLoopConfig()

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str] | None) -> ClosedLoop:
        return cls(ClosedLoopConfig.from_parameters(parameters))

    def step(self, inp: AlgorithmInput) -> AlgorithmOutput:
        config = self.config
        memory = LoopState.load(inp.state)
        obs = inp.observation
        held = hold_reason(inp, memory.seen, config.stale_seconds, last_threshold=memory.threshold)
        if held is not None or obs.power is None:
            return AlgorithmOutput(inp.current, memory.dump(), held or "holding: no power data")
        memory = replace(memory, seen=obs.at, threshold=inp.threshold_watts)
        work = workload(inp, config.min_frequency)
        if not work.points:
            return AlgorithmOutput(self._held(inp, work), memory.dump(), "no GPU with known limits")
        if config.uniform:
            # A GPU that joins a uniform workload (its tuner reported late, a pod moved) joins its level before
            # anything is solved: cuts never raise a GPU, so a cut from its maximum would split the workload.
            joined = {**self._held(inp, work).gpus, **inp.current.gpus}
            if joined != dict(inp.current.gpus):
                work = workload(replace(inp, current=Targets(joined, inp.current.cpus)), config.min_frequency)
        if settled(obs, inp.current.gpus, memory.changed, floor_s=config.settle_seconds,
                   max_wait_s=config.settle_max_seconds, raised_from=memory.rise):
            memory = replace(memory, changed=None, rise=None, before=None, steps=())
            return self._decide(inp, work, self._learn(memory, work, obs.power), obs.power)
        memory = replace(memory, last=None)
        if obs.power > inp.threshold_watts * (1.0 + config.deadband):
            # Cutting further is safe; the reading may predate the last changes, so it is read as taken at the
            # clocks it may reflect.
            return self._cut(inp, self._read_as(work, memory, obs.at), memory, obs.power, settled=False)
        return AlgorithmOutput(self._held(inp, work), memory.dump(), "waiting for the last change to take effect")

    def _read_as(self, work: Workload, memory: LoopState, at: float | None) -> Workload:
        """A reading taken before the pending changes showed, read at the highest clocks it may reflect: the caps
        set by the latest change that has had time to show, or else the clocks before the first change, or the
        measured ones when higher. A reading from before a cut thus asks for no second cut."""
        for changed, level in reversed(memory.steps):
            if at is not None and at >= changed + self.config.settle_seconds:
                return anchored_at(work, level)
        return anchored_at(work, memory.before or 0.0)

    def _decide(self, inp: AlgorithmInput, work: Workload, memory: LoopState, power: float) -> AlgorithmOutput:
        if power > inp.threshold_watts * (1.0 + self.config.deadband):
            return self._cut(inp, work, memory, power, settled=True)
        if power < inp.release_watts:
            return self._release(inp, work, memory, power)
        return self._emit(inp, work, memory, self._held(inp, work), power=power, settled=True,
                          reason="holding: power is within the band")

    def _cut(self, inp: AlgorithmInput, work: Workload, memory: LoopState, power: float, *,
             settled: bool) -> AlgorithmOutput:
        config = self.config
        held = self._held(inp, work)
        scope = cpu_scope(inp)
        cpu = cpu_level(inp, scope)
        over = f"{power:.0f} W is over {inp.threshold_watts:.0f} W"
        if all(p.x_cap <= p.x_floor + 1e-9 for p in work.points):
            if settled and scope and cpu > config.cpu_floor:
                level = max(cpu - config.cpu_step, config.cpu_floor)
                return self._emit(inp, work, memory, replace(held, cpus=cpu_targets(inp, scope, level)),
                                  power=power, settled=True,
                                  reason=f"lowering CPUs to {level:.0%}: GPUs are at their floor and {over}")
            targets, reason = held, f"capping: GPUs are at their floor and {over}"
        else:
            gpus = {**held.gpus, **self._solve(work, memory, self._goal(inp), raising=False, step=0.0)}
            targets, reason = replace(held, gpus=gpus), f"capping: {over}"
        if not settled and targets.same_as(inp.current):
            reason = f"waiting for the last change to take effect; {over}"
        return self._emit(inp, work, memory, targets, power=power, settled=settled, reason=reason)

    def _release(self, inp: AlgorithmInput, work: Workload, memory: LoopState, power: float) -> AlgorithmOutput:
        config = self.config
        held = self._held(inp, work)
        scope = cpu_scope(inp)
        cpu = cpu_level(inp, scope)
        under = f"{power:.0f} W is under {inp.release_watts:.0f} W"
        if cpu < 1.0 and scope:
            level = min(cpu + config.cpu_step, 1.0)
            return self._emit(inp, work, memory, replace(held, cpus=cpu_targets(inp, scope, level)),
                              power=power, settled=True, reason=f"raising CPUs to {level:.0%}: {under}")
        # Far under the release level the clocks are far lower than the load needs (a cut that went deep, a load
        # that eased off): give them back in fewer steps.
        step = config.max_step_up * min(_FAST_RAISE, max(1.0, inp.release_watts / max(power, 1.0)))
        gpus = {**held.gpus, **self._solve(work, memory, self._goal(inp), raising=True, step=step)}
        return self._emit(inp, work, memory, replace(held, gpus=gpus), power=power, settled=True,
                          reason=f"releasing: {under}")

    def _goal(self, inp: AlgorithmInput) -> float:
        return inp.threshold_watts * (1.0 - self.config.margin)

    def _solve(self, work: Workload, memory: LoopState, goal: float, *, raising: bool,
               step: float) -> dict[str, int | None]:
        theta = learned_theta(memory.gains)
        low, high = RAISE_THETA if raising else CUT_THETA
        model = PowerModel(min(max(theta, low), high), self.config.exponent)
        down = self.config.max_step_down
        if self.config.uniform:
            x = solve_uniform(model, work.points, work.other, goal, raising=raising, max_step_up=step,
                              max_step_down=down)
            xs = uniform_xs(work.points, x, raising=raising)
        else:
            xs = solve_per_gpu(model, work.points, work.other, goal, raising=raising, max_step_up=step,
                               max_step_down=down)
        return gpu_targets(work, xs)

    def _emit(self, inp: AlgorithmInput, work: Workload, memory: LoopState, targets: Targets, *, power: float,
              settled: bool, reason: str) -> AlgorithmOutput:
        """The output. A change starts (or, made before the last one showed, extends) a wait for it to show; a GPU
        change made on a settled observation also records the operating point to learn from once it has taken
        effect."""
        if targets.same_as(inp.current):
            return AlgorithmOutput(targets, memory.dump(), reason)
        if settled:
            anchor = None
            if targets.gpu_entries() != inp.current.gpu_entries():
                share = PowerModel(exponent=self.config.exponent).operating_share(work.points)
                anchor = (power, above_idle(work), share)
            memory = replace(memory, before=max(p.x_op for p in work.points), steps=(), anchor=anchor,
                             rise=raised_from(work, inp.current.gpus, targets.gpus))
        elif memory.changed is not None:
            # The caps held now are what the previous change of the chain set. The operating point before the
            # chain stays the one to learn from: the reading that shows the last cut shows the whole chain.
            step = (memory.changed, max(p.x_cap for p in work.points))
            memory = replace(memory, steps=(*memory.steps, step)[-MAX_STEPS:], rise=None)
        return AlgorithmOutput(targets, replace(memory, changed=inp.now, last=None).dump(), reason)

    def _held(self, inp: AlgorithmInput, work: Workload) -> Targets:
        """The current caps carried over to the GPUs the workload uses now (uniform: new GPUs join the level)."""
        obs = inp.observation
        present = {gpu.uuid for gpu in obs.gpus} | (set(inp.current.gpus) if obs.truncated else set())
        gpus: dict[str, int | None] = {
            uuid: mhz for uuid, mhz in inp.current.gpu_entries().items() if uuid in present}
        capped = [(gpus[p.uuid] or p.max_mhz) / p.max_mhz for p in work.points if p.uuid in gpus]
        if self.config.uniform and capped:
            level = gpu_targets(work, [max(capped)] * len(work.points))
            gpus.update({uuid: mhz for uuid, mhz in level.items() if uuid not in gpus})
        scope = cpu_scope(inp)
        return Targets(gpus, cpu_targets(inp, scope, cpu_level(inp, scope)))

    def _learn(self, memory: LoopState, work: Workload, power: float) -> LoopState:
        """Update the noise estimate from the last settled reading and learn from the last change, if any."""
        jumps = memory.jumps
        if memory.last is not None and memory.last > 0.0:
            jumps = (*jumps, min(abs(power - memory.last) / memory.last, 1.0))[-MAX_JUMPS:]
        memory = replace(memory, jumps=jumps, last=power)
        noise = memory.noise
        if memory.anchor is None:
            return memory
        before, dyn, share = memory.anchor
        after_share = PowerModel(exponent=self.config.exponent).operating_share(work.points)
        if abs(after_share - share) < _UNMOVED * share:
            # The clocks have not moved yet (a reading collected before the change, or caps that did not bite):
            # keep waiting for a reading that shows the change.
            return memory
        gain = observed_theta(share, after_share, dyn, before, power, noise=_NOISE_PRIOR if noise is None else noise)
        gains = memory.gains if gain is None else (*memory.gains, round(gain, 3))[-3:]
        return replace(memory, gains=gains, anchor=None)
