"""GPU physics: what a GPU is doing (phases, a mix of them, a load), the GPU models the simulator knows, and power
and throughput as pure functions of clock, load and phase, with the clock the firmware really runs.

    P(f, u, phase) = P_idle + u * (P_max - P_idle) * (beta + (1 - beta) * (f / f_max) ** alpha)
    T(f, phase)    = T_max / ((1 - gamma) + gamma * f_max / f)

A load mixes phases by time share, so power and throughput of a load are share-weighted sums. Published figures
(limits, clocks, idle and per-phase power) set P_idle and P_max; the curve exponents alpha, beta and gamma are
assumptions calibrated to the reported behaviour (decode barely slows when the SM clock drops, prefill and
training slow almost in proportion).

Decode is calibrated to the published trade-off: lowering an H100's SM clock saves about 40 % of the energy per
generated token for 1-6 % more latency [arXiv 2501.08219]. With beta 0.38 and gamma 0.05 the best clock that costs
at most 6 % latency (900 MHz) saves 40.5 % at +5.9 % (`decode_tradeoff`); the earlier beta 0.5, gamma 0.1 gave
24.5 % at +5.9 % (1245 MHz). Idle, prefill, training and the per-phase powers at full clock are unchanged.

Plants the controllers' model does not match are built from a profile with `with_alpha` (another power
exponent for every phase) and `scaled` (one board drawing more or less than the model's P_max).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

_MIX_TOLERANCE = 1e-6


class Phase(enum.Enum):
    """A kind of GPU work with its own power and clock sensitivity."""

    IDLE = "idle"
    PREFILL = "prefill"
    DECODE = "decode"
    TRAINING = "training"


@dataclass(frozen=True)
class PhaseMix:
    """The fractions of a time step a GPU spends in each phase; they sum to 1.

    Power and throughput of a mix are the fraction-weighted sums over its phases.
    """

    idle: float = 0.0
    prefill: float = 0.0
    decode: float = 0.0
    training: float = 0.0

    def __post_init__(self) -> None:
        values = (self.idle, self.prefill, self.decode, self.training)
        if any(not math.isfinite(v) or v < 0.0 for v in values):
            raise ValueError(f"phase fractions must be finite and >= 0, got {values}")
        if abs(sum(values) - 1.0) > _MIX_TOLERANCE:
            raise ValueError(f"phase fractions must sum to 1, got {sum(values):.6f}")

    @classmethod
    def only(cls, phase: Phase) -> PhaseMix:
        """A mix that is entirely one phase."""
        return cls.from_mapping({phase.value: 1.0})

    @classmethod
    def inference(cls, prefill_fraction: float) -> PhaseMix:
        """An LLM serving mix: `prefill_fraction` in prefill, the rest in decode."""
        fraction = min(1.0, max(0.0, prefill_fraction))
        return cls(prefill=fraction, decode=1.0 - fraction)

    @classmethod
    def from_mapping(cls, fractions: Mapping[str, float]) -> PhaseMix:
        """Build from {"prefill": 0.3, "decode": 0.7}; unknown phase names raise ValueError."""
        known = {phase.value for phase in Phase}
        unknown = set(fractions) - known
        if unknown:
            raise ValueError(f"unknown phases {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{name: float(value) for name, value in fractions.items()})

    def fractions(self) -> tuple[tuple[Phase, float], ...]:
        """The phases with a non-zero share, with their shares."""
        pairs = (
            (Phase.IDLE, self.idle),
            (Phase.PREFILL, self.prefill),
            (Phase.DECODE, self.decode),
            (Phase.TRAINING, self.training),
        )
        return tuple((phase, share) for phase, share in pairs if share > 0.0)

    def to_mapping(self) -> dict[str, float]:
        """The non-zero shares keyed by phase name."""
        return {phase.value: share for phase, share in self.fractions()}


@dataclass(frozen=True)
class Load:
    """What a GPU is asked to do over a time step: busy fraction `utilisation` (0..1) and a phase mix."""

    utilisation: float
    mix: PhaseMix

    def __post_init__(self) -> None:
        if not math.isfinite(self.utilisation) or not 0.0 <= self.utilisation <= 1.0:
            raise ValueError(f"utilisation must be within 0..1, got {self.utilisation}")

    @classmethod
    def idle(cls) -> Load:
        """No work at all."""
        return cls(utilisation=0.0, mix=PhaseMix(idle=1.0))


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
    """One GPU model as NVML and DCGM describe it, plus its simulated curves.

    `power_limit_w` is the default board power limit; `min_power_limit_w`..`max_power_limit_w` is the range
    nvmlDeviceGetPowerManagementLimitConstraints reports, the only limits nvmlDeviceSetPowerManagementLimit
    accepts (a None maximum is the default limit).
    """

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
    min_power_limit_w: float = 100.0
    max_power_limit_w: float | None = None

    def __post_init__(self) -> None:
        if (self.max_sm_mhz - self.min_sm_mhz) % self.step_mhz:
            raise ValueError(f"{self.key}: clock range is not a whole number of {self.step_mhz} MHz steps")
        if not self.min_sm_mhz <= self.default_sm_mhz <= self.max_sm_mhz:
            raise ValueError(f"{self.key}: default clock outside the supported range")
        if not 0.0 < self.min_power_limit_w <= self.power_limit_w <= self.power_limit_range[1]:
            raise ValueError(f"{self.key}: default power limit outside the settable range")

    @property
    def default_power_limit_w(self) -> float:
        """The board power limit after boot or a reset (NVML's default limit)."""
        return self.power_limit_w

    @property
    def power_limit_range(self) -> tuple[float, float]:
        """The lowest and highest board power limit the driver accepts, in W."""
        top = self.power_limit_w if self.max_power_limit_w is None else self.max_power_limit_w
        return self.min_power_limit_w, top

    def with_alpha(self, alpha: float) -> GpuProfile:
        """The same board with another power exponent for every phase (a plant the model does not match)."""
        if not math.isfinite(alpha) or alpha <= 0.0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        return replace(self, prefill=replace(self.prefill, alpha=alpha), decode=replace(self.decode, alpha=alpha),
                       training=replace(self.training, alpha=alpha))

    def scaled(self, factor: float) -> GpuProfile:
        """A board of this model drawing `factor` times the above-idle power of the profile at every phase
        (silicon and cooling vary from board to board); limits, clocks and throughput stay the same."""
        if not math.isfinite(factor) or factor <= 0.0:
            raise ValueError(f"factor must be positive, got {factor}")

        def grown(curve: PhaseCurve) -> PhaseCurve:
            return replace(curve, p_max_w=self.idle_w + (curve.p_max_w - self.idle_w) * factor)

        return replace(self, prefill=grown(self.prefill), decode=grown(self.decode), training=grown(self.training))

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
# Decode: beta 0.38, gamma 0.05 reproduce the published ~40 % energy per token for <= 6 % latency (module docstring).
# Power limits: nvidia-smi -q of an H100 80GB HBM3 (driver 565.57.01) and the DGX H100 BMC's Redfish
# PowerLimitWatts (AllowableMin 200, AllowableMax 700, DefaultSetPoint 700) give 200..700 W, default 700 W.
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
    decode=PhaseCurve(p_max_w=380.0, alpha=2.7, beta=0.38, gamma=0.05),
    training=PhaseCurve(p_max_w=740.0, alpha=2.7, beta=0.2, gamma=0.95),
    min_power_limit_w=200.0,
    max_power_limit_w=700.0,
)

# Power limits: nvidia-smi -q of an NVIDIA H200 (driver 550.90.12): 200..700 W, default 700 W (the SXM board).
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
    decode=PhaseCurve(p_max_w=300.0, alpha=2.7, beta=0.38, gamma=0.04, t_max=1.4),
    training=PhaseCurve(p_max_w=740.0, alpha=2.7, beta=0.2, gamma=0.95),
    min_power_limit_w=200.0,
    max_power_limit_w=700.0,
)

# Power limits: nvidia-smi -q of an A100-SXM4-80GB 400 W board (driver 525.60.13): 100..400 W, default 400 W.
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
    decode=PhaseCurve(p_max_w=250.0, alpha=2.7, beta=0.38, gamma=0.05, t_max=0.6),
    training=PhaseCurve(p_max_w=420.0, alpha=2.7, beta=0.2, gamma=0.95, t_max=0.35),
    min_power_limit_w=100.0,
    max_power_limit_w=400.0,
)

PROFILES: Mapping[str, GpuProfile] = MappingProxyType({profile.key: profile for profile in (H100, H200, A100)})


def profile_by_key(key: str) -> GpuProfile:
    """Look a profile up by its key ("h100", "h200", "a100"), case-insensitively."""
    try:
        return PROFILES[key.lower()]
    except KeyError:
        raise ValueError(f"unknown GPU profile {key!r}; known: {sorted(PROFILES)}") from None


def phase_power_w(profile: GpuProfile, phase: Phase, mhz: float, utilisation: float) -> float:
    """Board power in W while running `phase` at `utilisation` and SM clock `mhz`."""
    curve = profile.curve(phase)
    ratio = mhz / profile.max_sm_mhz
    dynamic = curve.beta + (1.0 - curve.beta) * math.pow(ratio, curve.alpha)
    return profile.idle_w + utilisation * (curve.p_max_w - profile.idle_w) * dynamic


def power_w(profile: GpuProfile, mhz: float, load: Load) -> float:
    """Board power in W for a load at SM clock `mhz`, before any power-limit throttling."""
    utilisation = load.utilisation
    idle = profile.idle_w
    if utilisation == 0.0:
        return idle
    # The share-weighted sum of phase_power_w, written out: this is the simulator's innermost loop.
    mix = load.mix
    ratio = mhz / profile.max_sm_mhz
    total = mix.idle * idle
    for share, curve in ((mix.prefill, profile.prefill), (mix.decode, profile.decode),
                         (mix.training, profile.training)):
        if share > 0.0:
            dynamic = curve.beta + (1.0 - curve.beta) * math.pow(ratio, curve.alpha)
            total += share * (idle + utilisation * (curve.p_max_w - idle) * dynamic)
    return total


def phase_throughput(profile: GpuProfile, phase: Phase, mhz: float) -> float:
    """Work per second while busy in `phase` at SM clock `mhz`."""
    curve = profile.curve(phase)
    if curve.t_max == 0.0:
        return 0.0
    return curve.t_max / ((1.0 - curve.gamma) + curve.gamma * profile.max_sm_mhz / mhz)


def throughput(profile: GpuProfile, mhz: float, load: Load) -> float:
    """Work per second for a load at SM clock `mhz`: busy fraction times the mixed rate."""
    if load.utilisation == 0.0:
        return 0.0
    return load.utilisation * mix_throughput(profile, mhz, load.mix)


def mix_throughput(profile: GpuProfile, mhz: float, mix: PhaseMix) -> float:
    """Work per second of a busy GPU running `mix` at SM clock `mhz`."""
    slowdown = profile.max_sm_mhz / mhz
    total = 0.0
    for share, curve in ((mix.prefill, profile.prefill), (mix.decode, profile.decode),
                         (mix.training, profile.training)):
        if share > 0.0:
            total += share * curve.t_max / ((1.0 - curve.gamma) + curve.gamma * slowdown)
    return total


def relative_throughput(profile: GpuProfile, mhz: float, mix: PhaseMix) -> float:
    """Throughput at `mhz` as a fraction of throughput at the max clock (1.0 when the mix does no work)."""
    at_max = mix_throughput(profile, profile.max_sm_mhz, mix)
    if at_max == 0.0:
        return 1.0
    return mix_throughput(profile, mhz, mix) / at_max


@dataclass(frozen=True)
class Tradeoff:
    """What a lower clock buys a busy phase: energy per unit of work saved and time per unit added (shares)."""

    mhz: int
    energy_saved: float
    latency_added: float


def decode_tradeoff(profile: GpuProfile, *, max_latency_added: float = 0.06) -> Tradeoff:
    """The supported clock with the least energy per decoded token among those that add at most
    `max_latency_added` to the time per token, at full load; how published decode measurements are compared."""
    load = Load(1.0, PhaseMix.only(Phase.DECODE))
    top = profile.max_sm_mhz

    def energy(mhz: int) -> float:
        return power_w(profile, mhz, load) / throughput(profile, mhz, load)

    def latency(mhz: int) -> float:
        return throughput(profile, top, load) / throughput(profile, mhz, load) - 1.0

    allowed = [mhz for mhz in profile.supported_clocks() if latency(mhz) <= max_latency_added + 1e-9]
    best = min(allowed, key=energy)
    return Tradeoff(best, 1.0 - energy(best) / energy(top), latency(best))


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
