"""What the closed-loop controller remembers between steps, as the small JSON object persisted in status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from climatik.algorithms.model import THETA_MAX, THETA_MIN
from climatik.algorithms.state import as_float

_VERSION = 2


@dataclass(frozen=True)
class Memory:
    """`seen`: time of the last observation used; `changed`: when targets last changed; `gains`: recent learned
    clock sensitivities; `anchor`: (power before, predicted power, theta used, operating share) of the last GPU
    change, to learn from once it has taken effect."""

    seen: float | None = None
    changed: float | None = None
    gains: tuple[float, ...] = ()
    anchor: tuple[float, float, float, float] | None = None

    @classmethod
    def load(cls, state: Mapping[str, Any]) -> Memory:
        """Read back persisted state; anything malformed is forgotten rather than trusted."""
        if state.get("v") != _VERSION:
            return cls()
        raw_gains = state.get("gains")
        gains = [as_float(g) for g in raw_gains] if isinstance(raw_gains, list) else []
        raw_anchor = state.get("anchor")
        anchor_values = [as_float(a) for a in raw_anchor] if isinstance(raw_anchor, list) else []
        anchor = None
        if len(anchor_values) == 4 and all(a is not None for a in anchor_values):
            before, predicted, theta, share = (float(a or 0.0) for a in anchor_values)
            anchor = (before, predicted, theta, share)
        return cls(
            seen=as_float(state.get("seen")),
            changed=as_float(state.get("changed")),
            gains=tuple(g for g in gains if g is not None and THETA_MIN <= g <= THETA_MAX)[-3:],
            anchor=anchor,
        )

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": _VERSION}
        if self.seen is not None:
            out["seen"] = self.seen
        if self.changed is not None:
            out["changed"] = self.changed
        if self.gains:
            out["gains"] = list(self.gains)
        if self.anchor is not None:
            out["anchor"] = [round(value, 4) for value in self.anchor]
        return out
