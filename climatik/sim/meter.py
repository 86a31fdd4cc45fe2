"""A power meter as the board has one: an energy counter and a moving-average power reading.

NVML's power usage (DCGM field 155) on Hopper is a 1 s moving average; the meter keeps the energy counter
at step boundaries and reads the average as an energy difference over the window, so it is exact for power
that is constant within each step, whatever the step size.
"""

from __future__ import annotations

import bisect
from collections import deque


class PowerMeter:
    """Integrates piecewise-constant power over simulated time.

    Before `start_s` the board is taken to have drawn `initial_w`, so early averages are not skewed.
    """

    def __init__(self, *, start_s: float, initial_w: float, window_s: float = 1.0) -> None:
        if window_s <= 0.0:
            raise ValueError(f"window must be positive, got {window_s}")
        self._window_s = window_s
        self._energy_j = 0.0
        self._instant_w = initial_w
        # (time, energy) points; the first one stands for the idle past before the meter started.
        self._points: deque[tuple[float, float]] = deque([(start_s - window_s, -initial_w * window_s), (start_s, 0.0)])

    @property
    def now_s(self) -> float:
        """Simulated time of the latest sample."""
        return self._points[-1][0]

    @property
    def energy_j(self) -> float:
        """Energy since the meter started, in joules."""
        return self._energy_j

    @property
    def instant_w(self) -> float:
        """Power drawn during the latest step."""
        return self._instant_w

    def record(self, dt_s: float, watts: float) -> None:
        """Account `watts` drawn for `dt_s` seconds after the latest sample."""
        if dt_s <= 0.0:
            return
        self._energy_j += watts * dt_s
        self._instant_w = watts
        now = self.now_s + dt_s
        self._points.append((now, self._energy_j))
        # Keep one point at or before the window start so the average can interpolate into it.
        while len(self._points) > 2 and self._points[1][0] <= now - self._window_s:
            self._points.popleft()

    def average_w(self) -> float:
        """Mean power over the last window."""
        now, energy = self._points[-1]
        start = now - self._window_s
        return (energy - self._energy_at(start)) / self._window_s

    def _energy_at(self, at_s: float) -> float:
        times = [t for t, _ in self._points]
        right = bisect.bisect_left(times, at_s)
        if right == 0:
            return self._points[0][1]
        t1, e1 = self._points[right]
        t0, e0 = self._points[right - 1]
        return e0 + (e1 - e0) * (at_s - t0) / (t1 - t0)
