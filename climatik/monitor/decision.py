"""Whether a policy requires capping: on at the threshold, off only under the release band (hysteresis)."""

from __future__ import annotations

from dataclasses import dataclass

from climatik.api import PolicySpec
from climatik.api.constants import DEFAULT_RELEASE_BAND


@dataclass(frozen=True)
class CappingDecision:
    """The decision and the reason for it, as a condition reason and a human message."""

    required: bool
    reason: str
    message: str


def decide(spec: PolicySpec, power: float | None, was_required: bool, *,
           release_band: int = DEFAULT_RELEASE_BAND) -> CappingDecision:
    """Decide from the policy's current power (None: no fresh, complete data) and the previous decision."""
    on_at = spec.threshold_watts
    off_below = spec.release_watts(release_band)
    if power is None:
        return CappingDecision(False, "NoFreshData", "no fresh power data; capping is not required until there is")
    if power >= on_at:
        return CappingDecision(True, "AboveThreshold",
                               f"power {power:.1f} W is at or above the threshold {on_at:.1f} W "
                               f"({spec.threshold_percent}% of {spec.power_cap_limit} W)")
    if was_required and power >= off_below:
        return CappingDecision(True, "WithinReleaseBand",
                               f"power {power:.1f} W is below the threshold {on_at:.1f} W but not yet below "
                               f"the release level {off_below:.1f} W")
    return CappingDecision(False, "BelowThreshold",
                           f"power {power:.1f} W is below the {'release level' if was_required else 'threshold'} "
                           f"{off_below if was_required else on_at:.1f} W")
