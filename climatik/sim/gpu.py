"""One simulated GPU: locked clock with a lag, a firmware-held board power limit, and a power meter as the board
has one (an energy counter, the 1 s average and the instantaneous reading, with optional measurement noise);
stepped on simulated time.

NVML's power usage (DCGM field 155) on Hopper is a 1 s moving average; the instantaneous reading (DCGM field
157, NVML_FI_DEV_POWER_INSTANT) has about 50 ms resolution, so a sub-second prefill burst shows in it and not in
the average. The meter keeps the energy counter at step boundaries and reads either as an energy difference
over its window, so both are exact for power that is constant within each step, whatever the step size.

Power limits behave as NVML's: nvmlDeviceSetPowerManagementLimit refuses a value outside the board's range
(NVML_ERROR_INVALID_ARGUMENT; here ValueError naming the range). The firmware enforces a limit by lowering the
clock; it does not do so at once. ASSUMED (no public measurement of the response time was found; NVIDIA's
pages say only that the PMU samples board power "at high frequency" and that a limit "takes effect
immediately"): the highest clock the limit allows is reached as a first-order response with a 50 ms time
constant (95 % within 150 ms), whether the limit or the load moved. So a board held at a limit overshoots it
briefly when a burst starts (a feedback controller acts only on what it has measured), and a lowered limit
bites within a few tenths of a second. A clock lock, by contrast, holds from the moment it takes effect.
Within a step the clock is taken at the response's mean over the step.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import deque
from dataclasses import dataclass

from climatik.sim.physics import GpuProfile, Load, firmware_clock_mhz, power_w, throughput

#: Time constant of the firmware's power-limit response (assumed, see the module docstring).
FIRMWARE_TAU_S = 0.05
#: The instantaneous reading's window (DCGM field 157, about 50 ms resolution).
INSTANT_WINDOW_S = 0.05
#: A new measurement error is drawn for every this much simulated time; readers at one moment see one reading.
NOISE_BUCKET_S = 0.05
#: Measurement errors are clipped at this many standard deviations.
_NOISE_CLIP = 3.0
#: A firmware ceiling this close to where it is heading has arrived (so that snapping does not lose a step).
_ARRIVED_MHZ = 0.5


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

    def average_w(self, window_s: float | None = None) -> float:
        """Mean power over the last `window_s` (at most the meter's window; default: the whole window)."""
        window = self._window_s if window_s is None else min(max(window_s, 1e-9), self._window_s)
        now, energy = self._points[-1]
        return (energy - self._energy_at(now - window)) / window

    def _energy_at(self, at_s: float) -> float:
        times = [t for t, _ in self._points]
        right = bisect.bisect_left(times, at_s)
        if right == 0:
            return self._points[0][1]
        t1, e1 = self._points[right]
        t0, e0 = self._points[right - 1]
        return e0 + (e1 - e0) * (at_s - t0) / (t1 - t0)


class ReadingNoise:
    """Relative error of a board's power readings: Gaussian with standard deviation `share`, clipped at 3 sigma,
    a new draw every NOISE_BUCKET_S of simulated time, in time order from a source seeded by `seed`."""

    def __init__(self, share: float, seed: str) -> None:
        if not math.isfinite(share) or share < 0.0:
            raise ValueError(f"noise share must be >= 0, got {share}")
        self.share = share
        self._rng = random.Random(seed)
        self._bucket = -1
        self._error = 0.0

    def factor(self, at_s: float) -> float:
        """What a reading taken at `at_s` is multiplied by."""
        if self.share == 0.0:
            return 1.0
        bucket = max(0, int(at_s / NOISE_BUCKET_S + 1e-9))
        # Readings move forward with the board's time; skipped buckets are drawn too, so that the error at a
        # moment does not depend on how often someone looked before it.
        while self._bucket < bucket:
            self._error = min(_NOISE_CLIP, max(-_NOISE_CLIP, self._rng.gauss(0.0, 1.0)))
            self._bucket += 1
        return 1.0 + self.share * self._error


@dataclass(frozen=True)
class _PendingLock:
    effective_s: float
    max_mhz: int | None


class SimGpu:
    """A GPU that runs min(locked upper bound, max clock), snapped to a step and lowered by its firmware to fit
    its power limit.

    A clock request takes effect `lag_s` after it is made, like the driver's clock change; the firmware's clock
    ceiling follows the limit and the load with time constant `firmware_tau_s`. Readings (`average_power_w`,
    `instant_power_w`) carry a relative error of standard deviation `noise` (none by default); the energy
    counter is exact. Not thread-safe: the node that owns it serialises access.
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
        firmware_tau_s: float = FIRMWARE_TAU_S,
        noise: float = 0.0,
        noise_seed: str = "",
    ) -> None:
        if lag_s < 0.0:
            raise ValueError(f"lag must be >= 0, got {lag_s}")
        if firmware_tau_s < 0.0:
            raise ValueError(f"firmware time constant must be >= 0, got {firmware_tau_s}")
        self.profile = profile
        self.uuid = uuid
        self.index = index
        self._lag_s = lag_s
        self._tau_s = firmware_tau_s
        self._power_limit_w = profile.power_limit_w
        if power_limit_w is not None:
            self._power_limit_w = self._checked_limit(power_limit_w)
        self._requested_mhz: int | None = None
        self._effective_mhz: int | None = None
        self._pending: list[_PendingLock] = []
        self._load = Load.idle()
        self._sm_clock_mhz = profile.default_sm_mhz
        # The highest clock the firmware currently allows under its power limit (continuous while it moves).
        self._ceiling_mhz = float(profile.max_sm_mhz)
        self._fit: tuple[Load, float, int] | None = None
        self._work = 0.0
        self._meter = PowerMeter(start_s=start_s, initial_w=profile.idle_w)
        self._noise = ReadingNoise(noise, noise_seed or uuid)

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
    def min_power_limit_w(self) -> float:
        """The lowest power limit the board accepts."""
        return self.profile.power_limit_range[0]

    @property
    def max_power_limit_w(self) -> float:
        """The highest power limit the board accepts."""
        return self.profile.power_limit_range[1]

    @property
    def default_power_limit_w(self) -> float:
        """The power limit after boot or a reset."""
        return self.profile.default_power_limit_w

    @property
    def load(self) -> Load:
        """The load during the latest step."""
        return self._load

    @property
    def average_power_w(self) -> float:
        """Power averaged over the last second, as NVML and DCGM field 155 report it (measurement error included)."""
        return self._meter.average_w() * self._noise.factor(self.now_s)

    @property
    def instant_power_w(self) -> float:
        """Power over the last 50 ms, as DCGM field 157 reports it (measurement error included)."""
        return self._meter.average_w(INSTANT_WINDOW_S) * self._noise.factor(self.now_s)

    @property
    def true_average_power_w(self) -> float:
        """The real mean power over the last second, without measurement error."""
        return self._meter.average_w()

    @property
    def true_instant_power_w(self) -> float:
        """The real mean power over the last 50 ms, without measurement error."""
        return self._meter.average_w(INSTANT_WINDOW_S)

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
        """Change the board power limit, as nvmlDeviceSetPowerManagementLimit does: a value outside the board's
        range is refused (ValueError naming the range); the firmware then moves the clock with its response."""
        self._power_limit_w = self._checked_limit(watts)

    def reset_power_limit(self) -> None:
        """Return to the default power limit."""
        self._power_limit_w = self.profile.default_power_limit_w

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

    def _checked_limit(self, watts: float) -> float:
        low, high = self.profile.power_limit_range
        # NVML takes whole milliwatts; half a milliwatt of float noise is not outside the range.
        if not math.isfinite(watts) or not low - 5e-4 <= watts <= high + 5e-4:
            raise ValueError(f"power limit {watts:g} W is outside {low:g}..{high:g} W, the range of the "
                             f"{self.profile.model_name}")
        return min(max(watts, low), high)

    def _allowed_mhz(self, load: Load) -> int:
        """The highest clock at which `load` fits the power limit (the firmware's destination); cached, since a
        load and a limit usually stay the same for many steps."""
        fit = self._fit
        if fit is not None and fit[1] == self._power_limit_w and (fit[0] is load or fit[0] == load):
            return fit[2]
        allowed = firmware_clock_mhz(self.profile, self.profile.max_sm_mhz, load, self._power_limit_w)
        self._fit = (load, self._power_limit_w, allowed)
        return allowed

    def _run(self, dt_s: float, load: Load) -> None:
        # While the firmware's ceiling moves, a long step is cut into pieces of one time constant, so that the
        # instantaneous reading after it does not average the transient over the whole step.
        remaining = dt_s
        while remaining > self._tau_s > 0.0 and abs(self._ceiling_mhz - self._allowed_mhz(load)) >= _ARRIVED_MHZ:
            self._piece(self._tau_s, load)
            remaining -= self._tau_s
        self._piece(remaining, load)

    def _piece(self, dt_s: float, load: Load) -> None:
        allowed = self._allowed_mhz(load)
        gap = self._ceiling_mhz - allowed
        if dt_s <= 0.0:
            end_ceiling = mean_ceiling = self._ceiling_mhz if self._tau_s > 0.0 else float(allowed)
        elif self._tau_s == 0.0 or abs(gap) < _ARRIVED_MHZ:
            end_ceiling = mean_ceiling = float(allowed)
        else:
            decay = math.exp(-dt_s / self._tau_s)
            end_ceiling = allowed + gap * decay
            # The exact time average of the exponential over the piece.
            mean_ceiling = allowed + gap * self._tau_s / dt_s * (1.0 - decay)
            if abs(end_ceiling - allowed) < _ARRIVED_MHZ:
                end_ceiling = float(allowed)
        self._ceiling_mhz = end_ceiling
        self._sm_clock_mhz = self.profile.snap(min(self.target_mhz, end_ceiling))
        if dt_s <= 0.0:
            return
        running = min(float(self.target_mhz), mean_ceiling)
        self._meter.record(dt_s, power_w(self.profile, running, load))
        self._work += throughput(self.profile, running, load) * dt_s
