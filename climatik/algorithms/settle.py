"""Whether an observation shows the effect of the last change of targets, judged from the observation itself.

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

from climatik.algorithms.base import Observation

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
