"""What the closed-loop controller remembers between steps, as the small JSON object persisted in status."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from climatik.algorithms.model import THETA_MAX, THETA_MIN
from climatik.algorithms.state import as_float

_VERSION = 3
#: How many recent step-to-step power changes the load's noise is the median of (robust to a load step).
MAX_JUMPS = 5
#: How many earlier changes of a chain not shown yet are remembered (a chain is a few cuts into a rising load).
MAX_STEPS = 4
#: Keys holding a time or a power, kept exactly; the others are fractions, rounded to keep the state short.
_EXACT = ("seen", "threshold", "changed", "rise", "last")
_ROUNDED = ("before",)


@dataclass(frozen=True)
class Memory:
    """What one step leaves to the next.

    `seen`: time of the last observation used, and `threshold` the threshold (W) it was judged against.
    While changes have not shown in an observation yet (a chain of further cuts may follow the first):
    `changed`, the time of the last; `rise`, when it raised GPUs that ran at their caps, the highest clock
    (MHz) they ran at before it (a reading shows the raise once a clock exceeds it); `before`, the highest clock
    fraction measured before the first (what a reading taken before it may show); `steps`, for each earlier
    change of the chain, its time and the highest cap fraction it set (what a reading taken after it but before
    the next may show). `gains`: recent learned clock sensitivities. `anchor`: (power, above-idle GPU power,
    operating share) measured before the last GPU change made on a settled observation, to learn from once it
    has taken effect. `last`: the power of the last settled observation when targets were held on it; `jumps`:
    the relative changes of power between recent such observations, whose median is the load's noise.
    """

    seen: float | None = None
    threshold: float | None = None
    changed: float | None = None
    rise: float | None = None
    before: float | None = None
    steps: tuple[tuple[float, float], ...] = ()
    gains: tuple[float, ...] = ()
    anchor: tuple[float, float, float] | None = None
    last: float | None = None
    jumps: tuple[float, ...] = ()

    @property
    def noise(self) -> float | None:
        """How much the load's power typically changes from one reading to the next (a share; None: unknown)."""
        return float(statistics.median(self.jumps)) if self.jumps else None

    @classmethod
    def load(cls, state: Mapping[str, Any]) -> Memory:
        """Read back persisted state; anything malformed is forgotten rather than trusted."""
        if state.get("v") != _VERSION:
            return cls()
        gains = [g for g in _floats(state.get("gains")) if g is not None and THETA_MIN <= g <= THETA_MAX]
        anchor_values = _floats(state.get("anchor"))
        anchor = None
        if len(anchor_values) == 3 and all(a is not None and a >= 0.0 for a in anchor_values):
            power, dyn, share = (float(a or 0.0) for a in anchor_values)
            anchor = (power, dyn, share)
        raw_steps = state.get("steps")
        steps = [_floats(step) for step in raw_steps] if isinstance(raw_steps, list) else []
        before = as_float(state.get("before"))
        jumps = [j for j in _floats(state.get("jumps")) if j is not None and 0.0 <= j <= 1.0]
        return cls(
            seen=as_float(state.get("seen")),
            threshold=as_float(state.get("threshold")),
            changed=as_float(state.get("changed")),
            rise=as_float(state.get("rise")),
            before=before if before is not None and 0.0 < before <= 1.0 else None,
            steps=tuple((float(at or 0.0), float(x or 0.0)) for step in steps if len(step) == 2
                        for at, x in [step] if at is not None and x is not None and 0.0 < x <= 1.0)[-MAX_STEPS:],
            gains=tuple(gains)[-3:],
            anchor=anchor,
            last=as_float(state.get("last")),
            jumps=tuple(jumps)[-MAX_JUMPS:],
        )

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": _VERSION}
        for key in _EXACT + _ROUNDED:
            value = getattr(self, key)
            if value is not None:
                out[key] = round(value, 4) if key in _ROUNDED else value
        if self.steps:
            out["steps"] = [[at, round(x, 4)] for at, x in self.steps]
        if self.gains:
            out["gains"] = list(self.gains)
        if self.jumps:
            out["jumps"] = [round(j, 3) for j in self.jumps]
        if self.anchor is not None:
            out["anchor"] = [round(value, 4) for value in self.anchor]
        return out


def _floats(value: Any) -> list[float | None]:
    return [as_float(item) for item in value] if isinstance(value, list) else []
