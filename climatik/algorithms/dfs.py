"""dynamic-frequency-scaler: the seed design's algorithm, kept as a simple, predictable alternative.

On each new observation that shows the last change (climatik.algorithms.settle: taken at least `settle-seconds`,
default "2", after it with every GPU at or under its new cap, or `settle-max-seconds`, default "60", after it):

* while the measured power is at or above the threshold, every GPU's clock (the lower of its cap and its
  measured clock; its maximum when neither is known) is multiplied by `scaling-factor` (default "0.8", strictly
  between 0 and 1) and set as its cap, never below `min-frequency` (MHz; default: the hardware minimum).
  Starting from the measured clock means a cap that did not take effect is not cut again and again. The
  monitor's hysteresis flag (status.cappingActionRequired) is not used: it stays up down to the release level,
  and cutting on it would cut a workload that already runs under the threshold;
* while power is under the release level, capped GPUs are raised by `step-up` MHz (default "100", at least one
  supported step), and an entry is removed (the tuner restores the defaults) once its cap reaches the maximum.
  A step up is taken only if power would stay under the release level even if it grew with the cube of the
  clock, or by as much as the boards' clock-dependent power can grow between the two clocks (upper bounds for
  GPU power), so that raising, noise included, does not push the workload straight back over the threshold and
  start a cut-and-raise cycle;
* in between, and with no power or an observation older than `stale-seconds` (default "180"), nothing changes.

A raise of GPUs that ran at their caps shows once a reading reports a clock above the highest one they ran at
before it. The one thing that does not wait for the last change to show is a cut after a raise: a reading over
the threshold then shows clocks no higher than they are now, so cutting on it is safe (after a cut, an early
reading may still carry the power from before it, and cutting again on it would cut twice for one overload).

CPUs are not tuned by this algorithm.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from climatik.algorithms.base import AlgorithmInput, AlgorithmOutput, GpuLimits, ParamReader, Targets, as_float
from climatik.algorithms.framework import clamp_gpu, floor_gpu, step_above
from climatik.algorithms.model import IDLE_SHARE
from climatik.algorithms.settle import hold_reason, settled

NAME = "dynamic-frequency-scaler"
PARAMETERS = ("scaling-factor", "min-frequency", "step-up", "settle-seconds", "stale-seconds", "settle-max-seconds")
_VERSION = 2
#: Power of a GPU grows at most with this power of its clock (dynamic power ~ f * V^2, V rising with f).
_GROWTH_EXPONENT = 3.0


class DynamicFrequencyScaler:
    """Multiplicative decrease while over the threshold, additive increase under the release level; see the module
    docstring."""

    name = NAME

    def __init__(self, *, scaling_factor: float = 0.8, min_frequency: int | None = None, step_up: int = 100,
                 settle_seconds: float = 2.0, stale_seconds: float = 180.0, settle_max_seconds: float = 60.0) -> None:
        self.scaling_factor = scaling_factor
        self.min_frequency = min_frequency
        self.step_up = step_up
        self.settle_seconds = settle_seconds
        self.stale_seconds = stale_seconds
        self.settle_max_seconds = max(settle_max_seconds, settle_seconds)

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str] | None) -> DynamicFrequencyScaler:
        read = ParamReader(NAME, parameters, PARAMETERS)
        settle = read.number("settle-seconds", 2.0, minimum=0.0, maximum=3600.0)
        return cls(
            scaling_factor=read.number("scaling-factor", 0.8, minimum=0.0, maximum=1.0, exclusive=True),
            min_frequency=read.integer("min-frequency", None, minimum=1, maximum=10000),
            step_up=read.integer("step-up", 100, minimum=1, maximum=10000) or 100,
            settle_seconds=settle,
            stale_seconds=read.number("stale-seconds", 180.0, minimum=1.0, maximum=86400.0),
            settle_max_seconds=read.number("settle-max-seconds", max(60.0, settle), minimum=settle,
                                           maximum=86400.0),
        )

    def step(self, inp: AlgorithmInput) -> AlgorithmOutput:
        valid = inp.state.get("v") == _VERSION
        seen, threshold, changed, rise = (as_float(inp.state.get(key)) if valid else None
                                          for key in ("seen", "threshold", "changed", "rise"))
        raised = valid and inp.state.get("raised") is True
        state: dict[str, Any] = {"v": _VERSION, "seen": seen, "threshold": threshold, "changed": changed,
                                 "raised": raised or None, "rise": rise}
        held = hold_reason(inp, seen, self.stale_seconds, last_threshold=threshold)
        obs = inp.observation
        if held is not None or obs.at is None or obs.power is None:
            return AlgorithmOutput(inp.current, _compact(state), held or "holding: no power data")
        state.update(seen=obs.at, threshold=inp.threshold_watts)
        gpus = self._gpus(inp)
        current: dict[str, int | None] = {
            uuid: mhz for uuid, mhz in inp.current.gpu_entries().items() if uuid in gpus}
        wait = not settled(obs, current, changed, floor_s=self.settle_seconds, max_wait_s=self.settle_max_seconds,
                           raised_from=rise)
        # After a raise, a reading over the threshold, however early, shows clocks no higher than they are now:
        # cutting on it is safe. After a cut, an early reading may still show the power from before it.
        targets, reason = self._decide(inp, gpus, current, wait=wait, cut_only=wait and raised)
        if targets is None:
            return AlgorithmOutput(Targets(current), _compact(state), reason)
        result = Targets(targets)
        if result.same_as(Targets(current)):
            if not wait:
                state.update(changed=None, raised=None, rise=None)
        elif _lowered(current, targets, gpus):
            state.update(changed=inp.now, raised=None, rise=None)
        else:
            state.update(changed=inp.now, raised=True, rise=_running_at_caps(inp, gpus, current))
        return AlgorithmOutput(result, _compact(state), reason)

    def _decide(self, inp: AlgorithmInput, gpus: Mapping[str, GpuLimits], current: dict[str, int | None], *,
                wait: bool, cut_only: bool) -> tuple[dict[str, int | None] | None, str]:
        """New targets and why; None while the last change has not shown yet."""
        power = inp.observation.power or 0.0
        over = power >= inp.threshold_watts
        if wait and not (cut_only and over):
            return None, "waiting for the last change to show"
        if over:
            return ({uuid: self._cut(inp, uuid, limits) for uuid, limits in gpus.items()},
                    f"capping: {power:.0f} W is over {inp.threshold_watts:.0f} W; scaling clocks by "
                    f"{self.scaling_factor}")
        if power >= inp.release_watts:
            return current, "holding: power is within the band"
        raised = self._raise(inp, gpus, current)
        if raised is None:
            return current, "holding: no safe step up"
        return raised, f"releasing: raising clocks by {self.step_up} MHz"

    def _gpus(self, inp: AlgorithmInput) -> dict[str, GpuLimits]:
        """The workload's GPUs with known limits (plus, when observations were truncated, those capped now)."""
        uuids = {gpu.uuid for gpu in inp.observation.gpus}
        if inp.observation.truncated:
            uuids |= set(inp.current.gpu_entries())
        return {uuid: inp.inventory.gpus[uuid] for uuid in sorted(uuids) if uuid in inp.inventory.gpus}

    def _cut(self, inp: AlgorithmInput, uuid: str, limits: GpuLimits) -> int:
        cap = inp.current.gpus.get(uuid) or limits.max_frequency
        reading = inp.observation.gpu(uuid)
        base = min(cap, reading.sm_clock) if reading is not None and reading.sm_clock else cap
        return max(clamp_gpu(base * self.scaling_factor, limits), floor_gpu(limits, self.min_frequency))

    def _raise(self, inp: AlgorithmInput, gpus: Mapping[str, GpuLimits],
               caps: Mapping[str, int | None]) -> dict[str, int | None] | None:
        """Every capped GPU one step up, or None when there is none to raise or the step would not be safe."""
        if not caps:
            return None
        raised: dict[str, int | None] = {}
        growth = 1.0
        for uuid, entry in caps.items():
            limits = gpus[uuid]
            cap = entry or limits.max_frequency
            # At least one supported step, so that a step-up smaller than the clock grid still makes progress.
            wanted = max(clamp_gpu(cap + self.step_up, limits), step_above(limits, cap))
            growth = max(growth, wanted / cap)
            raised[uuid] = None if wanted >= limits.max_frequency else wanted
        if _grown(inp, gpus, caps, raised, growth) >= inp.release_watts:
            return None
        return raised


def _grown(inp: AlgorithmInput, gpus: Mapping[str, GpuLimits], caps: Mapping[str, int | None],
           raised: Mapping[str, int | None], growth: float) -> float:
    """An upper bound of the workload's power once `caps` become `raised`. GPU power grows at most with the cube
    of the clock, so it is bounded by the power now times `growth` cubed; and, where the GPUs' board limits are
    known, by the power now plus what the clock-dependent part of each board can add between the two clocks
    (at most its limit above idle times the difference of the cubed clock fractions). The second bound is what
    lets a workload held at its floor (by a cap that could not be met) climb back: at 210 MHz a step of 100 MHz
    multiplies the clock by half and its cube by three, but can add only a few watts."""
    power = inp.observation.power or 0.0
    bound = float(power * growth**_GROWTH_EXPONENT)
    added = 0.0
    for uuid, limits in gpus.items():
        if not limits.power_limit:
            return bound
        top = float(limits.max_frequency)
        before = (caps.get(uuid) or limits.max_frequency) / top
        after = (raised.get(uuid) or limits.max_frequency) / top
        added += (1.0 - IDLE_SHARE) * limits.power_limit * (after**_GROWTH_EXPONENT - before**_GROWTH_EXPONENT)
    return float(min(bound, power + max(added, 0.0)))


def _lowered(before: Mapping[str, int | None], after: Mapping[str, int | None],
             gpus: Mapping[str, GpuLimits]) -> bool:
    """Whether some GPU's cap went down (no entry: its maximum)."""
    return any((after.get(uuid) or limits.max_frequency) < (before.get(uuid) or limits.max_frequency)
               for uuid, limits in gpus.items())


def _running_at_caps(inp: AlgorithmInput, gpus: Mapping[str, GpuLimits], caps: Mapping[str, int | None]) -> int | None:
    """The highest clock of the GPUs that run at their caps (their maximum: no cap); None when none does."""
    clocks = []
    for uuid, limits in gpus.items():
        reading = inp.observation.gpu(uuid)
        cap = caps.get(uuid) or limits.max_frequency
        if reading is not None and reading.sm_clock is not None and reading.sm_clock >= 0.97 * cap:
            clocks.append(reading.sm_clock)
    return max(clocks, default=None)


def _compact(state: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in state.items() if value is not None}
