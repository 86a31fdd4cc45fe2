"""Sharing the power domains: from the PowerDomain objects, the nodes' labels, the policies and the NodeFrequencies
objects to the node budgets of every claimant in a domain (climatik.recommend.domains.share over the tree of
climatik.recommend.tree), and what each domain's status should say.

Who takes part: every policy that keeps node budgets (not ClocksOnly, not dry run) with GPUs on a domain's nodes,
with all its nodes (its own budget spans them); and, per domain, the GPUs on its nodes that no such policy
budgets (no policy selects them, or one that only sets clocks), at the domain's default priority, under the key
`PowerDomain/<the deepest domain of their node>`: the domain's total holds only if every GPU is under a budget.
Their demand is what their node draws beyond the policies' budgets, until their own budget is reported.

A domain's power is what its nodes' tuners read (NodeFrequencies status.power): every GPU, whether budgeted or
not. A node that does not report it makes MetricsAvailable False, naming it.

A split is computed at most every `interval` seconds (the recommender is woken by every tuner's status; a split
costs tens of milliseconds at a thousand nodes): a pass within the interval reuses the last split and asks to
be woken when it ends, unless nothing it reads has changed. An edited domain (a budget lowered by hand or by a
facility's hook) is split at once: a lower budget is a promise from the moment it is written. So is a domain that a
policy newly keeps budgets in: until the split includes it, the policy would split its own budget over those nodes
as if no domain held them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from climatik.api import GpuInventory, NodeFrequencies, PowerBudget, PowerCappingPolicy
from climatik.api.domain import PowerDomain
from climatik.api.nodefrequencies import CLOCK_CAP, POWER_LIMIT
from climatik.recommend.budgets import PRESSED, NodeDemand, floor_of, node_demands
from climatik.recommend.domains import Claimant, DomainAllocation, share, unselected_key
from climatik.recommend.tree import Tree, resolve

#: Seconds between two splits, at least.
DEFAULT_INTERVAL = 1.0


@dataclass(frozen=True)
class DomainPower:
    """What a domain's nodes' tuners read: the sum (W; None when none reports) and the nodes that do not report."""

    watts: float | None
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Shared:
    """The last split: the tree, the allocation, every claimant's node budgets after it, each domain's power, and
    when it was computed (UNIX time)."""

    tree: Tree
    allocation: DomainAllocation
    budgets: dict[str, dict[str, PowerBudget]] = field(default_factory=dict)
    power: dict[str, DomainPower] = field(default_factory=dict)
    at: float = 0.0

    def takes_part(self, key: str) -> bool:
        """Whether a policy's budgets come from the split."""
        return key in self.budgets

    @property
    def unselected(self) -> dict[str, dict[str, PowerBudget]]:
        """The budgets of the domains' GPUs that no policy budgets, by claimant key then node."""
        return {key: budgets for key, budgets in self.budgets.items() if key.startswith("PowerDomain/")}


class Sharing:
    """Keeps the last split and decides when to compute the next; not thread-safe (the recommender's core holds
    its lock around it)."""

    def __init__(self, *, interval: float = DEFAULT_INTERVAL) -> None:
        self.interval = interval
        self.last: Shared | None = None
        self._inputs: tuple[object, ...] | None = None

    def update(self, domains: Sequence[PowerDomain], node_labels: Mapping[str, Mapping[str, str]],
               policies: Mapping[str, PowerCappingPolicy], nodes: Sequence[NodeFrequencies], *, now: dt.datetime,
               late: Collection[str] = ()) -> tuple[Shared | None, float | None]:
        """The split to use now (None: there are no domains), and when to look again (None: no need)."""
        if not domains:
            self.last, self._inputs = None, None
            return None, None
        inputs = _versions(domains, node_labels, policies, nodes)
        moment = now.timestamp()
        if self.last is not None and inputs == self._inputs:
            return self.last, None
        edited = self._inputs is None or inputs[0] != self._inputs[0] or _newcomer(self.last, policies)
        if self.last is not None and not edited and moment - self.last.at < self.interval:
            return self.last, self.interval - (moment - self.last.at)
        self.last = split(domains, node_labels, policies, nodes, now=now, late=late)
        self._inputs = inputs
        return self.last, None


def split(domains: Sequence[PowerDomain], node_labels: Mapping[str, Mapping[str, str]],
          policies: Mapping[str, PowerCappingPolicy], nodes: Sequence[NodeFrequencies], *, now: dt.datetime,
          late: Collection[str] = ()) -> Shared:
    """One split of every domain (see the module docstring)."""
    tree = resolve(domains, node_labels, now)
    inside = {node for domain in tree.split for node in domain.nodes}
    by_name = {_node_name(node): node for node in nodes}
    claimants: list[Claimant] = []
    cells: dict[tuple[str, str], NodeDemand] = {}
    gpu_sets: dict[tuple[str, str], list[str]] = {}
    budgeted: set[str] = set()
    for key, policy in sorted(policies.items()):
        gpus = _budgeted_gpus(policy)
        if not gpus or not inside & set(gpus):
            continue
        spec = policy.spec
        claimants.append(Claimant(key=key, budget=spec.threshold_watts, priority=spec.priority or 0,
                                  guarantee=float(spec.guaranteed_watts or 0)))
        for demand in node_demands(policy, gpus, nodes, late=late, by_name=by_name):
            cells[(key, demand.node)] = demand
            gpu_sets[(key, demand.node)] = sorted(gpus[demand.node])
        budgeted |= {uuid for uuids in gpus.values() for uuid in uuids}
    for node in sorted(inside):
        leaf = tree.leaf_of(node)
        obj = by_name.get(node)
        rest = [gpu for gpu in _inventory(obj) if gpu.uuid not in budgeted]
        if leaf is None or not rest:
            continue
        key = unselected_key(leaf)
        domain = next(d for d in domains if d.name == leaf)
        if all(c.key != key for c in claimants):
            claimants.append(Claimant(key=key, priority=domain.spec.default_priority or 0))
        cells[(key, node)] = _unselected(key, node, obj, rest, cells=cells, late=late)
        gpu_sets[(key, node)] = sorted(gpu.uuid for gpu in rest)
    allocation = share(claimants, tree.split, cells)
    budgets: dict[str, dict[str, PowerBudget]] = {}
    for cell, demand in cells.items():
        watts = allocation.budgets.get(cell, demand.current)
        if watts is not None:
            budgets.setdefault(cell[0], {})[cell[1]] = PowerBudget(policy=cell[0], watts=watts,
                                                                   gpu_ids=gpu_sets[cell])
    power = {name: _power(resolved.nodes, by_name) for name, resolved in tree.domains.items()}
    return Shared(tree=tree, allocation=allocation, budgets=budgets, power=power, at=now.timestamp())


def _newcomer(last: Shared | None, policies: Mapping[str, PowerCappingPolicy]) -> bool:
    """Whether a policy keeps budgets on a domain's nodes but has no part in the last split."""
    if last is None:
        return False
    inside = {node for domain in last.tree.split for node in domain.nodes}
    return any(key not in last.budgets and inside.intersection(_budgeted_gpus(policy))
               for key, policy in policies.items())


def _budgeted_gpus(policy: PowerCappingPolicy) -> dict[str, list[str]]:
    """The GPUs a policy keeps node budgets over, by node (none for ClocksOnly, dry run, or a policy going)."""
    spec = policy.spec
    if not spec.node_budgets or spec.dry_run or policy.metadata.deletion_timestamp is not None:
        return {}
    gpus = {node.name: [gpu.uuid for gpu in node.gpus or [] if gpu.mig_instance is None]
            for node in (policy.status.nodes or [] if policy.status else [])}
    return {name: uuids for name, uuids in gpus.items() if uuids}


def _unselected(key: str, node: str, obj: NodeFrequencies | None, gpus: Sequence[GpuInventory], *,
                cells: Mapping[tuple[str, str], NodeDemand], late: Collection[str]) -> NodeDemand:
    """The demand of a node's GPUs that no policy budgets: their own report, else what the node draws beyond the
    policies' reports."""
    current = next((b.watts for b in (obj.spec.power_budgets or [] if obj else []) if b.policy == key), None)
    report = next((b for b in (obj.status.budgets or [] if obj and obj.status else []) if b.policy == key), None)
    acknowledged = current if _acknowledged(obj) else (report.watts if report else None)
    if report is not None and report.power_max is not None:
        demand: float | None = report.power_max
        pressed = bool(report.lever in (POWER_LIMIT, CLOCK_CAP) and report.watts
                       and report.power_max >= PRESSED * report.watts)
    else:
        node_power = obj.status.power if obj and obj.status else None
        others = sum(c.demand or 0.0 for (_, name), c in cells.items() if name == node)
        demand = max(node_power.max - others, 0.0) if node_power and node_power.max is not None else None
        pressed = False
    limits = [gpu.max_power_limit or gpu.power_limit for gpu in gpus]
    ceiling = float(sum(limit or 0 for limit in limits)) if all(limits) else math.inf
    return NodeDemand(node=node, floor=floor_of(report, gpus), ceiling=ceiling, demand=demand, pressed=pressed,
                      current=current, acknowledged=acknowledged, reporting=node not in late,
                      measured=report.power_mean if report else None)


def _power(members: frozenset[str], by_name: Mapping[str, NodeFrequencies]) -> DomainPower:
    total, missing = 0.0, []
    for node in sorted(members):
        obj = by_name.get(node)
        power = obj.status.power if obj is not None and obj.status is not None else None
        if power is None or power.mean is None:
            missing.append(node)
        else:
            total += power.mean
    reported = len(members) - len(missing)
    return DomainPower(watts=round(total, 1) if reported else None, missing=tuple(missing))


def _inventory(obj: NodeFrequencies | None) -> list[GpuInventory]:
    return list(obj.inventory.gpus or []) if obj is not None and obj.inventory is not None else []


def _acknowledged(obj: NodeFrequencies | None) -> bool:
    if obj is None or obj.status is None:
        return False
    observed, generation = obj.status.observed_generation, obj.metadata.generation
    return observed is not None and generation is not None and observed >= generation


def _node_name(node: NodeFrequencies) -> str:
    return node.spec.node_name or node.metadata.name


def _versions(domains: Sequence[PowerDomain], node_labels: Mapping[str, Mapping[str, str]],
              policies: Mapping[str, PowerCappingPolicy], nodes: Sequence[NodeFrequencies]) -> tuple[object, ...]:
    """What a split reads, as a comparable value (resource versions, and the labels themselves)."""
    return (
        tuple(sorted((d.name, d.metadata.resource_version, d.metadata.generation) for d in domains)),
        tuple(sorted((name, tuple(sorted(labels.items()))) for name, labels in node_labels.items())),
        tuple(sorted((key, p.metadata.resource_version) for key, p in policies.items())),
        tuple(sorted((_node_name(n), n.metadata.resource_version) for n in nodes)),
    )
