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
        # One Load per bucket, built once: the simulator asks every step.
        self._loads: list[Load] = []
        self._mix = PhaseMix.only(Phase.TRAINING)
        self._checkpoint = Load(params.checkpoint_utilisation, self._mix)

    def at(self, t_s: float) -> Load:
        params = self._params
        every = params.checkpoint_every_s
        if every is not None and every > 0 and t_s >= every and (t_s % every) < params.checkpoint_s:
            return self._checkpoint
        bucket = max(0, int(t_s // params.bucket_s))
        while len(self._loads) <= bucket:
            drawn = self._rng.gauss(params.utilisation, params.jitter)
            self._loads.append(Load(min(1.0, max(0.0, drawn)), self._mix))
        return self._loads[bucket]


@dataclass(frozen=True)
class InferenceParams:
    """LLM serving: Poisson request arrivals whose rate switches between a base and a burst level.

    Each request's prefill keeps the GPU busy for one contiguous stretch, first come first served: from
    `prefill_s` (the shortest prompt) up to `prefill_max_s` (the longest), with Pareto-distributed prompt lengths
    of tail exponent `prompt_tail`, so most prompts are short and a few take over a second. Llama2-70B on two
    H100s prefills 512 tokens in 84 ms and 8192 in 1340 ms [splitwise-sim perf_model.csv]; prefill time is about
    proportional to the prompt in that range. The request then stays in the decode batch for `decode_s`; decode
    utilisation is the batch occupancy relative to `max_batch`. Loads are resolved per `bucket_s` (50 ms, the
    resolution of the instantaneous power reading), so a prefill burst shows in a 50 ms reading and averages
    away in the 1 s one.
    """

    base_rps: float = 1.0
    burst_rps: float = 4.0
    mean_burst_gap_s: float = 60.0
    mean_burst_s: float = 15.0
    prefill_s: float = 0.084
    prefill_max_s: float = 1.34
    prompt_tail: float = 2.2
    decode_s: float = 12.0
    max_batch: int = 32
    bucket_s: float = 0.05

    def build(self, rng: random.Random) -> Trace:
        """A trace of this workload drawing from `rng`."""
        return InferenceTrace(self, rng)


class InferenceTrace:
    """Prefill stretches and decode batch occupancy from simulated request arrivals with bursts.

    Arrivals are drawn in time order; a query only extends the drawn stretch, so the answer for a time does not
    depend on which times were asked before.
    """

    def __init__(self, params: InferenceParams, rng: random.Random) -> None:
        if params.bucket_s <= 0 or params.max_batch <= 0:
            raise ValueError("bucket_s and max_batch must be positive")
        if not 0.0 < params.prefill_s <= params.prefill_max_s or params.prompt_tail <= 0.0:
            raise ValueError("need 0 < prefill_s <= prefill_max_s and a positive prompt_tail")
        if params.mean_burst_s <= 0.0 or params.mean_burst_gap_s <= 0.0:
            raise ValueError("burst lengths and gaps must be positive")
        self._params = params
        self._rng = rng
        self._in_burst = False
        self._next_switch_s = rng.expovariate(1.0 / params.mean_burst_gap_s)
        # Time up to which arrivals have been drawn; the arrival process is memoryless, so drawing on from here
        # is exact.
        self._cursor_s = 0.0
        # Prefill stretches, first come first served: starts and ends both ascending.
        self._starts: list[float] = []
        self._ends: list[float] = []
        # Every GPU of a replica asks about the same bucket once per step.
        self._last: tuple[int, Load] | None = None

    def at(self, t_s: float) -> Load:
        bucket = max(0, int(t_s // self._params.bucket_s))
        if self._last is None or self._last[0] != bucket:
            self._last = (bucket, self._load(bucket))
        return self._last[1]

    def _load(self, bucket: int) -> Load:
        params = self._params
        begin = bucket * params.bucket_s
        end = begin + params.bucket_s
        self._draw_until(end)
        prefill = self._prefill_seconds(begin, end) / params.bucket_s
        done = bisect.bisect_right(self._ends, begin)
        active = done - bisect.bisect_right(self._ends, begin - params.decode_s)
        decode = min(1.0, active / params.max_batch)
        utilisation = min(1.0, prefill + (1.0 - prefill) * decode)
        if utilisation <= 0.0:
            return Load.idle()
        return Load(utilisation, PhaseMix.inference(prefill / utilisation))

    def _prefill_seconds(self, begin: float, end: float) -> float:
        """How much of [begin, end) the GPU spends prefilling."""
        busy = 0.0
        position = bisect.bisect_right(self._ends, begin)
        while position < len(self._starts) and self._starts[position] < end:
            busy += min(end, self._ends[position]) - max(begin, self._starts[position])
            position += 1
        return min(busy, end - begin)

    def _draw_until(self, until_s: float) -> None:
        """Draw arrivals until one lands after `until_s`: every prefill that starts before it is then known."""
        params = self._params
        while self._cursor_s <= until_s:
            rate = params.burst_rps if self._in_burst else params.base_rps
            gap = self._rng.expovariate(rate) if rate > 0.0 else math.inf
            if self._cursor_s + gap < self._next_switch_s:
                self._cursor_s += gap
                self._admit(self._cursor_s)
                continue
            self._cursor_s = self._next_switch_s
            self._in_burst = not self._in_burst
            mean = params.mean_burst_s if self._in_burst else params.mean_burst_gap_s
            self._next_switch_s += self._rng.expovariate(1.0 / mean)

    def _admit(self, arrival_s: float) -> None:
        params = self._params
        # Prompt lengths are Pareto-distributed from the shortest prompt up; prefill time follows the length.
        length = (1.0 - self._rng.random()) ** (-1.0 / params.prompt_tail)
        duration = min(params.prefill_s * length, params.prefill_max_s)
        start = max(arrival_s, self._ends[-1] if self._ends else 0.0)
        self._starts.append(start)
        self._ends.append(start + duration)
