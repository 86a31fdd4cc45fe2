"""GPU models the simulator knows: clocks, power limits and per-phase power/throughput curve parameters.

Published figures (limits, clocks, idle and per-phase power) set P_idle and P_max; the curve exponents
alpha, beta and gamma are assumptions calibrated to the reported behaviour (decode barely slows when the SM
clock drops, prefill and training slow almost in proportion).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from climatik.sim.phases import Phase


@dataclass(frozen=True)
class PhaseCurve:
    """Power and throughput shape of one phase.

    p_max_w: board power at full utilisation and max clock (may exceed the limit: firmware then throttles).
    alpha: how steeply the clock-dependent part of power grows with f / f_max.
    beta: the share of dynamic power that does not depend on the clock (memory, I/O).
    gamma: the compute-bound share of the phase's time; 1 scales throughput with the clock, 0 ignores it.
    t_max: throughput at max clock, in work units per second.
    """

    p_max_w: float
    alpha: float
    beta: float
    gamma: float
    t_max: float = 1.0


@dataclass(frozen=True)
class GpuProfile:
    """One GPU model as NVML and DCGM describe it, plus its simulated curves."""

    key: str
    model_name: str
    max_sm_mhz: int
    min_sm_mhz: int
    step_mhz: int
    default_sm_mhz: int
    mem_clock_mhz: int
    power_limit_w: float
    idle_w: float
    prefill: PhaseCurve
    decode: PhaseCurve
    training: PhaseCurve

    def __post_init__(self) -> None:
        if (self.max_sm_mhz - self.min_sm_mhz) % self.step_mhz:
            raise ValueError(f"{self.key}: clock range is not a whole number of {self.step_mhz} MHz steps")
        if not self.min_sm_mhz <= self.default_sm_mhz <= self.max_sm_mhz:
            raise ValueError(f"{self.key}: default clock outside the supported range")

    def curve(self, phase: Phase) -> PhaseCurve:
        """The curve of `phase`; idle draws P_idle whatever the clock and does no work."""
        if phase is Phase.PREFILL:
            return self.prefill
        if phase is Phase.DECODE:
            return self.decode
        if phase is Phase.TRAINING:
            return self.training
        return PhaseCurve(p_max_w=self.idle_w, alpha=1.0, beta=1.0, gamma=0.0, t_max=0.0)

    def supported_clocks(self) -> tuple[int, ...]:
        """Every SM clock the GPU accepts, ascending, in MHz."""
        return tuple(range(self.min_sm_mhz, self.max_sm_mhz + 1, self.step_mhz))

    def snap(self, mhz: float) -> int:
        """The highest supported clock not above `mhz`, clamped into the supported range."""
        if mhz >= self.max_sm_mhz:
            return self.max_sm_mhz
        if mhz <= self.min_sm_mhz:
            return self.min_sm_mhz
        steps = int((mhz - self.min_sm_mhz) // self.step_mhz)
        return self.min_sm_mhz + steps * self.step_mhz


# Training asks for more than the board limit, as it does on real H100/A100 boards, so firmware throttles it.
H100 = GpuProfile(
    key="h100",
    model_name="NVIDIA H100 80GB HBM3",
    max_sm_mhz=1980,
    min_sm_mhz=210,
    step_mhz=15,
    default_sm_mhz=1980,
    mem_clock_mhz=2619,
    power_limit_w=700.0,
    idle_w=75.0,
    prefill=PhaseCurve(p_max_w=700.0, alpha=2.7, beta=0.2, gamma=0.95),
    decode=PhaseCurve(p_max_w=380.0, alpha=2.7, beta=0.5, gamma=0.1),
    training=PhaseCurve(p_max_w=740.0, alpha=2.7, beta=0.2, gamma=0.95),
)

H200 = GpuProfile(
    key="h200",
    model_name="NVIDIA H200",
    max_sm_mhz=1980,
    min_sm_mhz=210,
    step_mhz=15,
    default_sm_mhz=1980,
    mem_clock_mhz=3201,
    power_limit_w=700.0,
    idle_w=75.0,
    prefill=PhaseCurve(p_max_w=700.0, alpha=2.7, beta=0.2, gamma=0.95),
    decode=PhaseCurve(p_max_w=300.0, alpha=2.7, beta=0.5, gamma=0.08, t_max=1.4),
    training=PhaseCurve(p_max_w=740.0, alpha=2.7, beta=0.2, gamma=0.95),
)

A100 = GpuProfile(
    key="a100",
    model_name="NVIDIA A100-SXM4-80GB",
    max_sm_mhz=1410,
    min_sm_mhz=210,
    step_mhz=15,
    default_sm_mhz=1410,
    mem_clock_mhz=1593,
    power_limit_w=400.0,
    idle_w=60.0,
    prefill=PhaseCurve(p_max_w=400.0, alpha=2.7, beta=0.2, gamma=0.95, t_max=0.35),
    decode=PhaseCurve(p_max_w=250.0, alpha=2.7, beta=0.5, gamma=0.1, t_max=0.6),
    training=PhaseCurve(p_max_w=420.0, alpha=2.7, beta=0.2, gamma=0.95, t_max=0.35),
)

PROFILES: Mapping[str, GpuProfile] = MappingProxyType({profile.key: profile for profile in (H100, H200, A100)})


def profile_by_key(key: str) -> GpuProfile:
    """Look a profile up by its key ("h100", "h200", "a100"), case-insensitively."""
    try:
        return PROFILES[key.lower()]
    except KeyError:
        raise ValueError(f"unknown GPU profile {key!r}; known: {sorted(PROFILES)}") from None
