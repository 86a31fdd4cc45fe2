"""Solving the power model for the clock caps that bring a workload to a goal power, in one step.

Lowering never raises any GPU's cap and raising never lowers one; within that, the solution is the highest
setting predicted to stay at or under the goal. With uniform clocks every GPU gets the same fraction of its
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
                  raising: bool, max_step_up: float) -> float:
    """The common clock fraction predicted to hold the workload at or under `goal`."""
    if raising:
        lo = max(point.x_cap for point in points)
        hi = min(1.0, lo + max_step_up)
    else:
        lo = min(point.x_floor for point in points)
        hi = max(point.x_cap for point in points)

    def predicted(x: float) -> float:
        return model.total(points, uniform_xs(points, x, raising=raising), other)

    return _largest(predicted, lo, hi, goal)


def solve_per_gpu(model: PowerModel, points: Sequence[GpuPoint], other: float, goal: float, *,
                  raising: bool, max_step_up: float) -> list[float]:
    """Each GPU's clock fraction, water-filling power down to (or up to) a common per-GPU level."""
    bounds = [(p.x_cap, min(1.0, p.x_cap + max_step_up)) if raising else (p.x_floor, p.x_cap) for p in points]

    def xs_at(level: float) -> list[float]:
        return [min(max(model.highest_x(point, level), lo), hi) for point, (lo, hi) in zip(points, bounds,
                                                                                                strict=True)]

    def predicted(level: float) -> float:
        return model.total(points, xs_at(level), other)

    top = max(model.gpu_power(point, hi) for point, (_, hi) in zip(points, bounds, strict=True)) + 1.0
    return xs_at(_largest(predicted, 0.0, top, goal))


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
