"""dynamic-frequency-scaler: the seed design's algorithm, kept as a simple, predictable alternative.

On each new observation, once the last change has had `settle-seconds` (default "40") to show in the readings:

* while the monitor says capping is required (status.cappingActionRequired), every GPU's clock (the lower of
  its cap and its measured clock; its maximum when neither is known) is multiplied by `scaling-factor` (default
  "0.8", strictly between 0 and 1) and set as its cap, never below `min-frequency` (MHz; default: the hardware
  minimum). Starting from the measured clock means a cap that did not take effect is not cut again and again;
* when capping is not required, capped GPUs are raised by `step-up` MHz (default "100", at least one supported
  step), and an entry is removed (the tuner restores the defaults) once its cap reaches the maximum. A step up
  is taken only if power would stay under the release level even if it grew with the cube of the clock (an
  upper bound for GPU power), so that raising, noise included, does not push the workload straight back over
  the threshold and start a cut-and-raise cycle;
* with no power, or an observation older than `stale-seconds` (default "180"), nothing changes.

CPUs are not tuned by this algorithm.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from climatik.algorithms.base import AlgorithmInput, AlgorithmOutput, GpuLimits, Targets
from climatik.algorithms.clamp import clamp_gpu, floor_gpu, step_above
from climatik.algorithms.fresh import hold_reason
from climatik.algorithms.params import ParamReader
from climatik.algorithms.state import as_float

NAME = "dynamic-frequency-scaler"
PARAMETERS = ("scaling-factor", "min-frequency", "step-up", "settle-seconds", "stale-seconds")
#: Power of a GPU grows at most with this power of its clock (dynamic power ~ f * V^2, V rising with f).
_GROWTH_EXPONENT = 3.0


class DynamicFrequencyScaler:
    """Multiplicative decrease while capping is required, additive increase after; see the module docstring."""

    name = NAME

    def __init__(self, *, scaling_factor: float = 0.8, min_frequency: int | None = None, step_up: int = 100,
                 settle_seconds: float = 40.0, stale_seconds: float = 180.0) -> None:
        self.scaling_factor = scaling_factor
        self.min_frequency = min_frequency
        self.step_up = step_up
        self.settle_seconds = settle_seconds
        self.stale_seconds = stale_seconds

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str] | None) -> DynamicFrequencyScaler:
        read = ParamReader(NAME, parameters, PARAMETERS)
        return cls(
            scaling_factor=read.number("scaling-factor", 0.8, minimum=0.0, maximum=1.0, exclusive=True),
            min_frequency=read.integer("min-frequency", None, minimum=1, maximum=10000),
            step_up=read.integer("step-up", 100, minimum=1, maximum=10000) or 100,
            settle_seconds=read.number("settle-seconds", 40.0, minimum=0.0, maximum=3600.0),
            stale_seconds=read.number("stale-seconds", 180.0, minimum=1.0, maximum=86400.0),
        )

    def step(self, inp: AlgorithmInput) -> AlgorithmOutput:
        valid = inp.state.get("v") == 1
        seen = as_float(inp.state.get("seen")) if valid else None
        changed = as_float(inp.state.get("changed")) if valid else None
        state: dict[str, Any] = {"v": 1, "seen": seen, "changed": changed}
        held = hold_reason(inp, seen, self.stale_seconds)
        obs = inp.observation
        if held is not None or obs.at is None:
            return AlgorithmOutput(inp.current, _compact(state), held or "holding: no power data")
        state["seen"] = obs.at
        gpus = self._gpus(inp)
        current: dict[str, int | None] = {
            uuid: mhz for uuid, mhz in inp.current.gpu_entries().items() if uuid in gpus}
        targets: dict[str, int | None]
        if changed is not None and obs.at < changed + self.settle_seconds:
            targets, reason = current, "waiting for the last change to show"
        elif obs.capping_required:
            targets = {uuid: self._cut(inp, uuid, limits) for uuid, limits in gpus.items()}
            reason = f"capping: scaling clocks by {self.scaling_factor}"
        else:
            raised = self._raise(inp, gpus, current)
            targets, reason = (current, "holding: no safe step up") if raised is None else (
                raised, f"releasing: raising clocks by {self.step_up} MHz")
        result = Targets(targets)
        if not result.same_as(Targets(current)):
            state["changed"] = inp.now
        return AlgorithmOutput(result, _compact(state), reason)

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
        if (inp.observation.power or 0.0) * growth**_GROWTH_EXPONENT >= inp.release_watts:
            return None
        return raised


def _compact(state: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in state.items() if value is not None}
