"""GPU physics as pure functions: power and throughput from clock, load and phase, and the firmware's clock.

    P(f, u, phase) = P_idle + u * (P_max - P_idle) * (beta + (1 - beta) * (f / f_max) ** alpha)
    T(f, phase)    = T_max / ((1 - gamma) + gamma * f_max / f)

A load mixes phases by time share, so power and throughput of a load are share-weighted sums.
"""

from __future__ import annotations

import math

from climatik.sim.phases import Load, Phase, PhaseMix
from climatik.sim.profiles import GpuProfile


def phase_power_w(profile: GpuProfile, phase: Phase, mhz: float, utilisation: float) -> float:
    """Board power in W while running `phase` at `utilisation` and SM clock `mhz`."""
    curve = profile.curve(phase)
    ratio = mhz / profile.max_sm_mhz
    dynamic = curve.beta + (1.0 - curve.beta) * math.pow(ratio, curve.alpha)
    return profile.idle_w + utilisation * (curve.p_max_w - profile.idle_w) * dynamic


def power_w(profile: GpuProfile, mhz: float, load: Load) -> float:
    """Board power in W for a load at SM clock `mhz`, before any power-limit throttling."""
    if load.utilisation == 0.0:
        return profile.idle_w
    return sum(share * phase_power_w(profile, phase, mhz, load.utilisation) for phase, share in load.mix.fractions())


def phase_throughput(profile: GpuProfile, phase: Phase, mhz: float) -> float:
    """Work per second while busy in `phase` at SM clock `mhz`."""
    curve = profile.curve(phase)
    if curve.t_max == 0.0:
        return 0.0
    return curve.t_max / ((1.0 - curve.gamma) + curve.gamma * profile.max_sm_mhz / mhz)


def throughput(profile: GpuProfile, mhz: float, load: Load) -> float:
    """Work per second for a load at SM clock `mhz`: busy fraction times the mixed rate."""
    return load.utilisation * mix_throughput(profile, mhz, load.mix)


def mix_throughput(profile: GpuProfile, mhz: float, mix: PhaseMix) -> float:
    """Work per second of a busy GPU running `mix` at SM clock `mhz`."""
    return sum(share * phase_throughput(profile, phase, mhz) for phase, share in mix.fractions())


def relative_throughput(profile: GpuProfile, mhz: float, mix: PhaseMix) -> float:
    """Throughput at `mhz` as a fraction of throughput at the max clock (1.0 when the mix does no work)."""
    at_max = mix_throughput(profile, profile.max_sm_mhz, mix)
    if at_max == 0.0:
        return 1.0
    return mix_throughput(profile, mhz, mix) / at_max


def firmware_clock_mhz(profile: GpuProfile, requested_mhz: int, load: Load, power_limit_w: float) -> int:
    """The clock the board really runs: the requested step, lowered until power fits the limit.

    Power grows with the clock, so a binary search over supported steps finds the highest one that fits.
    When not even the minimum clock fits, the board runs at its minimum clock (and over the limit).
    """
    target = profile.snap(requested_mhz)
    if power_w(profile, target, load) <= power_limit_w:
        return target
    clocks = profile.supported_clocks()
    low, high = 0, (target - profile.min_sm_mhz) // profile.step_mhz
    # Invariant: clocks[high] is over the limit; clocks[low] fits unless low == 0 and nothing fits.
    while high - low > 1:
        middle = (low + high) // 2
        if power_w(profile, clocks[middle], load) <= power_limit_w:
            low = middle
        else:
            high = middle
    return clocks[low]
