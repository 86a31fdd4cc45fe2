"""One simulated GPU: locked clock with a lag, firmware power limit, and a power meter as the board has one (an
energy counter and a moving-average reading); stepped on simulated time.

NVML's power usage (DCGM field 155) on Hopper is a 1 s moving average; the meter keeps the energy counter at
step boundaries and reads the average as an energy difference over the window, so it is exact for power that
is constant within each step, whatever the step size.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

from climatik.sim.physics import GpuProfile, Load, firmware_clock_mhz, power_w, throughput


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


@dataclass(frozen=True)
class _PendingLock:
    effective_s: float
    max_mhz: int | None


class SimGpu:
    """A GPU that runs min(locked upper bound, max clock), snapped to a step and lowered to fit its power limit.

    A clock request takes effect `lag_s` after it is made, like the driver's clock change. Not thread-safe:
    the node that owns it serialises access.
    """

    def __init__(
        self,
        *,
        profile: GpuProfile,
        uuid: str,
        index: int,
        lag_s: float = 0.03,
        power_limit_w: float | None = None,
        start_s: float = 0.0,
    ) -> None:
        if lag_s < 0.0:
            raise ValueError(f"lag must be >= 0, got {lag_s}")
        self.profile = profile
        self.uuid = uuid
        self.index = index
        self._lag_s = lag_s
        self._power_limit_w = profile.power_limit_w if power_limit_w is None else power_limit_w
        self._requested_mhz: int | None = None
        self._effective_mhz: int | None = None
        self._pending: list[_PendingLock] = []
        self._load = Load.idle()
        self._sm_clock_mhz = profile.default_sm_mhz
        self._work = 0.0
        self._meter = PowerMeter(start_s=start_s, initial_w=profile.idle_w)

    @property
    def now_s(self) -> float:
        """Simulated time this GPU has been stepped to."""
        return self._meter.now_s

    @property
    def locked_max_mhz(self) -> int | None:
        """The upper clock bound last requested (snapped), or None when clocks are unlocked."""
        return self._requested_mhz

    @property
    def target_mhz(self) -> int:
        """The clock the GPU aims for once lags have passed, before power-limit throttling."""
        return self.profile.default_sm_mhz if self._effective_mhz is None else self._effective_mhz

    @property
    def sm_clock_mhz(self) -> int:
        """The SM clock actually running."""
        return self._sm_clock_mhz

    @property
    def power_limit_w(self) -> float:
        """The board power limit the firmware enforces."""
        return self._power_limit_w

    @property
    def load(self) -> Load:
        """The load during the latest step."""
        return self._load

    @property
    def average_power_w(self) -> float:
        """Power averaged over the last second, as NVML and DCGM field 155 report it."""
        return self._meter.average_w()

    @property
    def instant_power_w(self) -> float:
        """Power during the latest step."""
        return self._meter.instant_w

    @property
    def energy_j(self) -> float:
        """Energy drawn since the simulation started, in joules."""
        return self._meter.energy_j

    @property
    def work_done(self) -> float:
        """Work completed since the simulation started, in the profile's throughput units times seconds."""
        return self._work

    def set_locked_clock(self, max_mhz: float) -> int:
        """Lock the SM clock's upper bound; returns the snapped bound. Takes effect after the lag."""
        if not math.isfinite(max_mhz) or max_mhz <= 0:
            raise ValueError(f"locked clock must be a positive number of MHz, got {max_mhz}")
        snapped = self.profile.snap(max_mhz)
        self._requested_mhz = snapped
        self._pending.append(_PendingLock(self.now_s + self._lag_s, snapped))
        return snapped

    def reset_locked_clock(self) -> None:
        """Remove the lock so the GPU returns to its default clock, after the lag."""
        self._requested_mhz = None
        self._pending.append(_PendingLock(self.now_s + self._lag_s, None))

    def set_power_limit(self, watts: float) -> None:
        """Change the board power limit; the firmware applies it from the next step."""
        if not math.isfinite(watts) or watts <= 0:
            raise ValueError(f"power limit must be a positive number of W, got {watts}")
        self._power_limit_w = watts

    def step(self, dt_s: float, load: Load) -> None:
        """Run `load` for `dt_s` simulated seconds, applying clock requests at the moment they take effect."""
        if dt_s < 0.0:
            raise ValueError(f"cannot step backwards ({dt_s} s)")
        self._load = load
        end = self.now_s + dt_s
        while self._pending and self._pending[0].effective_s <= end:
            change = self._pending.pop(0)
            self._run(change.effective_s - self.now_s, load)
            self._effective_mhz = change.max_mhz
        self._run(end - self.now_s, load)

    def _run(self, dt_s: float, load: Load) -> None:
        self._sm_clock_mhz = firmware_clock_mhz(self.profile, self.target_mhz, load, self._power_limit_w)
        if dt_s <= 0.0:
            return
        self._meter.record(dt_s, power_w(self.profile, self._sm_clock_mhz, load))
        self._work += throughput(self.profile, self._sm_clock_mhz, load) * dt_s
