"""Control-quality metrics of one policy's run.

* Energy above the cap: the integral of max(0, power - cap) over time, in J, also as a share of the integral of
  the cap (cap x duration).
* Time above the cap: the share of time with power over the cap.
* Episodes: a violation episode starts when the true power rises above cap x (1 + tolerance) and ends when it is
  back at or under that level and stays there for `hold_s` (or until the run ends). It becomes visible when
  Prometheus first shows the policy's power above the cap during it. Its time to under is from visible to end;
  an episode that ended before Prometheus showed it was never visible to any controller and has none.
* Work: what the policy's GPUs got done, to compare throughput between controllers.

Power here is the true mean power of each simulation step, not a measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from climatik.sim.loop.harness import PolicySeries

DEFAULT_TOLERANCE = 0.02
DEFAULT_HOLD_S = 1.0


@dataclass(frozen=True)
class Episode:
    """One violation: when it started, when Prometheus showed it (None: never), when it ended (None: never)."""

    start_s: float
    visible_s: float | None
    end_s: float | None

    @property
    def visible(self) -> bool:
        return self.visible_s is not None and (self.end_s is None or self.visible_s <= self.end_s)

    @property
    def time_to_under_s(self) -> float | None:
        """From visible to back under (inf: never back under); None for an episode that was never visible."""
        if not self.visible or self.visible_s is None:
            return None
        if self.end_s is None:
            return math.inf
        return max(0.0, self.end_s - self.visible_s)


@dataclass(frozen=True)
class PolicyMetrics:
    """The metrics of one policy over one run."""

    duration_s: float
    energy_above_cap_j: float
    cap_energy_j: float
    time_above_cap_s: float
    work: float
    episodes: tuple[Episode, ...]

    @property
    def energy_above_cap_share(self) -> float:
        """Energy above the cap as a share of cap x duration."""
        return self.energy_above_cap_j / self.cap_energy_j if self.cap_energy_j > 0 else 0.0

    @property
    def time_above_cap_share(self) -> float:
        return self.time_above_cap_s / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def times_to_under_s(self) -> list[float]:
        """The time to under of every visible episode, in order."""
        return [t for t in (e.time_to_under_s for e in self.episodes) if t is not None]

    @property
    def worst_time_to_under_s(self) -> float | None:
        """The longest time to under, or None when no violation ever showed in Prometheus."""
        times = self.times_to_under_s
        return max(times) if times else None


def policy_metrics(series: PolicySeries, *, tolerance: float = DEFAULT_TOLERANCE,
                   hold_s: float = DEFAULT_HOLD_S) -> PolicyMetrics:
    """Compute the metrics of `series` (see the module docstring)."""
    over_cap = [(p - c, dt) for p, c, dt in zip(series.power, series.cap, series.dt_s, strict=True) if p > c]
    return PolicyMetrics(
        duration_s=sum(series.dt_s),
        energy_above_cap_j=sum(excess * dt for excess, dt in over_cap),
        cap_energy_j=sum(c * dt for c, dt in zip(series.cap, series.dt_s, strict=True)),
        time_above_cap_s=sum(dt for _, dt in over_cap),
        work=series.total_work,
        episodes=tuple(_episodes(series, tolerance, hold_s)),
    )


def _episodes(series: PolicySeries, tolerance: float, hold_s: float) -> list[Episode]:
    n = len(series.power)
    starts = [end - dt for end, dt in zip(series.end_s, series.dt_s, strict=True)]
    over = [p > c * (1.0 + tolerance) for p, c in zip(series.power, series.cap, strict=True)]
    # next_over[k]: the first step at or after k that is over (n: none), to test "stays under" in O(1).
    next_over = [n] * (n + 1)
    for k in range(n - 1, -1, -1):
        next_over[k] = k if over[k] else next_over[k + 1]

    def back_under(k: int) -> bool:
        following = next_over[k]
        return not over[k] and (following == n or starts[following] >= starts[k] + hold_s - 1e-9)

    episodes: list[Episode] = []
    i = 0
    while i < n:
        if not over[i]:
            i += 1
            continue
        visible: float | None = None
        k = i
        while k < n and not back_under(k):
            if visible is None and series.prom[k] > series.cap[k]:
                visible = series.end_s[k]
            k += 1
        episodes.append(Episode(starts[i], visible, starts[k] if k < n else None))
        i = k
    return episodes
