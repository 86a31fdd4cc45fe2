"""Power domains: the node budgets of every policy on a tree of rack, row and hall budgets, with priorities,
guarantees and lending; one pure function (`share`) that the recommender calls on every pass and the
simulated-time benchmark runs as is.

Whoever holds node budgets is a *claimant*: a policy (its own budget is the threshold share of its limit), or a
domain's GPUs that no policy selects (no budget of their own; the domain's default priority). A claimant's share
on one node is a *cell*, described as `budgets.NodeDemand` is for one policy (floor, ceiling, recent demand,
whether it is held at its budget, the budget written and the one its tuner acknowledged). Every cell is under
its claimant's budget and under the budget of every domain whose nodes include its node, so a child domain never
gets more than its parent, and no domain more than its budget.

The split, in tiers, each handed out as far as every budget a cell is under allows, in proportion to what the
cells still ask for:

1. floors: the least each cell's GPUs can be held to (their lowest power limits, or what they draw at their
   lowest clocks); where the floors exceed a budget it cannot be met (reported, floors shared in proportion);
2. guarantees: each policy's guarantee, as far as it wants it (an unused guarantee is not reserved);
3. wants (`budgets.want`: recent peak and headroom, more when held at the budget), priority by priority, the
   highest first: when the budget falls, the lowest priority is cut first;
4. lending: what is left goes to cells held at their budget, then to everyone by the room under their ceiling,
   so that a burst finds headroom in place. It is *borrowed*: the next pass (woken by the owner's tuner
   reporting its demand) takes it back in tier 3.

Budgets then move as `budgets.allocate` moves them: a change smaller than `min_change` of the smallest budget a
cell is under is not written (unless it must come down); cuts are written at once, and a raise only from what
every budget it is under has left with every other cell at the larger of its written and acknowledged budget,
so the sum under any budget never exceeds it in flight either. A cell whose tuner stopped reporting keeps its
budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from climatik.recommend.budgets import NodeDemand, want

#: A cell: (claimant key, node name).
Cell = tuple[str, str]
#: The key under which a domain's GPUs that no policy selects hold their budgets.
UNSELECTED_PREFIX = "PowerDomain/"
_EPSILON = 1e-6
_ROUNDS = 12


def unselected_key(domain: str) -> str:
    """The claimant key of a domain's GPUs that no policy selects (never a policy's: namespaces are lower case)."""
    return f"{UNSELECTED_PREFIX}{domain}"


@dataclass(frozen=True)
class Claimant:
    """A policy, or a domain's unselected GPUs: its own budget (inf: none), priority and guarantee (W)."""

    key: str
    budget: float = math.inf
    priority: int = 0
    guarantee: float = 0.0


@dataclass(frozen=True)
class Domain:
    """A domain as the split sees it: its budget in force (W), its nodes and its parent."""

    name: str
    budget: float
    nodes: frozenset[str]
    parent: str | None = None


@dataclass(frozen=True)
class Share:
    """One claimant (or child domain) within a domain: its budgets there after this pass, the part lent, its
    guarantee, and what it asked for."""

    watts: float
    borrowed: float = 0.0
    guaranteed: float = 0.0
    demand: float = 0.0


@dataclass(frozen=True)
class DomainReport:
    """How a domain's budget was shared out this pass."""

    name: str
    budget: float
    allocated: float
    borrowed: float
    demand: float
    floors: float
    claimants: dict[str, Share]
    children: dict[str, Share]
    #: Policies whose guarantees (their part on this domain's nodes) add up to more than the budget.
    overcommitted: tuple[str, ...] = ()
    #: The floors, when they exceed the budget (None: it can be met).
    infeasible_floor: float | None = None


@dataclass(frozen=True)
class DomainAllocation:
    """The budgets to write (cells left out keep theirs), the split aimed at, the cells whose raise waits for
    another tuner, and a report per domain and per claimant (the sum of its budgets after this pass)."""

    budgets: dict[Cell, int]
    wanted: dict[Cell, int] = field(default_factory=dict)
    waiting: tuple[Cell, ...] = ()
    domains: dict[str, DomainReport] = field(default_factory=dict)
    claimed: dict[str, float] = field(default_factory=dict)
    infeasible: dict[str, float] = field(default_factory=dict)


def share(claimants: Sequence[Claimant], domains: Sequence[Domain], cells: Mapping[Cell, NodeDemand], *,
          min_change: float = 0.02) -> DomainAllocation:
    """Split the budgets over `cells` (see the module docstring). Cells of claimants not listed are ignored."""
    return _Split(claimants, domains, cells, min_change).run()


@dataclass
class _Limit:
    """One budget cells are under: a claimant's or a domain's."""

    name: str
    capacity: float
    cells: list[Cell]


class _Split:
    """One pass of `share`: the cells, the budgets they are under, and what has been given so far."""

    def __init__(self, claimants: Sequence[Claimant], domains: Sequence[Domain], cells: Mapping[Cell, NodeDemand],
                 min_change: float) -> None:
        self.claimants = {claimant.key: claimant for claimant in claimants}
        self.domains = list(domains)
        self.cells = {cell: demand for cell, demand in cells.items() if cell[0] in self.claimants}
        self.min_change = min_change
        self.by_claimant: dict[str, list[Cell]] = {}
        self.by_node: dict[str, list[Cell]] = {}
        for cell in sorted(self.cells):
            self.by_claimant.setdefault(cell[0], []).append(cell)
            self.by_node.setdefault(cell[1], []).append(cell)
        self.limits = self._limits()
        self.under: dict[Cell, list[str]] = {}
        for limit in self.limits.values():
            for cell in limit.cells:
                self.under.setdefault(cell, []).append(limit.name)
        self.fixed = {cell for cell, demand in self.cells.items()
                      if not demand.reporting and demand.current is not None}
        self.free = [cell for cell in sorted(self.cells) if cell not in self.fixed]
        self.rooms = {name: max(limit.capacity - sum(self.cells[c].in_flight for c in limit.cells if c in self.fixed),
                                0.0) for name, limit in self.limits.items()}
        self.wants = {cell: want(self.cells[cell]) for cell in self.free}
        self.given: dict[Cell, float] = dict.fromkeys(self.free, 0.0)

    def run(self) -> DomainAllocation:
        infeasible = self._floors()
        self._guarantees()
        for priority in sorted({self.claimants[c[0]].priority for c in self.free}, reverse=True):
            level = [c for c in self.free if self.claimants[c[0]].priority == priority]
            self._fill({c: self.wants[c] - self.given[c] for c in level})
        entitled = dict(self.given)
        pressed = [c for c in self.free if self.cells[c].pressed]
        self._fill({c: self._room(c) for c in pressed})
        self._fill({c: self._room(c) for c in self.free})
        targets = self._settled({cell: math.floor(watts) for cell, watts in self.given.items()})
        budgets, waiting = self._in_flight(targets)
        after = {cell: float(budgets.get(cell, demand.current or 0)) for cell, demand in self.cells.items()}
        borrowed = {c: max(self.given[c] - max(entitled[c], self.wants[c]), 0.0) for c in self.free}
        return DomainAllocation(
            budgets=budgets, wanted=targets, waiting=tuple(sorted(waiting)),
            domains=self._reports(after, borrowed),
            claimed={key: sum(after[c] for c in self.by_claimant.get(key, [])) for key in self.claimants},
            infeasible={name.split(":", 1)[1]: floors for name, floors in infeasible.items()
                        if name.startswith("claimant:")},
        )

    def _limits(self) -> dict[str, _Limit]:
        limits = [_Limit(f"claimant:{key}", claimant.budget, self.by_claimant.get(key, []))
                  for key, claimant in self.claimants.items() if math.isfinite(claimant.budget)]
        limits += [_Limit(f"domain:{domain.name}", domain.budget, self._inside(domain)) for domain in self.domains]
        return {limit.name: limit for limit in limits if limit.cells}

    def _floors(self) -> dict[str, float]:
        """Give every cell its floor, scaled down where the floors exceed a budget; return those budgets' floors."""
        infeasible = {}
        scale: dict[Cell, float] = dict.fromkeys(self.free, 1.0)
        for name, limit in self.limits.items():
            floors = sum(self.cells[c].floor for c in limit.cells if c in self.given)
            if floors > self.rooms[name] + _EPSILON:
                infeasible[name] = floors
                ratio = self.rooms[name] / floors if floors > 0 else 0.0
                for cell in limit.cells:
                    if cell in scale:
                        scale[cell] = min(scale[cell], ratio)
        for cell in self.free:
            self.given[cell] = self.cells[cell].floor * scale[cell]
            for name in self.under.get(cell, []):
                self.rooms[name] -= self.given[cell]
        return infeasible

    def _guarantees(self) -> None:
        """Raise each guaranteed claimant towards its guarantee, as far as it wants."""
        asks: dict[Cell, float] = {}
        for key, claimant in self.claimants.items():
            mine = [c for c in self.by_claimant.get(key, []) if c in self.given]
            if claimant.guarantee <= 0 or not mine:
                continue
            above = {c: max(self.wants[c] - self.given[c], 0.0) for c in mine}
            missing = min(claimant.guarantee, sum(self.wants[c] for c in mine)) - sum(self.given[c] for c in mine)
            total = sum(above.values())
            if missing > 0 and total > 0:
                asks.update({c: above[c] * min(missing / total, 1.0) for c in mine})
        self._fill(asks)

    def _fill(self, asks: Mapping[Cell, float]) -> None:
        """Give each cell up to its ask, as far as every budget it is under has room; where a budget is short, its
        room goes in proportion to the asks. Repeated, so that room one budget could not use goes to the others."""
        pending = {cell: ask for cell, ask in asks.items() if ask > _EPSILON}
        for _ in range(_ROUNDS):
            if not pending:
                return
            demand: dict[str, float] = {}
            for cell, ask in pending.items():
                for name in self.under.get(cell, []):
                    demand[name] = demand.get(name, 0.0) + ask
            factor = {name: min(1.0, max(self.rooms[name], 0.0) / total) if total > 0 else 1.0
                      for name, total in demand.items()}
            moved = 0.0
            for cell, ask in list(pending.items()):
                step = ask * min((factor[name] for name in self.under.get(cell, [])), default=1.0)
                if step <= _EPSILON:
                    continue
                self.given[cell] += step
                moved += step
                for name in self.under.get(cell, []):
                    self.rooms[name] -= step
                pending[cell] = ask - step
            pending = {cell: ask for cell, ask in pending.items()
                       if ask > _EPSILON and all(self.rooms[name] > _EPSILON for name in self.under.get(cell, []))}
            if moved <= _EPSILON:
                return

    def _room(self, cell: Cell) -> float:
        """What a cell can still take: up to its ceiling (without a known ceiling, its want once more)."""
        demand, given = self.cells[cell], self.given[cell]
        ceiling = demand.ceiling if math.isfinite(demand.ceiling) else given + self.wants[cell]
        return max(ceiling - given, 0.0)

    def _settled(self, targets: dict[Cell, int]) -> dict[Cell, int]:
        """Keep a cell's budget where the change is not worth a write; where what is kept no longer fits a budget,
        the cells under it take their new share."""
        settled = {}
        for cell in self.free:
            current = self.cells[cell].current
            step = self.min_change * min((self.limits[name].capacity for name in self.under.get(cell, [])),
                                         default=math.inf)
            small = current is not None and abs(targets[cell] - current) <= step
            settled[cell] = current if small and current is not None else targets[cell]
        for limit in self.limits.values():
            members = [c for c in limit.cells if c in settled]
            if sum(settled[c] for c in members) > limit.capacity:
                for cell in members:
                    settled[cell] = min(settled[cell], targets[cell])
        return settled

    def _in_flight(self, targets: Mapping[Cell, int]) -> tuple[dict[Cell, int], list[Cell]]:
        """Lower at once; raise only from what every budget a cell is under has left with every other cell at the
        larger of its written and acknowledged budget: the highest priority, then the most pressed, first."""
        counted = {cell: float(self.cells[cell].in_flight) for cell in self.fixed}
        budgets: dict[Cell, int] = {}
        raises = []
        for cell, target in targets.items():
            demand = self.cells[cell]
            if demand.current is not None and target <= demand.current:
                counted[cell] = float(max(target, demand.acknowledged or 0)) if target < demand.current \
                    else float(demand.in_flight)
                if target != demand.current:
                    budgets[cell] = target
            else:
                counted[cell] = float(demand.in_flight)
                raises.append(cell)
        totals = {name: sum(counted.get(c, 0.0) for c in limit.cells) for name, limit in self.limits.items()}
        waiting = []
        order = sorted(raises, key=lambda c: (-self.claimants[c[0]].priority, -_pressure(self.cells[c]), c))
        for cell in order:
            demand = self.cells[cell]
            names = self.under.get(cell, [])
            room = min((self.limits[name].capacity - (totals[name] - counted[cell]) for name in names),
                       default=math.inf)
            budget = max(min(targets[cell], math.floor(room)), demand.current or 0)
            if budget < targets[cell]:
                waiting.append(cell)
            if demand.current is None or budget != demand.current:
                budgets[cell] = budget
            now_counted = float(max(budget, demand.acknowledged or 0))
            for name in names:
                totals[name] += now_counted - counted[cell]
            counted[cell] = now_counted
        return budgets, waiting

    def _reports(self, after: Mapping[Cell, float], borrowed: Mapping[Cell, float]) -> dict[str, DomainReport]:
        """Every domain's report, from one pass over the cells (each counted in every domain its node is in)."""
        within: dict[str, list[str]] = {}
        for domain in self.domains:
            for node in domain.nodes:
                within.setdefault(node, []).append(domain.name)
        totals = {d.name: [0.0, 0.0, 0.0, 0.0] for d in self.domains}  # allocated, borrowed, demand, floors
        shares: dict[str, dict[str, list[float]]] = {d.name: {} for d in self.domains}
        asked: dict[str, float] = {}
        for cell, demand in self.cells.items():
            wanted = self.wants.get(cell, 0.0)
            asked[cell[0]] = asked.get(cell[0], 0.0) + self.wants.get(cell, demand.floor)
            figures = (after[cell], borrowed.get(cell, 0.0), wanted, demand.floor)
            for name in within.get(cell[1], []):
                total = totals[name]
                for i, value in enumerate(figures):
                    total[i] += value
                share = shares[name].setdefault(cell[0], [0.0, 0.0, 0.0, 0.0])
                share[0] += figures[0]
                share[1] += figures[1]
                share[2] += figures[2]
                share[3] += self.wants.get(cell, demand.floor)
        reports = {}
        for domain in self.domains:
            allocated, lent, wanted, floors = totals[domain.name]
            mine = shares[domain.name]
            guarantees = {key: self.claimants[key].guarantee * (s[3] / asked[key] if asked[key] > 0 else 1.0)
                          for key, s in mine.items()}
            over = sum(guarantees.values()) > domain.budget + _EPSILON
            children = {child.name: Share(watts=totals[child.name][0], borrowed=round(totals[child.name][1], 1),
                                          demand=round(totals[child.name][2], 1))
                        for child in self.domains if child.parent == domain.name}
            reports[domain.name] = DomainReport(
                name=domain.name, budget=domain.budget, allocated=allocated, borrowed=round(lent, 1),
                demand=round(wanted, 1), floors=floors,
                claimants={key: Share(watts=s[0], borrowed=round(s[1], 1), guaranteed=self.claimants[key].guarantee,
                                      demand=round(s[2], 1)) for key, s in sorted(mine.items())},
                children=children,
                overcommitted=tuple(sorted(k for k, g in guarantees.items() if g > 0)) if over else (),
                infeasible_floor=floors if floors > domain.budget + _EPSILON and mine else None,
            )
        return reports

    def _inside(self, domain: Domain) -> list[Cell]:
        return [cell for node in sorted(domain.nodes) for cell in self.by_node.get(node, [])]


def _pressure(demand: NodeDemand) -> float:
    if demand.demand is None or not demand.current:
        return 0.0
    return demand.demand / demand.current
