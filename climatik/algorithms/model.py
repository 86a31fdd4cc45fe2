"""How a workload's power responds to its GPU clock caps: the closed-loop controller's online model.

Each GPU draws `idle + D * ((1 - theta) + theta * x ** exponent)`, where x is its clock as a fraction of its
maximum and `theta` the share of its above-idle power at full clock that follows the clock (about 0.8 for
compute-bound work, 0.5 for memory-bound decoding). The curve is anchored at every new measurement (D is
whatever makes it pass through the measured power at the measured clock), so a change of load moves the anchor
and never the shape; only `theta` is learned, from how far power actually moved after a change compared with
the prediction. A GPU that runs below its cap (idle, memory-bound, firmware limited) gains nothing from a
higher cap, so its curve is flat above the measured point.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: Prior share of the above-idle power that follows the SM clock (compute-bound work is about 0.8).
PRIOR_THETA = 0.8
THETA_MIN = 0.1
THETA_MAX = 1.0
#: Learn only from changes the model expected to move power by at least this share, so noise cannot dominate.
MIN_EXCITATION = 0.05
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


def observed_theta(theta_used: float, share: float, before: float, predicted: float, after: float) -> float | None:
    """The full-clock theta a change revealed (None: the change was too small to tell from noise).

    The predicted movement is proportional to the local theta at the operating point `share` (x ** exponent
    before the change), so the actual over predicted movement scales it; it is then converted back to full clock.
    """
    expected = predicted - before
    if before <= 0.0 or abs(expected) < MIN_EXCITATION * before:
        return None
    local = min(max(_local(theta_used, share) * (after - before) / expected, 1e-3), 1.0)
    full = local / (local + share * (1.0 - local))
    return min(max(full, THETA_MIN), THETA_MAX)


def learned_theta(history: Sequence[float], prior: float = PRIOR_THETA) -> float:
    """The model's theta: the median of recent observations, or the prior before there are any."""
    recent = [min(max(value, THETA_MIN), THETA_MAX) for value in history[-HISTORY:]]
    return float(statistics.median(recent)) if recent else prior


def _local(theta: float, share: float) -> float:
    """Full-clock theta to the local one at operating point `share`: theta * s / ((1 - theta) + theta * s)."""
    denominator = (1.0 - theta) + theta * share
    return theta * share / denominator if denominator > 0.0 else 1.0
