"""How a workload's power responds to its GPU clock caps: the closed-loop controller's online model.

Each GPU draws `idle + D * ((1 - theta) + theta * x ** exponent)`, where x is its clock as a fraction of its
maximum and `theta` the share of its above-idle power at full clock that follows the clock (about 0.8 for
compute-bound work, 0.5 for memory-bound decoding). The curve is anchored at every new measurement (D is
whatever makes it pass through the measured power at the measured clock), so a change of load moves the anchor
and never the shape; only `theta` is learned, from how far power moved after a change compared with how far
the measured clocks moved, and only when the two fit together (a load that changed meanwhile teaches nothing).
A GPU that runs below its cap (idle, memory-bound, firmware limited) gains nothing from a higher cap, so its
curve is flat above the measured point.
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
