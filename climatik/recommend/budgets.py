"""Per-node power budgets: one policy's budget split over the nodes its GPUs run on, following demand, and moved
so that the budgets' sum never exceeds the policy's budget, in flight either.

The policy's budget is the threshold share of its limit, what the algorithms aim at. Each node's tuner keeps its
budget by itself, within a second, from its own power readings; the recommender only decides the split:

* What each node wants: the highest power its GPUs drew over the last second, as its tuner reports it, plus a
  little headroom; a node held at its budget (pressed) may want more than it can show, so it asks for a step
  more. A node that has not reported yet wants what the monitor last observed there. Wants stay within what the
  GPUs can draw at all (their floor and their ceiling, the sums of their lowest and highest power limits).
* If the wants fit, every node gets its want and the rest of the budget is handed out in proportion to the room
  each node has left, so that a burst finds headroom already in place. If they do not fit, every node keeps its
  floor and the rest is shared in proportion to what each wants above it; if not even the floors fit, the
  budget cannot be met, which is reported, and the floors are shared in proportion.
* Moves are safe in flight: a node's tuner may keep enforcing its previous budget until it acknowledges the new
  spec, so a node counts at the larger of its written and its acknowledged budget. Budgets are lowered at once;
  a node is raised only from what is left once every other node is counted that way, so a donor is lowered
  first and the receiver raised only once the donor's tuner has acknowledged. A node whose tuner has stopped
  reporting keeps its budget; a new node starts from what is free.
* Small moves are not worth an API write: a node's budget changes only when its new share differs by more than
  `min_change` of the policy's budget, or when it must come down.

Pure: the recommender calls it on every pass, and the simulated-time benchmark runs the same function.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from climatik.algorithms.model import IDLE_SHARE
from climatik.api import BudgetStatus, GpuInventory, NodeFrequencies, PowerCappingPolicy
from climatik.api.nodefrequencies import CLOCK_CAP, POWER_LIMIT

#: Headroom over the highest recent reading a node asks for.
HEADROOM = 0.05
#: A node whose highest recent reading is this close to its budget is held by it (pressed) ...
PRESSED = 0.97
#: ... and asks for this much more than its budget, to find out how much it wants.
PRESSED_STEP = 0.2


@dataclass(frozen=True)
class NodeDemand:
    """One node, as far as one policy is concerned.

    `floor` and `ceiling` bound what the policy's GPUs there can be held to and can draw (W). `demand` is the
    highest power they drew over the last second (None: not known yet), `pressed` whether they are held at their
    budget. `current` is the budget in the node's spec now, `acknowledged` the one its tuner confirmed keeping
    (None: none yet), `reporting` whether the tuner is answering at all.
    """

    node: str
    floor: float
    ceiling: float = math.inf
    demand: float | None = None
    pressed: bool = False
    current: int | None = None
    acknowledged: int | None = None
    reporting: bool = True
    #: The mean power the tuner measured over its last second (None: no report yet), for the policy's status.
    measured: float | None = None

    @property
    def in_flight(self) -> int:
        """The most this node may be drawing under its budgets: the larger of the written and acknowledged one."""
        return max(self.current or 0, self.acknowledged or 0)


@dataclass(frozen=True)
class Allocation:
    """The budgets to write (nodes left out keep theirs), the split that was aimed at, the nodes whose raise waits
    for another node's tuner, and the floor when the budget cannot be met (None when it can)."""

    budgets: dict[str, int]
    wanted: dict[str, int] = field(default_factory=dict)
    waiting: tuple[str, ...] = ()
    infeasible_floor: float | None = None


def allocate(total: float, nodes: Sequence[NodeDemand], *, min_change: float = 0.02) -> Allocation:
    """Split `total` watts over `nodes` (see the module docstring)."""
    total = max(total, 0.0)
    fixed = [n for n in nodes if not n.reporting and n.current is not None]
    free = [n for n in nodes if n not in fixed]
    available = max(total - sum(n.in_flight for n in fixed), 0.0)
    wanted, infeasible = _split(available, free)
    floors = sum(n.floor for n in nodes)
    if floors > total:
        infeasible = floors
    chosen = _settled(free, wanted, available, total * min_change)
    budgets, waiting = _in_flight(total, nodes, fixed, chosen)
    return Allocation(budgets=budgets, wanted={name: int(w) for name, w in wanted.items()},
                      waiting=tuple(sorted(waiting)), infeasible_floor=infeasible)


def want(node: NodeDemand) -> float:
    """What a node asks for: its highest recent draw and some headroom, more when it is held at its budget."""
    if node.demand is None:
        base = float(node.current) if node.current is not None else node.floor
    elif node.pressed and node.current is not None:
        base = max(node.demand * (1.0 + HEADROOM), node.current * (1.0 + PRESSED_STEP))
    else:
        base = node.demand * (1.0 + HEADROOM)
    return min(max(base, node.floor), node.ceiling)


def _split(available: float, nodes: Sequence[NodeDemand]) -> tuple[dict[str, float], float | None]:
    wants = {n.node: want(n) for n in nodes}
    need = sum(wants.values())
    floors = sum(n.floor for n in nodes)
    if need <= available:
        return _hand_out(available - need, nodes, wants), None
    if floors > available:
        scale = available / floors if floors > 0 else 0.0
        return {n.node: n.floor * scale for n in nodes}, floors
    above = sum(wants[n.node] - n.floor for n in nodes)
    share = (available - floors) / above if above > 0 else 0.0
    return {n.node: n.floor + (wants[n.node] - n.floor) * share for n in nodes}, None


def _hand_out(surplus: float, nodes: Sequence[NodeDemand], wants: dict[str, float]) -> dict[str, float]:
    """`wants` plus the surplus, in proportion to the room each node has under its ceiling (evenly when no
    ceiling is known)."""
    rooms = {n.node: n.ceiling - wants[n.node] for n in nodes}
    if any(math.isinf(room) for room in rooms.values()):
        return {name: w + surplus / len(wants) for name, w in wants.items()} if wants else {}
    room = sum(rooms.values())
    if room <= 0:
        return dict(wants)
    return {name: w + min(surplus * rooms[name] / room, rooms[name]) for name, w in wants.items()}


def _settled(nodes: Sequence[NodeDemand], wanted: dict[str, float], available: float,
             min_change: float) -> dict[str, int]:
    """The budget to give each node: its share, or what it has when the difference is not worth a write; but if
    what they have no longer fits (the limit went down), those that must come down do."""
    shares = {n.node: math.floor(wanted[n.node]) for n in nodes}
    settled = {n.node: shares[n.node] if n.current is None or abs(shares[n.node] - n.current) > min_change
               else n.current for n in nodes}
    if sum(settled.values()) > available:
        settled = {name: min(budget, shares[name]) for name, budget in settled.items()}
    return settled


def _in_flight(total: float, nodes: Sequence[NodeDemand], fixed: Sequence[NodeDemand],
               chosen: dict[str, int]) -> tuple[dict[str, int], list[str]]:
    """Lower at once; raise only from what is left with every node at the larger of its written and acknowledged
    budget, the most pressed first."""
    by_name = {n.node: n for n in nodes}
    counted = {n.node: n.in_flight for n in fixed}
    budgets: dict[str, int] = {}
    raises = []
    for name, budget in chosen.items():
        node = by_name[name]
        if node.current is not None and budget <= node.current:
            counted[name] = max(budget, node.acknowledged or 0) if budget < node.current else node.in_flight
            if budget != node.current:
                budgets[name] = budget
        else:
            counted[name] = node.in_flight
            raises.append(name)
    waiting = []
    for name in sorted(raises, key=lambda n: (-_pressure(by_name[n]), n)):
        node = by_name[name]
        room = math.floor(total - sum(v for other, v in counted.items() if other != name))
        budget = max(min(chosen[name], room), node.current or 0)
        if budget < chosen[name]:
            waiting.append(name)
        if node.current is None or budget != node.current:
            budgets[name] = budget
        counted[name] = max(budget, node.acknowledged or 0)
    return budgets, waiting


def _pressure(node: NodeDemand) -> float:
    if node.demand is None or not node.current:
        return 0.0
    return node.demand / node.current


def node_demands(policy: PowerCappingPolicy, gpus: Mapping[str, Sequence[str]], nodes: Sequence[NodeFrequencies],
                 *, late: Collection[str] = (), by_name: Mapping[str, NodeFrequencies] | None = None
                 ) -> list[NodeDemand]:
    """Each node of `policy` (with its GPUs there, `gpus`) as `allocate` sees it, from the NodeFrequencies objects:
    the budget in the spec, the tuner's report of it (what the GPUs drew, whether they are held at it, the floor)
    and whether the tuner acknowledged the spec; the monitor's observation where the tuner has not reported."""
    if by_name is None:
        by_name = {node.spec.node_name or node.metadata.name: node for node in nodes}
    observed = {node.name: node.power for node in (policy.status.nodes or [] if policy.status else [])}
    demands = []
    for name, uuids in sorted(gpus.items()):
        obj = by_name.get(name)
        inventory = [gpu for gpu in (obj.inventory.gpus or [] if obj and obj.inventory else []) if gpu.uuid in uuids]
        current = _spec_budget(obj, policy.key)
        report = _reported(obj, policy.key)
        acknowledged = current if _acknowledged(obj) else (report.watts if report else None)
        demand = report.power_max if report and report.power_max is not None else observed.get(name)
        pressed = bool(report and report.lever in (POWER_LIMIT, CLOCK_CAP) and report.power_max is not None
                       and report.watts and report.power_max >= PRESSED * report.watts)
        demands.append(NodeDemand(
            node=name, floor=floor_of(report, inventory), ceiling=_ceiling(inventory, len(uuids)), demand=demand,
            pressed=pressed, current=current, acknowledged=acknowledged, reporting=name not in late,
            measured=report.power_mean if report else None))
    return demands


def _spec_budget(node: NodeFrequencies | None, key: str) -> int | None:
    budgets = node.spec.power_budgets or [] if node else []
    return next((b.watts for b in budgets if b.policy == key), None)


def _reported(node: NodeFrequencies | None, key: str) -> BudgetStatus | None:
    reports = node.status.budgets or [] if node and node.status else []
    return next((report for report in reports if report.policy == key), None)


def _acknowledged(node: NodeFrequencies | None) -> bool:
    if node is None or node.status is None:
        return False
    observed, generation = node.status.observed_generation, node.metadata.generation
    return observed is not None and generation is not None and observed >= generation


def floor_of(report: BudgetStatus | None, inventory: Sequence[GpuInventory]) -> float:
    """The least a budget can hold the GPUs to: the tuner's measured floor (what they draw at their lowest clock);
    until one is measured, their lowest power limits (what the firmware holds without measuring anything), or what
    they draw when that is less. A guess under what busy GPUs really draw would have a domain's cut land where it
    cannot be kept, and the domain stay over its budget until the tuner measures the floor; a GPU without a known
    lowest limit counts its idle power (a tenth of its board limit)."""
    if report is not None and report.floor is not None:
        return report.floor
    lowest = float(sum(gpu.min_power_limit or IDLE_SHARE * (gpu.power_limit or 0) for gpu in inventory))
    drawn = report.power_mean if report is not None else None
    return min(lowest, drawn) if drawn is not None else lowest


def _ceiling(inventory: Sequence[GpuInventory], gpus: int) -> float:
    limits = [gpu.max_power_limit or gpu.power_limit for gpu in inventory]
    if len(limits) < gpus or any(limit is None for limit in limits):
        return math.inf
    return float(sum(limit or 0 for limit in limits))
