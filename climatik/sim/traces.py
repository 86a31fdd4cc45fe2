"""Workload traces: what a GPU is asked to do at simulated time t.

Every trace is deterministic: random ones draw from the `random.Random` they are given, in time order, and
cache what they drew, so the answer for a given t does not depend on the order or step of the questions.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from climatik.sim.physics import Load, Phase, PhaseMix


class Trace(Protocol):
    """Answers: at simulated time t (seconds, >= 0), what is this GPU's utilisation and phase mix?"""

    def at(self, t_s: float) -> Load:
        """The load at time `t_s`."""
        ...


class Workload(Protocol):
    """A description of a workload that builds its trace from a random source (unused by fixed workloads)."""

    def build(self, rng: random.Random) -> Trace:
        """A trace of this workload drawing from `rng`."""
        ...


class ConstantTrace:
    """The same load for ever."""

    def __init__(self, load: Load) -> None:
        self._load = load

    def at(self, t_s: float) -> Load:
        return self._load


@dataclass(frozen=True)
class Breakpoint:
    """From `at_s` on (until the next breakpoint), run at `utilisation` with `mix`."""

    at_s: float
    utilisation: float
    mix: PhaseMix


@dataclass(frozen=True)
class ConstantParams:
    """A fixed load, as a workload description."""

    utilisation: float = 0.0
    mix: PhaseMix = field(default_factory=lambda: PhaseMix(idle=1.0))

    def build(self, rng: random.Random) -> Trace:
        """A constant trace; `rng` is unused."""
        return ConstantTrace(Load(self.utilisation, self.mix))


@dataclass(frozen=True)
class ScriptedParams:
    """Scripted breakpoints, as a workload description."""

    breakpoints: tuple[Breakpoint, ...]
    interpolate: bool = False

    def build(self, rng: random.Random) -> Trace:
        """A scripted trace; `rng` is unused."""
        return ScriptedTrace(self.breakpoints, interpolate=self.interpolate)


class ScriptedTrace:
    """A step function through breakpoints, e.g. a load step to 30 % over a power cap at t = 60 s.

    Before the first breakpoint the GPU is idle. With `interpolate`, utilisation ramps linearly between
    breakpoints (the mix still switches at each breakpoint).
    """

    def __init__(self, breakpoints: Sequence[Breakpoint], *, interpolate: bool = False) -> None:
        times = [point.at_s for point in breakpoints]
        if times != sorted(times):
            raise ValueError("breakpoints must be in time order")
        self._points = [(p.at_s, Load(p.utilisation, p.mix)) for p in breakpoints]
        self._times = times
        self._interpolate = interpolate

    def at(self, t_s: float) -> Load:
        position = bisect.bisect_right(self._times, t_s) - 1
        if position < 0:
            return Load.idle()
        start, load = self._points[position]
        if not self._interpolate or position + 1 >= len(self._points):
            return load
        end, following = self._points[position + 1]
        if end <= start:
            return load
        share = (t_s - start) / (end - start)
        utilisation = load.utilisation + share * (following.utilisation - load.utilisation)
        return Load(utilisation, load.mix)


@dataclass(frozen=True)
class TrainingParams:
    """Steady training: high utilisation with small jitter and optional periodic checkpoint pauses."""

    utilisation: float = 0.97
    jitter: float = 0.02
    bucket_s: float = 1.0
    checkpoint_every_s: float | None = None
    checkpoint_s: float = 20.0
    checkpoint_utilisation: float = 0.05

    def build(self, rng: random.Random) -> Trace:
        """A trace of this workload drawing from `rng`."""
        return TrainingTrace(self, rng)


class TrainingTrace:
    """Steady training: the whole time in the training phase, utilisation jittering per bucket."""

    def __init__(self, params: TrainingParams, rng: random.Random) -> None:
        self._params = params
        self._rng = rng
        self._utilisations: list[float] = []

    def at(self, t_s: float) -> Load:
        params = self._params
        every = params.checkpoint_every_s
        if every is not None and every > 0 and t_s >= every and (t_s % every) < params.checkpoint_s:
            return Load(params.checkpoint_utilisation, PhaseMix.only(Phase.TRAINING))
        bucket = max(0, int(t_s // params.bucket_s))
        while len(self._utilisations) <= bucket:
            drawn = self._rng.gauss(params.utilisation, params.jitter)
            self._utilisations.append(min(1.0, max(0.0, drawn)))
        return Load(self._utilisations[bucket], PhaseMix.only(Phase.TRAINING))


@dataclass(frozen=True)
class InferenceParams:
    """LLM serving: Poisson request arrivals whose rate switches between a base and a burst level.

    Each request costs `prefill_s` of busy GPU time (prefill) and then stays in the decode batch for
    `decode_s`; decode utilisation is the batch occupancy relative to `max_batch`.
    """

    base_rps: float = 2.0
    burst_rps: float = 8.0
    mean_burst_gap_s: float = 60.0
    mean_burst_s: float = 15.0
    prefill_s: float = 0.08
    decode_s: float = 6.0
    max_batch: int = 32
    bucket_s: float = 0.5

    def build(self, rng: random.Random) -> Trace:
        """A trace of this workload drawing from `rng`."""
        return InferenceTrace(self, rng)


class InferenceTrace:
    """Prefill/decode mix and utilisation per bucket from simulated request arrivals with bursts."""

    def __init__(self, params: InferenceParams, rng: random.Random) -> None:
        if params.bucket_s <= 0 or params.max_batch <= 0:
            raise ValueError("bucket_s and max_batch must be positive")
        self._params = params
        self._rng = rng
        self._arrivals: list[int] = []
        self._in_burst = False
        self._next_switch_s = rng.expovariate(1.0 / params.mean_burst_gap_s)
        self._decode_buckets = max(1, math.ceil(params.decode_s / params.bucket_s))

    def at(self, t_s: float) -> Load:
        bucket = max(0, int(t_s // self._params.bucket_s))
        while len(self._arrivals) <= bucket:
            self._arrivals.append(self._draw_arrivals(len(self._arrivals) * self._params.bucket_s))
        return self._load(bucket)

    def _load(self, bucket: int) -> Load:
        params = self._params
        prefill = min(1.0, self._arrivals[bucket] * params.prefill_s / params.bucket_s)
        active = sum(self._arrivals[max(0, bucket - self._decode_buckets + 1) : bucket + 1])
        decode = min(1.0, active / params.max_batch)
        utilisation = min(1.0, prefill + (1.0 - prefill) * decode)
        if utilisation == 0.0:
            return Load.idle()
        return Load(utilisation, PhaseMix.inference(prefill / utilisation))

    def _draw_arrivals(self, start_s: float) -> int:
        params = self._params
        while self._next_switch_s <= start_s:
            self._in_burst = not self._in_burst
            mean = params.mean_burst_s if self._in_burst else params.mean_burst_gap_s
            self._next_switch_s += self._rng.expovariate(1.0 / mean)
        rate = params.burst_rps if self._in_burst else params.base_rps
        if rate <= 0.0:
            return 0
        count, elapsed = 0, self._rng.expovariate(rate)
        while elapsed < params.bucket_s:
            count += 1
            elapsed += self._rng.expovariate(rate)
        return count
