"""Whether an observation may drive a change: it must carry power, be recent and newer than the last one used
(`hold_reason`), and show the effect of the last change of targets (`settled`). Every built-in algorithm holds
its current targets otherwise, so that missing or stale data never raises clocks and a policy reconciled twice
on the same observation does not act twice. The one exception to "newer" is a changed threshold (the user
edited the limit): the latest observation is then judged again against the new threshold at once, instead of
waiting a control period for the next one.

A change reaches the GPUs only after the recommender's write, the tuner's NVML calls and the GPU's own clock lag;
the power the exporter publishes is then an average over a window (1 s on Hopper), and the exporter collects and
Prometheus scrapes at their own intervals (dcgm-exporter's default collect is every 30 s, so a scrape can carry a
reading taken long before its own timestamp). An observation is taken to reflect the last change when

* its sample time is at least `floor_s` after the change: the averaging window plus the actuation delay, so that
  a reading averaged over the old and the new operating point is not mistaken for the new one;
* every GPU it reports runs at or under the cap it holds now: a reading that still shows a clock above a cap
  just lowered was collected before the cut took effect, whatever its scrape time says;
* after a raise of GPUs that ran at their caps, some GPU reports a clock above the highest one measured before
  it (`raised_from`): the old clocks are under the new caps too, so only a higher clock tells a reading taken
  after the raise from one taken before it;
* or the change is `max_wait_s` old: a cap that never takes effect (a failed tuner, a clock the firmware keeps
  elsewhere, a load that stopped using the clock it was given) must not stop the loop for good.
"""

from __future__ import annotations

from collections.abc import Mapping

from climatik.algorithms.base import AlgorithmInput, Observation


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


#: How far above its cap a GPU's reported clock may be and still count as running at the cap (readings round).
CLOCK_TOLERANCE = 0.01


def settled(obs: Observation, caps: Mapping[str, int | None], changed: float | None, *, floor_s: float,
            max_wait_s: float, raised_from: float | None = None) -> bool:
    """Whether `obs` reflects the change of targets made at `changed` (None: nothing to wait for).

    `caps` are the GPU caps held now (MHz; None or absent: no cap); `raised_from` the highest clock (MHz) of the
    GPUs that ran at their caps when the change raised them (None: not such a raise).
    """
    if changed is None:
        return True
    at = obs.at
    if at is None or at < changed + floor_s:
        return False
    if at >= changed + max_wait_s:
        return True
    return clocks_within_caps(obs, caps) and (raised_from is None or clocks_rose_above(obs, raised_from))


def clocks_within_caps(obs: Observation, caps: Mapping[str, int | None]) -> bool:
    """Whether every GPU of `obs` with a known clock and a cap runs at or under that cap."""
    for gpu in obs.gpus:
        cap = caps.get(gpu.uuid)
        if cap is not None and gpu.sm_clock is not None and gpu.sm_clock > cap * (1.0 + CLOCK_TOLERANCE) + 1:
            return False
    return True


def clocks_rose_above(obs: Observation, mhz: float) -> bool:
    """Whether some GPU of `obs` reports a clock above `mhz`."""
    return any(gpu.sm_clock is not None and gpu.sm_clock > mhz for gpu in obs.gpus)
