"""What a GPU is doing: the phases of its work, a mix of them, and a load (utilisation plus mix)."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass

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
