"""The node guard: keeps each power budget of its node by itself, every fraction of a second, from the GPUs' own
power readings, with the two levers the hardware offers.

* Power limits (`PowerLimit`): when every GPU of the budget accepts one and the budget is at least the sum of
  their lowest limits, the budget is split into per-GPU limits that the firmware holds within milliseconds. The
  split follows demand: each GPU gets what it drew recently plus headroom, a GPU held at its limit asks for a
  step more, and what is left is spread by the room each has under its highest limit. The limits never add up
  to more than the budget, so the budget holds whatever the load does between two ticks.
* Clock caps (`ClockCap`): when the budget is under the sum of the lowest limits, or a GPU refuses limits, the
  GPUs are held at their lowest limits (those that take one) and a common clock cap follows the measured power:
  down at once, in proportion to the excess (power follows the clock with an exponent of about 2.7 above idle),
  and back up slowly once there is room, so that it settles instead of oscillating. At the lowest clock with the
  budget still exceeded, the budget cannot be met: the power drawn there is reported as the floor.
* Neither (`None`): when the budget is at least what the GPUs can draw at all, nothing is limited.

The guard only ever lowers: a clock cap it sets is combined with the algorithm's target by taking the lower.
It keeps working from its last budget when the API server or Prometheus is unreachable.

`step` is pure: one budget, one tick. `NodeGuard` keeps every budget of a node's spec over the node's devices:
on each tick it reads the GPUs' power once (`PowerDevices`), steps each budget, writes the limits that changed
(a GPU that refuses one is kept by its clock from then on, with the refusal in the budget's message), sets the
clock caps through `CappedGpus` (the backend the applier drives, which locks the lower of the algorithm's target
and the guard's cap), gives back the original limit of a GPU that leaves every budget, and reports one
`BudgetStatus` per budget. The tuner's guard thread and the simulated-time benchmark both run it.
`BudgetReports` decides when those statuses (and the node's GPU power, which power domains count) are worth an
API write: at once when the budgets in the spec changed (the recommender waits for that acknowledgement before
it raises another node), within a second when a lever, whether the budget is met, or the floor changed, and
every few seconds at most when only the readings moved by a noticeable share of the budget (of the node's GPUs'
highest limits, for its power); a steady node costs no writes.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from climatik.api.nodefrequencies import (
    APPLIED,
    CLOCK_CAP,
    NO_LEVER,
    POWER_LIMIT,
    BudgetStatus,
    GpuInventory,
    NodePower,
    PowerBudget,
)
from climatik.tune.backends.base import DeviceResult, GpuBackend, join_notes

N = TypeVar("N", int, float)

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
#: How long a GPU's readings behind its peak, and the readings behind the report's mean, go back ...
WINDOW_S = 1.0
#: ... and how long those behind the report's highest reading go back: long enough that a load that bursts
#: every few seconds is reported at its bursts, so that the recommender's split keeps room for them.
PEAK_WINDOW_S = 10.0
#: Budget statuses: how soon a changed lever, verdict or floor is written, how often moved readings are, and
#: what share of the budget counts as moved.
REPORT_CHANGE_S = 1.0
REPORT_READINGS_S = 5.0
REPORT_MOVE = 0.05


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


@dataclass
class GuardState:
    """What one budget's guard remembers between ticks."""

    readings: deque[tuple[float, float]] = field(default_factory=deque)
    #: Each GPU's readings over the last second (UUID -> (time, W)), for its peak.
    gpu_readings: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    cap_fraction: float = 1.0
    floor: float | None = None
    #: The clock (fraction of the highest) the GPUs ran at and the power they drew, on the last tick.
    last: tuple[float, float] | None = None


def step(watts: float, gpus: Sequence[GpuReading], state: GuardState, now: float) -> Decision:
    """One tick of the guard of a budget of `watts` over `gpus`, at monotonic time `now` (seconds)."""
    total = sum(gpu.power for gpu in gpus)
    _remember(state.readings, total, now, PEAK_WINDOW_S)
    peaks = {gpu.uuid: _remember(state.gpu_readings.setdefault(gpu.uuid, deque()), gpu.power, now, WINDOW_S)
             for gpu in gpus}
    for gone in set(state.gpu_readings) - set(peaks):
        del state.gpu_readings[gone]
    lows = [gpu.min_limit or 0.0 for gpu in gpus]
    highs = [gpu.max_limit for gpu in gpus]
    if all(gpu.limitable for gpu in gpus) and watts >= sum(lows):
        state.cap_fraction, state.floor, state.last = 1.0, None, None
        if all(high is not None for high in highs) and watts >= sum(high or 0.0 for high in highs):
            return _decision(watts, state, NO_LEVER, {gpu.uuid: None for gpu in gpus}, caps={}, gpus=gpus)
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
    if at_floor and total > watts:
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


def _remember(readings: deque[tuple[float, float]], value: float, now: float, window_s: float) -> float:
    """Add a reading, forget those older than `window_s`, and return the highest left."""
    readings.append((now, value))
    while readings and readings[0][0] < now - window_s:
        readings.popleft()
    return max(power for _, power in readings)


def _decision(watts: float, state: GuardState, lever: str, limits: Mapping[str, float | None], *,
              caps: Mapping[str, int | None], gpus: Sequence[GpuReading], message: str = "") -> Decision:
    now = state.readings[-1][0]
    recent = [power for at, power in state.readings if at >= now - WINDOW_S]
    mean = sum(recent) / len(recent)
    highest = max(power for _, power in state.readings)
    floor = state.floor if lever == CLOCK_CAP else None
    report = Report(watts=watts, lever=lever, power_mean=round(mean, 1), power_max=round(highest, 1),
                    met=mean <= watts * 1.01, floor=None if floor is None else round(floor, 1), message=message)
    return Decision(limits=dict(limits), clock_caps={gpu.uuid: caps.get(gpu.uuid) for gpu in gpus}, report=report)


@dataclass(frozen=True)
class PowerState:
    """One GPU's power as read on a tick: the instantaneous reading (W), its power limit now and the range it
    accepts (None: it does not take limits)."""

    power: float
    limit: float | None = None
    min_limit: float | None = None
    max_limit: float | None = None


class PowerLimitError(Exception):
    """A GPU refused a power limit (no permission, not supported, out of range); the message says which."""


class PowerDevices(Protocol):
    """A node's GPUs as the guard reads and limits them."""

    def power_states(self) -> Mapping[str, PowerState]:
        """Every GPU's power now, in one batch (UUID -> state); a GPU that cannot be read is left out."""
        ...

    def set_power_limit(self, uuid: str, watts: float) -> None:
        """Set a GPU's power limit; raises PowerLimitError when the GPU refuses it."""
        ...


class CappedGpus:
    """The applier's GPU backend with the guard's clock caps on top: each GPU is locked at the lower of the
    algorithm's target (set through `apply`, removed through `reset`) and the guard's cap (set through `cap`)."""

    def __init__(self, inner: GpuBackend) -> None:
        self.inner = inner
        self._targets: dict[str, int] = {}
        self._caps: dict[str, int] = {}
        self._clocks: dict[str, tuple[int, ...]] = {}

    @property
    def name(self) -> str:
        return self.inner.name

    def inventory(self) -> list[GpuInventory]:
        listing = self.inner.inventory()
        self._clocks = {gpu.uuid: tuple(sorted(gpu.supported_frequencies or ())) for gpu in listing}
        return listing

    def clocks(self, uuid: str) -> tuple[int, ...]:
        """The clocks a GPU supports (ascending), as of the last inventory; empty when not known."""
        if not self._clocks:
            self.inventory()
        return self._clocks.get(uuid, ())

    def target(self, uuid: str) -> int | None:
        return self._targets.get(uuid)

    def apply(self, uuid: str, max_mhz: int) -> DeviceResult:
        self._targets[uuid] = max_mhz
        cap = self._caps.get(uuid)
        if cap is None or cap >= max_mhz:
            return self.inner.apply(uuid, max_mhz)
        result = self.inner.apply(uuid, cap)
        return DeviceResult(result.status, requested_mhz=max_mhz, applied_mhz=result.applied_mhz,
                            current_mhz=result.current_mhz,
                            message=join_notes(f"held at {cap} MHz by the node's power budget", result.message))

    def reset(self, uuid: str) -> DeviceResult:
        self._targets.pop(uuid, None)
        cap = self._caps.get(uuid)
        return self.inner.reset(uuid) if cap is None else self.inner.apply(uuid, cap)

    def current_clock(self, uuid: str) -> int | None:
        return self.inner.current_clock(uuid)

    def close(self) -> None:
        self.inner.close()

    def cap(self, uuid: str, mhz: int | None) -> DeviceResult | None:
        """Set (or with None remove) the guard's cap of a GPU; locks again only when the lock moves."""
        before = self._lock(uuid)
        if mhz is None:
            self._caps.pop(uuid, None)
        else:
            self._caps[uuid] = mhz
        after = self._lock(uuid)
        if after == before:
            return None
        return self.inner.reset(uuid) if after is None else self.inner.apply(uuid, after)

    def _lock(self, uuid: str) -> int | None:
        bounds = [mhz for mhz in (self._targets.get(uuid), self._caps.get(uuid)) if mhz is not None]
        return min(bounds) if bounds else None


@dataclass(frozen=True)
class GuardTick:
    """What a tick did: one status per budget, the node's GPU power (all its GPUs: what power domains count), the
    sum of its GPUs' highest limits (the scale moves of it are judged by), and the writes it made."""

    budgets: list[BudgetStatus]
    power: NodePower | None = None
    scale: float = 0.0
    limit_writes: int = 0
    clock_writes: int = 0


class NodeGuard:
    """Keeps every power budget of one node; `tick` is called every guard period (default 100 ms).

    `originals` holds each GPU's power limit from before the guard first changed it (UUID -> W); pass a mapping
    backed by the tuner's state file so that a restarted tuner still gives the right limits back. Not
    thread-safe: one thread ticks, and `release` runs after it stopped.
    """

    def __init__(self, power: PowerDevices, clocks: CappedGpus, *,
                 originals: MutableMapping[str, float] | None = None) -> None:
        self._power = power
        self._clocks = clocks
        self._originals: MutableMapping[str, float] = {} if originals is None else originals
        self._states: dict[str, GuardState] = {}
        self._node = GuardState()
        self._refused: dict[str, str] = {}
        self._capped: set[str] = set()

    def tick(self, budgets: Sequence[PowerBudget], now: float) -> GuardTick:
        """Read the GPUs, step every budget, and apply what changed."""
        states = self._power.power_states()
        limits: dict[str, float | None] = {}
        caps: dict[str, int | None] = {}
        reports: list[BudgetStatus] = []
        for budget in budgets:
            present = [uuid for uuid in budget.gpu_ids if uuid in states]
            missing = sorted(set(budget.gpu_ids) - set(present))
            state = self._states.setdefault(budget.policy, GuardState())
            decision = step(float(budget.watts), [self._reading(uuid, states[uuid]) for uuid in present], state, now)
            for uuid, limit in decision.limits.items():
                limits[uuid] = _lower(limits.get(uuid), limit)
            for uuid, cap in decision.clock_caps.items():
                caps[uuid] = _lower(caps.get(uuid), cap)
            reports.append(self._status(budget, decision.report, missing, present))
        for policy in set(self._states) - {budget.policy for budget in budgets}:
            del self._states[policy]
        limit_writes = self._write_limits(limits, states)
        clock_writes = self._write_caps(caps)
        return GuardTick(budgets=reports, power=self._node_power(states, now),
                         scale=sum(state.max_limit or 0.0 for state in states.values()),
                         limit_writes=limit_writes, clock_writes=clock_writes)

    def _node_power(self, states: Mapping[str, PowerState], now: float) -> NodePower | None:
        if not states:
            return None
        readings = self._node.readings
        peak = _remember(readings, sum(state.power for state in states.values()), now, PEAK_WINDOW_S)
        recent = [power for at, power in readings if at >= now - WINDOW_S]
        return NodePower(mean=round(sum(recent) / len(recent), 1), max=round(peak, 1))

    def release(self) -> int:
        """Give back every limit and clock cap the guard set (budgets removed, tuner stopping); returns writes."""
        writes = self._write_limits({}, self._power.power_states())
        writes += self._write_caps({})
        self._states.clear()
        return writes

    def _reading(self, uuid: str, power: PowerState) -> GpuReading:
        takes = uuid not in self._refused and power.min_limit is not None and power.max_limit is not None
        clock = self._clocks.current_clock(uuid)
        return GpuReading(uuid=uuid, power=power.power, min_limit=power.min_limit if takes else None,
                          max_limit=power.max_limit if takes else None, limit=power.limit if takes else None,
                          target_mhz=self._clocks.target(uuid), clocks=self._clocks.clocks(uuid), clock_mhz=clock)

    def _status(self, budget: PowerBudget, report: Report, missing: Sequence[str],
                present: Sequence[str]) -> BudgetStatus:
        refused = [f"{uuid}: {self._refused[uuid]}" for uuid in present if uuid in self._refused]
        notes = [report.message] if report.message else []
        if refused:
            notes.append("power limit refused by " + "; ".join(refused))
        if missing:
            notes.append("GPUs not on this node: " + ", ".join(missing))
        if report.floor is not None and not report.met:
            notes.append("the GPUs draw more than the budget at their lowest clock (see floor)")
        return BudgetStatus(policy=budget.policy, watts=budget.watts, power_mean=report.power_mean,
                            power_max=report.power_max, lever=report.lever, met=report.met, floor=report.floor,
                            message="; ".join(notes) or None)

    def _write_limits(self, limits: Mapping[str, float | None], states: Mapping[str, PowerState]) -> int:
        writes = 0
        for uuid in sorted(set(limits) | set(self._originals)):
            power = states.get(uuid)
            if power is None or uuid in self._refused:
                continue
            wanted = limits.get(uuid)
            if wanted is None:
                wanted = self._originals.get(uuid)
                if wanted is None:
                    continue
            if power.limit is not None and abs(power.limit - wanted) < 0.5:
                if limits.get(uuid) is None:
                    self._originals.pop(uuid, None)
                continue
            if uuid not in self._originals and power.limit is not None:
                self._originals[uuid] = power.limit
            try:
                self._power.set_power_limit(uuid, wanted)
            except PowerLimitError as error:
                self._refused[uuid] = str(error)
                continue
            writes += 1
            if limits.get(uuid) is None:
                self._originals.pop(uuid, None)
        return writes

    def _write_caps(self, caps: Mapping[str, int | None]) -> int:
        writes = 0
        for uuid in sorted(set(caps) | self._capped):
            cap = caps.get(uuid)
            result = self._clocks.cap(uuid, cap)
            if cap is None:
                self._capped.discard(uuid)
            else:
                self._capped.add(uuid)
            if result is not None and result.status == APPLIED:
                writes += 1
        return writes


def _lower(a: N | None, b: N | None) -> N | None:
    """The lower of two bounds, where None does not bound."""
    return b if a is None else a if b is None else min(a, b)


class BudgetReports:
    """When a node's budget statuses are worth writing (see the module docstring); times are monotonic seconds."""

    def __init__(self, *, change_s: float = REPORT_CHANGE_S, readings_s: float = REPORT_READINGS_S,
                 move: float = REPORT_MOVE) -> None:
        self._change_s = change_s
        self._readings_s = readings_s
        self._move = move
        self._written: list[BudgetStatus] | None = None
        self._power: NodePower | None = None
        self._written_at = -math.inf

    def due(self, budgets: Sequence[BudgetStatus], now: float, *, power: NodePower | None = None,
            scale: float = 0.0) -> bool:
        """Whether `budgets` (and the node's `power`, judged on `scale` watts) should be written now; call
        `written` once they are."""
        before = self._written
        if before is None or [(b.policy, b.watts) for b in before] != [(b.policy, b.watts) for b in budgets]:
            return True
        if (power is None) != (self._power is None):
            return True
        since = now - self._written_at
        if since >= self._change_s and any(_verdict(a) != _verdict(b) for a, b in zip(before, budgets, strict=True)):
            return True
        if since < self._readings_s:
            return False
        step = self._move * scale
        if power is not None and self._power is not None and (
                abs((power.mean or 0.0) - (self._power.mean or 0.0)) > step
                or abs((power.max or 0.0) - (self._power.max or 0.0)) > step):
            return True
        return any(self._moved(a, b) for a, b in zip(before, budgets, strict=True))

    def written(self, budgets: Sequence[BudgetStatus], now: float, *, power: NodePower | None = None) -> None:
        self._written = list(budgets)
        self._power = power
        self._written_at = now

    def _moved(self, before: BudgetStatus, after: BudgetStatus) -> bool:
        step = self._move * float(after.watts or 0)
        pairs = [(before.power_max, after.power_max), (before.power_mean, after.power_mean),
                 (before.floor, after.floor)]
        return any((a is None) != (b is None) or (a is not None and b is not None and abs(a - b) > step)
                   for a, b in pairs)


def _verdict(status: BudgetStatus) -> tuple[str | None, bool | None, bool, str | None]:
    return status.lever, status.met, status.floor is None, status.message
