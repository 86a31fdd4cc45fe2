"""Whether an observation may drive a change: it must carry power, be recent, and be newer than the last one used.

Every built-in algorithm holds its current targets otherwise, so that missing or stale data never raises clocks
and a policy reconciled twice on the same observation does not act twice. The one exception is a changed
threshold (the user edited the limit): the latest observation is then judged again against the new threshold at
once, instead of waiting a control period for the next one.
"""

from __future__ import annotations

from climatik.algorithms.base import AlgorithmInput


def hold_reason(inp: AlgorithmInput, last_seen: float | None, stale_seconds: float, *,
                last_threshold: float | None = None) -> str | None:
    """Why the targets must be held as they are, or None when the observation is new, fresh and complete.

    `last_seen` is the time of the last observation used and `last_threshold` the threshold (W) it was judged
    against.
    """
    obs = inp.observation
    if obs.power is None or obs.at is None:
        return "holding: no power data"
    if inp.now - obs.at > stale_seconds:
        return f"holding: the observation is {inp.now - obs.at:.0f} s old"
    if last_seen is not None and obs.at < last_seen:
        return "holding: no new observation"
    if last_seen is not None and obs.at == last_seen and not _moved(last_threshold, inp.threshold_watts):
        return "holding: no new observation"
    return None


def _moved(last_threshold: float | None, threshold: float) -> bool:
    return last_threshold is not None and abs(last_threshold - threshold) > 1e-6 * max(threshold, 1.0)
