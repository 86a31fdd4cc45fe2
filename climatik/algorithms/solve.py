"""Solving the power model for the clock caps that bring a workload to a goal power, in one step.

Lowering never raises any GPU's cap and raising never lowers one; within that, the solution is the highest
setting predicted to stay at or under the goal. One step moves a clock by at most `max_step_up` of the maximum
clock upwards and `max_step_down` of the clock the GPU runs at downwards, so that a single misleading reading
cannot throw the workload to either end of its range. With uniform clocks every GPU gets the same fraction of its
maximum (never below its floor); per GPU, power is water-filled: the GPUs drawing the most are lowered first,
down to a common per-GPU power level.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from climatik.algorithms.model import GpuPoint, PowerModel

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
