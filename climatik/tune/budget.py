"""One power budget kept for one tick: the guard's pure step, free of devices and time sources.

`step` takes a budget in watts, the readings of its GPUs (`GpuReading`) and what the budget's guard remembers
(`GuardState`), and decides the levers (`Decision`) and what to report (`Report`):

* Power limits (`PowerLimit`): when every GPU of the budget accepts one and the budget is at least the sum of
  their lowest limits, the budget is split into per-GPU limits that the firmware holds within milliseconds. The
  split follows demand: each GPU gets what it drew recently plus headroom, a GPU held at its limit asks for a
  step more, and what is left is spread by the room each has under its highest limit. The limits never add up
  to more than the budget, so the budget holds whatever the load does between two ticks.
* Clock caps (`ClockCap`): when the budget is under the sum of the lowest limits, or a GPU refuses limits, the
  GPUs are held at their lowest limits (those that take one) and a common clock cap follows the measured power:
  down at once, in proportion to the excess (power follows the clock with an exponent of about 2.7 above idle),
  and back up slowly once there is room, so that it settles instead of oscillating. At the lowest clock with the
  budget still exceeded, the budget cannot be met: the power drawn there is reported as the floor. So is the power
  of GPUs held at their lowest limits that still draw more than a budget at (or just above) those limits: some
  boards draw above their lowest limit at their lowest clock.
* The floor is remembered, and reported whatever the lever, while the budget stays within `FLOOR_KEEP` of it: a
  recommender that raises the budget to the floor sees it still, instead of its guess, so it does not cut the
  budget under the floor again on its next split. A budget raised clearly above the floor forgets it.
* Neither (`None`): when the budget is at least what the GPUs can draw at all, nothing is limited.

The node guard (climatik.tune.guard) runs it for every budget of a node, in the tuner's guard thread and in the
simulated-time benchmark alike.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from climatik.api.nodefrequencies import CLOCK_CAP, NO_LEVER, POWER_LIMIT

#: Headroom over its recent highest reading a GPU's limit gets.
HEADROOM = 0.05
#: A GPU whose reading is this close to its limit is held by it, and wants its highest limit: what it would draw
#: unheld is unknown, and a burst (a prefill) is over in a fraction of a second, so it gets its share at once.
PRESSED = 0.97
#: A limit is changed only when it moves by more than this share of the GPU's highest limit (NVML writes are not
#: free, and readings are noisy), unless the limits must come down to fit the budget.
LIMIT_CHANGE = 0.02
#: How power follows the clock, for the clock cap's first cut; later cuts use the slope measured between ticks.
EXPONENT = 2.7
#: A cut aims this far under the budget, so that noise and the error of the slope do not leave it above.
AIM = 0.97
#: Climb of the clock cap per tick while there is this much room under the budget.
CLIMB = 0.03
ROOM = 0.9
#: Readings this share over the budget at the GPUs' lowest limits count as a floor (noise stays under it).
OVER = 0.01
#: A floor is forgotten once the budget is this share above it (the GPUs are no longer held near it).
FLOOR_KEEP = 0.1
#: How long a GPU's readings behind its peak, and the readings behind the report's mean, go back ...
WINDOW_S = 1.0
#: ... and how long those behind the report's highest reading go back: long enough that a load that bursts
#: every few seconds is reported at its bursts, so that the recommender's split keeps room for them.
PEAK_WINDOW_S = 10.0


@dataclass(frozen=True)
class GpuReading:
    """One GPU as the guard sees it on a tick: what it draws now, the power limits it takes (None: it refuses
    them), its limit now, the algorithm's clock target (None: none), the clocks it can run at (ascending), and
    the clock it runs at now (None: not read)."""

    uuid: str
    power: float
    min_limit: float | None
    max_limit: float | None
    limit: float | None
    target_mhz: int | None
    clocks: tuple[int, ...]
    clock_mhz: int | None = None

    @property
    def limitable(self) -> bool:
        return self.min_limit is not None and self.max_limit is not None


@dataclass(frozen=True)
class Decision:
    """What to set: a power limit per GPU (None: its original limit back), a clock cap per GPU (None: no cap of
    the guard's), and the report of the budget."""

    limits: dict[str, float | None]
    clock_caps: dict[str, int | None]
    report: Report


@dataclass(frozen=True)
class Report:
    """How the budget is kept: the lever, the mean total reading over the last second and the highest over the
    last ten, whether that mean is within the budget, and the floor (None: not known)."""

    watts: float
    lever: str
    power_mean: float
    power_max: float
    met: bool
    floor: float | None
    message: str = ""


class Readings:
    """Timed readings (W) over the last `span_s` seconds: the highest of them, kept in a queue of the readings
    no later one exceeds (constant time a reading, where a scan of ten seconds of ticks would not be), and the
    mean of the most recent."""

    def __init__(self, span_s: float) -> None:
        self._span_s = span_s
        self._all: deque[tuple[float, float]] = deque()
        self._peaks: deque[tuple[float, float]] = deque()

    def add(self, now: float, watts: float) -> float:
        """Add a reading taken at `now`, forget those older than the span, and return the highest left."""
        self._all.append((now, watts))
        while self._peaks and self._peaks[-1][1] <= watts:
            self._peaks.pop()
        self._peaks.append((now, watts))
        horizon = now - self._span_s
        while self._all[0][0] < horizon:
            self._all.popleft()
        while self._peaks[0][0] < horizon:
            self._peaks.popleft()
        return self._peaks[0][1]

    @property
    def highest(self) -> float:
        return self._peaks[0][1]

    @property
    def latest(self) -> float:
        """When the newest reading was taken."""
        return self._all[-1][0]

    def mean(self, window_s: float) -> float:
        """The mean of the readings of the last `window_s` before the newest (at least the newest)."""
        horizon = self.latest - window_s
        recent: list[float] = []
        for at, watts in reversed(self._all):
            if at < horizon and recent:
                break
            recent.append(watts)
        recent.reverse()  # summed oldest first, as they came
        return sum(recent) / len(recent)


@dataclass
class GuardState:
    """What one budget's guard remembers between ticks."""

    #: The budget's total reading over the peak window.
    readings: Readings = field(default_factory=lambda: Readings(PEAK_WINDOW_S))
    #: Each GPU's readings over the last second (UUID -> readings), for its peak.
    gpu_readings: dict[str, Readings] = field(default_factory=dict)
    cap_fraction: float = 1.0
    floor: float | None = None
    #: The clock (fraction of the highest) the GPUs ran at and the power they drew, on the last tick.
    last: tuple[float, float] | None = None


def step(watts: float, gpus: Sequence[GpuReading], state: GuardState, now: float) -> Decision:
    """One tick of the guard of a budget of `watts` over `gpus`, at monotonic time `now` (seconds)."""
    total = sum(gpu.power for gpu in gpus)
    state.readings.add(now, total)
    peaks = {gpu.uuid: _gpu_readings(state, gpu.uuid).add(now, gpu.power) for gpu in gpus}
    for gone in set(state.gpu_readings) - set(peaks):
        del state.gpu_readings[gone]
    lows = [gpu.min_limit or 0.0 for gpu in gpus]
    highs = [gpu.max_limit for gpu in gpus]
    if all(gpu.limitable for gpu in gpus) and watts >= sum(lows):
        state.cap_fraction, state.last = 1.0, None
        if state.floor is not None and watts > state.floor * (1.0 + FLOOR_KEEP):
            state.floor = None
        if all(high is not None for high in highs) and watts >= sum(high or 0.0 for high in highs):
            return _decision(watts, state, NO_LEVER, {gpu.uuid: None for gpu in gpus}, caps={}, gpus=gpus)
        if total > watts * (1.0 + OVER) and all(gpu.limit is not None and gpu.limit <= low + 0.5
                                                for gpu, low in zip(gpus, lows, strict=True)):
            state.floor = total  # held at their lowest limits and still over: what they draw there is the floor
        return _decision(watts, state, POWER_LIMIT, _split(watts, gpus, peaks), caps={}, gpus=gpus)
    limits: dict[str, float | None] = {gpu.uuid: gpu.min_limit if gpu.limitable else None for gpu in gpus}
    caps = _clock_caps(watts, gpus, state, total)
    message = "" if all(gpu.limitable for gpu in gpus) else "some GPUs refuse power limits: their clocks are capped"
    return _decision(watts, state, CLOCK_CAP, limits, caps=caps, gpus=gpus, message=message)


def _split(watts: float, gpus: Sequence[GpuReading], peaks: Mapping[str, float]) -> dict[str, float | None]:
    """Per-GPU limits adding up to at most `watts`: each GPU its want within its range, the rest by room."""
    wants = {gpu.uuid: _want(gpu, peaks[gpu.uuid]) for gpu in gpus}
    need = sum(wants.values())
    lows = {gpu.uuid: gpu.min_limit or 0.0 for gpu in gpus}
    highs = {gpu.uuid: gpu.max_limit or math.inf for gpu in gpus}
    if need > watts:
        above = sum(wants[u] - lows[u] for u in wants)
        share = (watts - sum(lows.values())) / above if above > 0 else 0.0
        chosen = {u: lows[u] + (wants[u] - lows[u]) * share for u in wants}
    else:
        rooms = {u: highs[u] - wants[u] for u in wants}
        room = sum(rooms.values())
        surplus = watts - need
        chosen = {u: wants[u] + (surplus * rooms[u] / room if room > 0 else 0.0) for u in wants}
    # Whole watts, rounded down, so the limits never add up to more than the budget.
    chosen = {u: float(math.floor(min(max(v, lows[u]), highs[u]))) for u, v in chosen.items()}
    return _keep(watts, gpus, chosen)


def _want(gpu: GpuReading, peak: float) -> float:
    low, high = gpu.min_limit or 0.0, gpu.max_limit or math.inf
    want = peak * (1.0 + HEADROOM)
    if gpu.limit is not None and peak >= PRESSED * gpu.limit:
        want = high
    return min(max(want, low), high)


def _keep(watts: float, gpus: Sequence[GpuReading], chosen: Mapping[str, float]) -> dict[str, float | None]:
    """The limits to set: a GPU keeps its current limit when the change is small, as long as the limits still
    fit the budget; where they would not, the kept limits that are highest above their choice come down first."""
    limits: dict[str, float | None] = {}
    for gpu in gpus:
        small = gpu.limit is not None and abs(chosen[gpu.uuid] - gpu.limit) <= LIMIT_CHANGE * (gpu.max_limit or 0.0)
        limits[gpu.uuid] = gpu.limit if small else chosen[gpu.uuid]
    kept_high = sorted((gpu for gpu in gpus if (limits[gpu.uuid] or 0.0) > chosen[gpu.uuid]),
                       key=lambda gpu: (limits[gpu.uuid] or 0.0) - chosen[gpu.uuid], reverse=True)
    for gpu in kept_high:
        if sum(v or 0.0 for v in limits.values()) <= watts:
            break
        limits[gpu.uuid] = chosen[gpu.uuid]
    return limits


def _clock_caps(watts: float, gpus: Sequence[GpuReading], state: GuardState, total: float) -> dict[str, int | None]:
    """A common clock cap (as a fraction of each GPU's highest clock) that follows the measured power."""
    # Work from the clock the GPUs run at: the algorithm's target, or a power limit the firmware holds, may
    # already keep them under the guard's cap, which would then take several ticks to bite.
    running = max((_running(gpu) / gpu.clocks[-1] for gpu in gpus if gpu.clocks), default=1.0)
    if total > watts and total > 0:
        state.cap_fraction = min(state.cap_fraction, running) * _cut(watts, total, running, state.last)
    elif total < ROOM * watts:
        state.cap_fraction = min(state.cap_fraction * (1.0 + CLIMB), 1.0)
    state.last = (running, total)
    caps: dict[str, int | None] = {}
    at_floor = True
    for gpu in gpus:
        if not gpu.clocks:
            caps[gpu.uuid] = None
            continue
        cap = _snap(gpu.clocks, state.cap_fraction * gpu.clocks[-1])
        at_floor &= cap == gpu.clocks[0]
        caps[gpu.uuid] = None if cap >= gpu.clocks[-1] else cap
    if at_floor and (total > watts or state.floor is not None):
        state.floor = total
    return caps


def _cut(watts: float, total: float, running: float, last: tuple[float, float] | None) -> float:
    """The factor to scale the running clock by so that the power comes to just under `watts`.

    Power has a part that does not follow the clock (memory, leakage, idle), so scaling the clock by
    (watts/total)^(1/2.7) cuts too little when that part is large. Once two ticks ran at different clocks, the
    slope between them says how many watts a step of clock is worth here, and the cut follows it; the model
    only bounds it, so a noisy slope cannot cut less than the model does or more than half."""
    model = float((watts / total) ** (1.0 / EXPONENT))
    if last is not None:
        before_fraction, before_total = last
        if before_fraction - running > 1e-3 and before_total > total:
            slope = (before_total - total) / (before_fraction - running)
            fraction = running - (total - AIM * watts) / slope
            return max(min(fraction / running, model), 0.5)
    return max(model, 0.5)


def _running(gpu: GpuReading) -> float:
    candidates = [mhz for mhz in (gpu.clock_mhz, gpu.target_mhz) if mhz is not None]
    return float(min(candidates)) if candidates else float(gpu.clocks[-1])


def _snap(clocks: Sequence[int], mhz: float) -> int:
    index = bisect.bisect_right(clocks, mhz)
    return clocks[index - 1] if index else clocks[0]


def _gpu_readings(state: GuardState, uuid: str) -> Readings:
    readings = state.gpu_readings.get(uuid)
    if readings is None:
        readings = state.gpu_readings[uuid] = Readings(WINDOW_S)
    return readings


def _decision(watts: float, state: GuardState, lever: str, limits: Mapping[str, float | None], *,
              caps: Mapping[str, int | None], gpus: Sequence[GpuReading], message: str = "") -> Decision:
    mean = state.readings.mean(WINDOW_S)
    highest = state.readings.highest
    floor = state.floor
    report = Report(watts=watts, lever=lever, power_mean=round(mean, 1), power_max=round(highest, 1),
                    met=mean <= watts * 1.01, floor=None if floor is None else round(floor, 1), message=message)
    return Decision(limits=dict(limits), clock_caps={gpu.uuid: caps.get(gpu.uuid) for gpu in gpus}, report=report)
