"""Whether an observation may drive a change: it must carry power, be recent, and be newer than the last one used.

Every built-in algorithm holds its current targets otherwise, so that missing or stale data never raises clocks
and a policy reconciled twice on the same observation does not act twice.
"""

from __future__ import annotations

from climatik.algorithms.base import AlgorithmInput


def hold_reason(inp: AlgorithmInput, last_seen: float | None, stale_seconds: float) -> str | None:
    """Why the targets must be held as they are, or None when the observation is new, fresh and complete."""
    obs = inp.observation
    if obs.power is None or obs.at is None:
        return "holding: no power data"
    if inp.now - obs.at > stale_seconds:
        return f"holding: the observation is {inp.now - obs.at:.0f} s old"
    if last_seen is not None and obs.at <= last_seen:
        return "holding: no new observation"
    return None
