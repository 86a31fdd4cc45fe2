"""Control-quality metrics of one policy's run.

* Violation spans: an episode starts at the first simulation step whose true power is above the cap and ends at
  the first step back at or under it that stays there for `hold_s` (or never, if the run ends first). Its span is
  end - start: the detection delay (exporter, scrape, control period) counts, as it does for the breaker. An
  episode still open when the run ends counts to the run's end: a lower bound (a step over the cap in the last
  second of a run would otherwise make the span infinite, for a firmware-held static limit too). It
  becomes visible when Prometheus first shows the policy's power above the cap during it; `after_shown_s` (the
  benchmark's former "time to under") is from visible to end and leaves the detection delay out.
* Energy above the cap: the integral of max(0, power - cap) over time, in J, also as a share of the integral of
  the cap (cap x duration). Time above the cap: the share of time with power over the cap.
* Work: what the policy's GPUs got done, to compare throughput between controllers.
* A cap that cannot be met (`infeasible_metrics`): how long the clocks take to reach their floor after the cap
  drops under what the GPUs draw there, how often the commands reverse while the cap stays unreachable, and how
  long after the cap is restored the work rate is back near the uncapped one.

Power here is the true mean power of each simulation step (50 ms by default), not a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from climatik.sim.loop.harness import PolicySeries

#: A step is over the cap when its power exceeds it by more than this share (float noise in energy differences).
DEFAULT_TOLERANCE = 1e-9
DEFAULT_HOLD_S = 1.0


@dataclass(frozen=True)
class Episode:
    """One violation: when it started, when Prometheus showed it (None: never), when it ended (None: not within
    the run), and when the run ended (None: not known)."""

    start_s: float
    visible_s: float | None
    end_s: float | None
    run_end_s: float | None = None

    @property
    def span_s(self) -> float:
        """From the first step above the cap to back under it; an episode still open at the end of the run counts
        to the run's end (inf when that is not known)."""
        if self.end_s is None:
            return math.inf if self.run_end_s is None else self.run_end_s - self.start_s
        return self.end_s - self.start_s

    @property
    def visible(self) -> bool:
        return self.visible_s is not None and (self.end_s is None or self.visible_s <= self.end_s)

    @property
    def after_shown_s(self) -> float | None:
        """From visible to back under (inf: never back under); None for an episode that was never visible."""
        if not self.visible or self.visible_s is None:
            return None
        if self.end_s is None:
            return math.inf
        return max(0.0, self.end_s - self.visible_s)

    @property
    def time_to_under_s(self) -> float | None:
        """The former name of `after_shown_s`."""
        return self.after_shown_s


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
    def worst_span_s(self) -> float:
        """The longest violation span (0 when the power never went above the cap)."""
        return max((e.span_s for e in self.episodes), default=0.0)

    @property
    def worst_episode(self) -> Episode | None:
        """The episode with the longest span."""
        return max(self.episodes, key=lambda e: e.span_s, default=None)

    @property
    def times_to_under_s(self) -> list[float]:
        """The time from shown to under of every visible episode, in order."""
        return [t for t in (e.after_shown_s for e in self.episodes) if t is not None]

    @property
    def worst_time_to_under_s(self) -> float | None:
        """The longest time from shown to under, or None when no violation ever showed in Prometheus."""
        times = self.times_to_under_s
        return max(times) if times else None


def policy_metrics(series: PolicySeries, *, tolerance: float = DEFAULT_TOLERANCE,
                   hold_s: float = DEFAULT_HOLD_S) -> PolicyMetrics:
    """Compute the metrics of `series` (see the module docstring); a step is over when its power exceeds the cap
    by more than `tolerance` (a share)."""
    over_cap = [(p - c, dt) for p, c, dt in zip(series.power, series.cap, series.dt_s, strict=True)
                if p > c * (1.0 + DEFAULT_TOLERANCE)]
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
        episodes.append(Episode(starts[i], visible, starts[k] if k < n else None, run_end_s=series.end_s[-1]))
        i = k
    return episodes


@dataclass(frozen=True)
class InfeasibleMetrics:
    """How a loop behaves while its cap cannot be met and after the cap is restored.

    to_floor_s: from the drop to the GPUs running at their floor clock (within one step); None: never.
    reversals: how often the commanded clocks or power limits changed direction while the cap was unreachable.
    recovery_s: from the restore to the work rate being back at `share` of the uncapped run's for good; None:
      never within the run.
    """

    to_floor_s: float | None
    reversals: int
    recovery_s: float | None


def infeasible_metrics(series: PolicySeries, uncapped: PolicySeries, *, drop_s: float, restore_s: float,
                       floor_mhz: float, step_mhz: float, share: float = 0.95,
                       window_s: float = 1.0) -> InfeasibleMetrics:
    """The metrics of a run whose cap is unreachable from `drop_s` to `restore_s`; `uncapped` is the same scenario
    run without capping (for the work rate to compare with)."""
    ends = series.end_s
    to_floor = next((end - drop_s for end, clock in zip(ends, series.clock, strict=True)
                     if end > drop_s and clock <= floor_mhz + step_mhz - 1e-6), None)
    if to_floor is not None and to_floor > restore_s - drop_s:
        to_floor = None
    inside = [k for k, end in enumerate(ends) if drop_s < end <= restore_s]
    reversals = (_reversals([series.target[k] for k in inside], step_mhz / 2.0)
                 + _reversals([series.limit[k] for k in inside], 1.0))
    ratios = _rate_ratios(series, uncapped, window_s)
    recovery: float | None = None
    for end, ratio in zip(ends, ratios, strict=True):
        if end <= restore_s:
            continue
        if ratio < share:
            recovery = None
        elif recovery is None:
            recovery = end - restore_s
    return InfeasibleMetrics(to_floor, reversals, recovery)


def _reversals(values: Sequence[float], resolution: float) -> int:
    """How often `values` change direction, ignoring moves smaller than `resolution`."""
    count, direction, last = 0, 0, None
    for value in values:
        if last is None:
            last = value
            continue
        move = value - last
        if abs(move) < resolution:
            continue
        sign = 1 if move > 0 else -1
        if direction and sign != direction:
            count += 1
        direction, last = sign, value
    return count


def _rate_ratios(series: PolicySeries, uncapped: PolicySeries, window_s: float) -> list[float]:
    """Per step, the work over the last `window_s` relative to the uncapped run's over the same window."""
    ratios: list[float] = []
    done = reference = span = 0.0
    start = 0
    for k, dt in enumerate(series.dt_s):
        done, reference, span = done + series.work[k], reference + uncapped.work[k], span + dt
        while span - series.dt_s[start] >= window_s - 1e-9:
            done, reference = done - series.work[start], reference - uncapped.work[start]
            span -= series.dt_s[start]
            start += 1
        ratios.append(done / reference if reference > 0.0 else 1.0)
    return ratios
