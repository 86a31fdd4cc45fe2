"""How a workload's power responds to its GPU clock caps: the closed-loop controller's online model, the
operating point it is anchored at, and the solver that finds the caps bringing the workload to a goal power.

Each GPU draws `idle + D * ((1 - theta) + theta * x ** exponent)`, where x is its clock as a fraction of its
maximum and `theta` the share of its above-idle power at full clock that follows the clock (about 0.8 for
compute-bound work, 0.5 for memory-bound decoding). The curve is anchored at every new measurement (D is
whatever makes it pass through the measured power at the measured clock), so a change of load moves the anchor
and never the shape; only `theta` is learned, from how far power moved after a change compared with how far
the measured clocks moved, and only when the two fit together (a load that changed meanwhile teaches nothing).
A GPU that runs below its cap (idle, memory-bound, firmware limited) gains nothing from a higher cap, so its
curve is flat above the measured point.

The operating point turns one observation into per-GPU points (clock fractions measured, capped and floor;
power; idle estimate) for the GPUs whose limits are known, and clock fractions back into snapped MHz targets.

Solving: lowering never raises any GPU's cap and raising never lowers one; within that, the solution is the
highest setting predicted to stay at or under the goal. One step moves a clock by at most `max_step_up` of the
maximum clock upwards and `max_step_down` of the clock the GPU runs at downwards, so that a single misleading
reading cannot throw the workload to either end of its range. With uniform clocks every GPU gets the same
fraction of its maximum (never below its floor); per GPU, power is water-filled: the GPUs drawing the most are
lowered first, down to a common per-GPU power level.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from climatik.algorithms.base import AlgorithmInput, CpuKey, GpuLimits
from climatik.algorithms.framework import clamp_cpu, clamp_gpu, floor_gpu

#: Prior share of the above-idle power that follows the SM clock (compute-bound work is about 0.8).
PRIOR_THETA = 0.8
THETA_MIN = 0.1
THETA_MAX = 1.0
#: Cuts assume that between this much and this much of the above-idle power follows the clock, so that a
#: misleading lesson (a load that changed while the clocks did) can neither make the model ask for a cut to the
#: floor nor leave a burst uncapped...
CUT_THETA = (0.5, 0.9)
#: ... and raises at least this much, so that such a lesson cannot make a raise to the maximum look harmless.
RAISE_THETA = (0.5, 1.0)
#: What a clock change alone can do to power; a change outside this range means the load moved meanwhile.
PLAUSIBLE_THETA = (0.2, 1.02)
#: Learn only from clock movements that should move power by at least this share, so noise cannot dominate...
MIN_EXCITATION = 0.05
#: ... and by at least this many times the load's own step-to-step power variation (bursty serving).
NOISE_MARGIN = 3.0
#: Learn only while the clocks move at least this share of the power: the idle estimate dominates the rest.
MIN_DYNAMIC_SHARE = 0.5
#: How many recent gain observations the median is taken over (robust to a single outlier).
HISTORY = 3
#: Idle power as a share of the board power limit when the inventory reports a limit (H100: 75 W of 700 W).
IDLE_SHARE = 0.1


@dataclass(frozen=True)
class GpuPoint:
    """One GPU's operating point: clock fractions (measured, cap, floor), power and estimated idle power."""

    uuid: str
    max_mhz: float
    x_op: float
    x_cap: float
    x_floor: float
    power: float
    idle: float

    @property
    def binding(self) -> bool:
        """Whether the GPU runs at its cap (or at its maximum), so that a higher cap would let it draw more."""
        return self.x_op >= self.x_cap * 0.97


@dataclass(frozen=True)
class PowerModel:
    """The per-GPU power curve with the learned clock sensitivity `theta`."""

    theta: float = PRIOR_THETA
    exponent: float = 2.7

    def local_theta(self, point: GpuPoint) -> float:
        """The share of the GPU's above-idle power that follows the clock at its measured operating point."""
        return _local(self.theta, math.pow(point.x_op, self.exponent))

    def gpu_power(self, point: GpuPoint, x: float) -> float:
        """Predicted power of one GPU when capped at clock fraction `x`."""
        if x >= point.x_op and not point.binding:
            return point.power
        dyn = max(point.power - point.idle, 0.0)
        theta = self.local_theta(point)
        return point.idle + dyn * ((1.0 - theta) + theta * math.pow(x / point.x_op, self.exponent))

    def highest_x(self, point: GpuPoint, watts: float) -> float:
        """The largest clock fraction at which the GPU is predicted to draw at most `watts` (0 or inf at ends)."""
        dyn = max(point.power - point.idle, 0.0)
        theta = self.local_theta(point)
        if watts >= point.power and not point.binding:
            return float("inf")
        if dyn <= 0.0 or theta <= 0.0:
            return float("inf") if watts >= point.power else 0.0
        ratio = (watts - point.idle - dyn * (1.0 - theta)) / (dyn * theta)
        return 0.0 if ratio <= 0.0 else point.x_op * math.pow(ratio, 1.0 / self.exponent)

    def operating_share(self, points: Sequence[GpuPoint]) -> float:
        """The mean of x_op ** exponent over the GPUs, weighted by their above-idle power (for learning)."""
        weights = [max(p.power - p.idle, 1e-6) for p in points]
        shares = [math.pow(p.x_op, self.exponent) for p in points]
        return sum(w * s for w, s in zip(weights, shares, strict=True)) / sum(weights)

    def total(self, points: Sequence[GpuPoint], xs: Sequence[float], other: float) -> float:
        """Predicted workload power with GPU i capped at xs[i]; `other` is power no GPU clock moves (CPUs)."""
        return other + sum(self.gpu_power(point, x) for point, x in zip(points, xs, strict=True))


def observed_theta(share_before: float, share_after: float, dyn_before: float, before: float, after: float, *,
                   noise: float = 0.0) -> float | None:
    """The full-clock theta a change revealed, from how far the measured clocks and the power moved.

    `share_*` are the GPUs' operating shares (x ** exponent, weighted by above-idle power) measured before and after
    the change, `dyn_before` their above-idle power before it, `before`/`after` the workload's power, `noise` how
    much the load's power varies from one reading to the next by itself (a share). Measured clocks, not the caps
    that were set, so that a cap that did not bite or a reading that predates the change teaches nothing. None
    when the clocks hardly moved compared with the noise, when the GPUs were near idle, or when power did not
    move in a way the clock change can explain: the load changed meanwhile (a burst), and learning from it would
    teach the model that the clock does not matter (or matters more than it can).
    """
    if before <= 0.0 or dyn_before < MIN_DYNAMIC_SHARE * before or share_before <= 0.0:
        return None
    clock_term = dyn_before * (share_after / share_before - 1.0)
    if abs(clock_term) < max(MIN_EXCITATION, NOISE_MARGIN * noise) * before:
        return None
    local = (after - before) / clock_term
    if local <= 0.0:
        return None
    full = local / (local + share_before * (1.0 - local))
    if not PLAUSIBLE_THETA[0] <= full <= PLAUSIBLE_THETA[1]:
        return None
    return min(max(full, THETA_MIN), THETA_MAX)


def learned_theta(history: Sequence[float], prior: float = PRIOR_THETA) -> float:
    """The model's theta: the median of recent observations, or the prior before there are any."""
    recent = [min(max(value, THETA_MIN), THETA_MAX) for value in history[-HISTORY:]]
    return float(statistics.median(recent)) if recent else prior


def _local(theta: float, share: float) -> float:
    """Full-clock theta to the local one at operating point `share`: theta * s / ((1 - theta) + theta * s)."""
    denominator = (1.0 - theta) + theta * share
    return theta * share / denominator if denominator > 0.0 else 1.0


#: Lowest measured clock fraction the model anchors at (an idle GPU may report a very low SM clock).
_MIN_X_OP = 0.05


@dataclass(frozen=True)
class Workload:
    """The modelled GPUs (with known limits) and the power no GPU clock explains (`other`)."""

    points: tuple[GpuPoint, ...]
    limits: dict[str, GpuLimits]
    other: float


def workload(inp: AlgorithmInput, min_frequency: int | None) -> Workload:
    """The operating point of every observed GPU with known limits; needs `inp.observation.power`."""
    obs = inp.observation
    total = obs.power or 0.0
    known = [gpu.power for gpu in obs.gpus if gpu.power is not None]
    fallback = (sum(known) / len(known)) if known else total / max(len(obs.gpus), 1)
    points: list[GpuPoint] = []
    limits: dict[str, GpuLimits] = {}
    for gpu in sorted(obs.gpus, key=lambda g: g.uuid):
        gpu_limits = inp.inventory.gpus.get(gpu.uuid)
        if gpu_limits is None:
            continue
        top = float(gpu_limits.max_frequency)
        cap = inp.current.gpus.get(gpu.uuid)
        cap_mhz = min(float(cap), top) if cap is not None else top
        measured = float(gpu.sm_clock) if gpu.sm_clock is not None else cap_mhz
        power = gpu.power if gpu.power is not None else fallback
        idle = IDLE_SHARE * gpu_limits.power_limit if gpu_limits.power_limit else 0.0
        points.append(GpuPoint(
            uuid=gpu.uuid, max_mhz=top, x_op=max(min(measured, top) / top, _MIN_X_OP), x_cap=cap_mhz / top,
            x_floor=floor_gpu(gpu_limits, min_frequency) / top, power=power, idle=min(idle, power),
        ))
        limits[gpu.uuid] = gpu_limits
    other = total - sum(point.power for point in points)
    return Workload(tuple(points), limits, other)


def anchored_at(work: Workload, x: float) -> Workload:
    """The workload as if every GPU ran at least at clock fraction `x`: how a reading that may predate the last
    change (or average across it) is read, so that it asks for no more than the load itself added."""
    bound = min(max(x, 0.0), 1.0)
    return Workload(tuple(replace(p, x_op=max(p.x_op, bound)) for p in work.points), work.limits, work.other)


def above_idle(work: Workload) -> float:
    """The GPUs' power above their idle estimate: what their clocks can move."""
    return sum(max(p.power - p.idle, 0.0) for p in work.points)


def raised(work: Workload, before: Mapping[str, int | None], after: Mapping[str, int | None]) -> bool:
    """Whether going from caps `before` to `after` raised some GPU's cap and lowered none."""
    old, new = fractions(work, before), fractions(work, after)
    return old != new and all(b >= a - 1e-9 for a, b in zip(old, new, strict=True))


def raised_from(work: Workload, before: Mapping[str, int | None], after: Mapping[str, int | None]) -> float | None:
    """For a change that only raised caps: the highest clock (MHz) measured on a GPU that ran at its cap before
    it (a reading shows the raise once some clock is above it). None for other changes, or when no GPU ran at its
    cap (the raise then has no visible signature)."""
    if not raised(work, before, after):
        return None
    binding = [p.x_op * p.max_mhz for p in work.points if p.binding]
    return max(binding) if binding else None


def gpu_targets(work: Workload, xs: list[float]) -> dict[str, int | None]:
    """Snapped MHz per GPU for clock fractions `xs`; a GPU at its maximum gets no bound (None)."""
    out: dict[str, int | None] = {}
    for point, x in zip(work.points, xs, strict=True):
        limits = work.limits[point.uuid]
        mhz = clamp_gpu(x * point.max_mhz, limits)
        out[point.uuid] = None if mhz >= limits.max_frequency else mhz
    return out


def fractions(work: Workload, targets: Mapping[str, int | None]) -> list[float]:
    """Clock fractions of `targets` (no bound: 1.0), in the order of `work.points`."""
    return [min((targets.get(p.uuid) or p.max_mhz) / p.max_mhz, 1.0) for p in work.points]


def cpu_scope(inp: AlgorithmInput) -> list[CpuKey]:
    """The CPUs of the nodes the workload's GPUs are on, when the spec tunes CPUs."""
    if not inp.spec.tune_cpus:
        return []
    nodes = {gpu.node for gpu in inp.observation.gpus}
    return sorted(key for key in inp.inventory.cpus if key[0] in nodes)


def cpu_level(inp: AlgorithmInput, scope: list[CpuKey]) -> float:
    """The workload's current CPU cap as a fraction of each CPU's maximum (1.0: none)."""
    levels = [mhz / inp.inventory.cpus[key].max_frequency
              for key, mhz in inp.current.cpu_entries().items() if key in scope]
    return min(min(levels, default=1.0), 1.0)


def cpu_targets(inp: AlgorithmInput, scope: list[CpuKey], level: float) -> dict[CpuKey, int | None]:
    """Every CPU in scope capped at `level` of its maximum; none when the level is (about) the maximum."""
    if level >= 0.999:
        return {}
    return {key: clamp_cpu(level * inp.inventory.cpus[key].max_frequency, inp.inventory.cpus[key])
            for key in scope}


_ITERATIONS = 48


def uniform_xs(points: Sequence[GpuPoint], x: float, *, raising: bool) -> list[float]:
    """Each GPU's clock fraction when the workload's common fraction is `x`."""
    if raising:
        return [max(point.x_cap, min(x, 1.0)) for point in points]
    return [max(point.x_floor, min(x, point.x_cap)) for point in points]


def solve_uniform(model: PowerModel, points: Sequence[GpuPoint], other: float, goal: float, *,
                  raising: bool, max_step_up: float, max_step_down: float = 1.0) -> float:
    """The common clock fraction predicted to hold the workload at or under `goal`."""
    if raising:
        lo = max(point.x_cap for point in points)
        hi = min(1.0, lo + max_step_up)
    else:
        hi = max(point.x_cap for point in points)
        lowest = max(_running(point) for point in points) * (1.0 - max_step_down)
        lo = min(max(min(point.x_floor for point in points), lowest), hi)

    def predicted(x: float) -> float:
        return model.total(points, uniform_xs(points, x, raising=raising), other)

    return _largest(predicted, lo, hi, goal)


def solve_per_gpu(model: PowerModel, points: Sequence[GpuPoint], other: float, goal: float, *,
                  raising: bool, max_step_up: float, max_step_down: float = 1.0) -> list[float]:
    """Each GPU's clock fraction, water-filling power down to (or up to) a common per-GPU level."""
    bounds = [(p.x_cap, min(1.0, p.x_cap + max_step_up)) if raising else
              (min(max(p.x_floor, _running(p) * (1.0 - max_step_down)), p.x_cap), p.x_cap) for p in points]

    def xs_at(level: float) -> list[float]:
        return [min(max(model.highest_x(point, level), lo), hi) for point, (lo, hi) in zip(points, bounds,
                                                                                                strict=True)]

    def predicted(level: float) -> float:
        return model.total(points, xs_at(level), other)

    top = max(model.gpu_power(point, hi) for point, (_, hi) in zip(points, bounds, strict=True)) + 1.0
    return xs_at(_largest(predicted, 0.0, top, goal))


def _running(point: GpuPoint) -> float:
    """The clock fraction a GPU runs at: its measured clock, or its cap when it reads above it."""
    return min(point.x_op, point.x_cap)


def _largest(predicted: Callable[[float], float], lo: float, hi: float, goal: float) -> float:
    """The largest knob in [lo, hi] with predicted(knob) <= goal, for a non-decreasing `predicted` (lo if none)."""
    if predicted(hi) <= goal:
        return hi
    if predicted(lo) > goal:
        return lo
    for _ in range(_ITERATIONS):
        mid = (lo + hi) / 2.0
        if predicted(mid) <= goal:
            lo = mid
        else:
            hi = mid
    return lo
