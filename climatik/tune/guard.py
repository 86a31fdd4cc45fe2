"""The node guard: keeps every power budget of its node by itself, every fraction of a second, from the GPUs' own
power readings, with the two levers the hardware offers (climatik.tune.levers): per-GPU power limits, and clock
caps where a budget is under the power-limit floor or a GPU refuses limits.

The guard only ever lowers: a clock cap it sets is combined with the algorithm's target by taking the lower.
It keeps working from its last budget when the API server or Prometheus is unreachable.

`NodeGuard` keeps every budget of a node's spec over the node's devices: on each tick it reads the GPUs' power
once (`PowerDevices`), steps each budget (climatik.tune.budget.step), writes the limits that changed (a GPU that
refuses one is kept by its clock from then on, with the refusal in the budget's message), sets the clock caps
through `CappedGpus` (the backend the applier drives, which locks the lower of the algorithm's target and the
guard's cap), gives back the original limit of a GPU that leaves every budget, and reports one `BudgetStatus` per
budget. The tuner's guard thread (climatik.tune.guardloop) and the simulated-time benchmark both run it.

`BudgetReports` decides when those statuses (and the node's GPU power, which power domains count) are worth an
API write: at once when the budgets in the spec changed (the recommender waits for that acknowledgement before
it raises another node), within a second when a lever, whether the budget is met, or the floor changed, and
every few seconds at most when only the readings moved by a noticeable share of the budget (of the node's GPUs'
highest limits, for its power); a steady node costs no writes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from climatik.api.nodefrequencies import APPLIED, BudgetStatus, NodePower, PowerBudget
from climatik.tune.budget import PEAK_WINDOW_S, WINDOW_S, GpuReading, GuardState, Readings, Report, step
from climatik.tune.levers import CappedGpus, PowerDevices, PowerLimitError, PowerState

N = TypeVar("N", int, float)

#: Budget statuses: how soon a changed lever, verdict or floor is written, how often moved readings are, and
#: what share of the budget counts as moved.
REPORT_CHANGE_S = 1.0
REPORT_READINGS_S = 5.0
REPORT_MOVE = 0.05


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
        self._node = Readings(PEAK_WINDOW_S)
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
        readings = self._node
        peak = readings.add(now, sum(state.power for state in states.values()))
        return NodePower(mean=round(readings.mean(WINDOW_S), 1), max=round(peak, 1))

    def release(self) -> int:
        """Give back every limit and clock cap the guard set (budgets removed, tuner stopping); returns writes."""
        writes = self._write_limits({}, self._power.power_states())
        writes += self._write_caps({})
        self._states.clear()
        return writes

    def _reading(self, uuid: str, power: PowerState) -> GpuReading:
        takes = uuid not in self._refused and power.min_limit is not None and power.max_limit is not None
        clock = power.clock_mhz if power.clock_mhz is not None else self._clocks.current_clock(uuid)
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
            notes.append("the GPUs draw more than the budget held as low as they go (see floor)")
        return BudgetStatus(policy=budget.policy, watts=budget.watts, power_mean=report.power_mean,
                            power_max=report.power_max, lever=report.lever, met=report.met, floor=report.floor,
                            message="; ".join(notes) or None)

    def _write_limits(self, limits: Mapping[str, float | None], states: Mapping[str, PowerState]) -> int:
        """Set the limits, those that come down first: a split that moves watts from one GPU to another never
        adds up to more than the budget between two writes."""
        changes: list[tuple[bool, str, float, PowerState]] = []
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
            changes.append((power.limit is None or wanted > power.limit, uuid, wanted, power))
        writes = 0
        for _, uuid, wanted, power in sorted(changes, key=lambda change: change[:2]):
            # Recorded before the first change, so that a crash in between still gives it back.
            recorded = uuid not in self._originals and power.limit is not None
            if recorded and power.limit is not None:
                self._originals[uuid] = power.limit
            try:
                self._power.set_power_limit(uuid, wanted)
            except PowerLimitError as error:
                self._refused[uuid] = str(error)
                if recorded:
                    self._originals.pop(uuid, None)  # nothing changed: nothing to give back
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
