"""Planning across policies: from every policy's targets to the desired spec of every NodeFrequencies object.

Rules, applied the same way on every pass so that a steady cluster yields identical specs:

* A policy that is being deleted or runs in dry-run contributes no entries; entries of policies that no longer
  exist, and entries that name no policy, are dropped (the recommender owns NodeFrequencies specs).
* A policy with no output this pass (invalid spec, failed algorithm, not run yet) keeps the entries it holds:
  holding the last safe caps is safer than releasing them.
* A GPU claimed by several policies (each claims the GPUs its pods use and those it targets) is driven by one:
  the higher spec.priority, then the older creationTimestamp, then the lower namespace/name. Every such GPU is
  reported as a Conflict so that both policies can say so in a condition.
* Several policies asking for the same CPU get the lowest (most conservative) target, recorded with the policy
  that asked for it (ties go to the higher-ranked policy).
* Each entry names its policy (`namespace/name`); entries are sorted by GPU UUID and CPU id.
* Replicas that split the policies (shards) plan every node the same way but each writes only its part of a
  spec (`merge_owned`): the clock entries of the policies it holds, and the power budgets if it is the one that
  allocates them, over the other entries as the object has them at the write.
* A policy's per-node power budgets (climatik.recommend.budgets) cover only GPUs it drives; a policy with no
  budgets this pass keeps those it holds, unless it contributes nothing (deleted, dry run) or keeps no budgets
  (spec.enforcement ClocksOnly). A power domain's budgets of the GPUs no policy budgets (`extra`, from
  climatik.recommend.sharing) cover only GPUs no budgeting policy drives. Budgets are sorted by policy.

What a policy is told about GPUs it shares with other policies (its Conflict condition) names the other
policy and which part of the rule decided (priority, age, name), in a message that stays the same while the
situation does, so that the condition is not rewritten on every pass.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from climatik.algorithms import CpuKey, Targets
from climatik.algorithms.framework import held_targets
from climatik.api import (
    CpuFrequency,
    GpuFrequency,
    NodeFrequencies,
    NodeFrequenciesSpec,
    PowerBudget,
    PowerCappingPolicy,
    parse_time,
)


@dataclass(frozen=True)
class Conflict:
    """Two policies claim one GPU; `winner` drives it."""

    gpu: str
    node: str | None
    winner: str
    loser: str


@dataclass(frozen=True)
class Plan:
    """The desired spec of every node involved, and what the policies should be told.

    `specs` holds every node that has a NodeFrequencies object or gets entries. `entries` counts the entries
    each policy owns in `specs`. `unplaced` lists, per policy, GPUs whose node is not known (not targeted).
    """

    specs: dict[str, NodeFrequenciesSpec]
    conflicts: tuple[Conflict, ...] = ()
    entries: dict[str, int] = field(default_factory=dict)
    unplaced: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def conflicts_of(self, policy_key: str) -> list[Conflict]:
        """The conflicts `policy_key` takes part in, as winner or loser."""
        return [c for c in self.conflicts if policy_key in (c.winner, c.loser)]

    def changed(self, nodes: Iterable[NodeFrequencies]) -> dict[str, NodeFrequenciesSpec]:
        """The specs that differ from the objects' current specs (and those of nodes without an object)."""
        current = {_node_name(node): normalized(node.spec) for node in nodes if _node_name(node) in self.specs}
        return {name: spec for name, spec in self.specs.items() if current.get(name) != spec}


def normalized(spec: NodeFrequenciesSpec) -> NodeFrequenciesSpec:
    """A spec with absent entry lists written as empty ones, so that equal specs compare equal."""
    return NodeFrequenciesSpec(node_name=spec.node_name, gpu_frequencies=list(spec.gpu_frequencies or []),
                               cpu_frequencies=list(spec.cpu_frequencies or []),
                               power_budgets=list(spec.power_budgets or []))


#: Power budgets by policy key, then by node name.
Budgets = Mapping[str, Mapping[str, PowerBudget]]


def plan(policies: Iterable[PowerCappingPolicy], outputs: Mapping[str, Targets],
         nodes: Iterable[NodeFrequencies], budgets: Budgets | None = None, *, extra: Budgets | None = None,
         scope: Collection[str] | None = None) -> Plan:
    """The desired NodeFrequencies specs for `policies`, given each policy's targets (`outputs`, by key) and
    power budgets (`budgets`, by key), and the domains' budgets of GPUs no policy budgets (`extra`, by key).

    With `scope` (node names), only those nodes are planned, from the policies that touch them (observe GPUs
    there, hold entries or budgets there): the specs and conflicts of other nodes are left out, not emptied. Every
    policy with a GPU on a node in scope touches it, so a node in scope is planned exactly as a full plan would."""
    node_list = sorted(nodes, key=_node_name)
    active = sorted((p for p in policies if _contributes(p)), key=_rank)
    if scope is not None:
        scope = set(scope)
        active = _touching(active, scope, node_list, budgets or {})
    holding = held_targets(node_list) if any(p.key not in outputs for p in active) else {}
    wanted = {p.key: outputs[p.key] if p.key in outputs else holding.get(p.key, Targets()) for p in active}
    gpu_owner, conflicts = _assign_gpus(active, wanted)
    gpus: dict[str, list[GpuFrequency]] = {}
    unplaced: dict[str, list[str]] = {}
    entries: dict[str, int] = {}
    for uuid, owner in sorted(gpu_owner.items()):
        mhz = wanted[owner.key].gpus.get(uuid)
        if mhz is None:
            continue
        node = _locate(uuid, owner, node_list)
        if node is None:
            unplaced.setdefault(owner.key, []).append(uuid)
            continue
        gpus.setdefault(node, []).append(GpuFrequency(gpu_id=uuid, target_frequency=int(mhz), policy=owner.key))
        entries[owner.key] = entries.get(owner.key, 0) + 1
    cpus = _merge_cpus(active, wanted)
    for (node, _), entry in cpus.items():
        gpus.setdefault(node, [])
        entries[entry.policy or ""] = entries.get(entry.policy or "", 0) + 1
    power = _merge_budgets(active, budgets or {}, gpu_owner, node_list)
    for _, held in sorted((extra or {}).items()):
        for name, budget in sorted(held.items()):
            free = [uuid for uuid in budget.gpu_ids if uuid not in gpu_owner or not gpu_owner[uuid].spec.node_budgets]
            if free:
                power.setdefault(name, []).append(replace(budget, gpu_ids=sorted(free)))
    names = sorted({_node_name(node) for node in node_list} | set(gpus) | set(power))
    if scope is not None:
        names = [name for name in names if name in scope]
        conflicts = [c for c in conflicts if c.node is None or c.node in scope]
    cpus_of: dict[str, list[CpuFrequency]] = {}
    for (node, _), entry in sorted(cpus.items()):
        cpus_of.setdefault(node, []).append(entry)
    specs = {
        name: NodeFrequenciesSpec(
            node_name=name,
            gpu_frequencies=sorted(gpus.get(name, []), key=lambda g: g.gpu_id),
            cpu_frequencies=cpus_of.get(name, []),
            power_budgets=sorted(power.get(name, []), key=lambda b: b.policy),
        )
        for name in names
    }
    return Plan(specs=specs, conflicts=tuple(conflicts), entries=entries,
                unplaced={key: tuple(uuids) for key, uuids in unplaced.items()})


def merge_owned(current: NodeFrequenciesSpec, planned: NodeFrequenciesSpec, mine: Collection[str], *,
                budgets: bool) -> NodeFrequenciesSpec:
    """The spec a shard writes over `current` (the object's, read at the write): `planned`'s clock entries of the
    policies in `mine` replace theirs in `current`; `current`'s entries of other policies stay, except a GPU entry
    that a planned entry of `mine` takes (the plan ranked both policies); a CPU keeps the lowest target asked of it.
    With `budgets` (this shard allocates them) the power budgets are `planned`'s, as are entries that name no
    policy (none, then); otherwise they are `current`'s."""

    def foreign(policy: str | None) -> bool:
        return (policy not in mine) if policy else not budgets

    gpus = {e.gpu_id: e for e in current.gpu_frequencies or [] if foreign(e.policy)}
    gpus.update({e.gpu_id: e for e in planned.gpu_frequencies or [] if e.policy in mine})
    cpus = {e.cpu_id: e for e in current.cpu_frequencies or [] if foreign(e.policy)}
    for entry in planned.cpu_frequencies or []:
        held = cpus.get(entry.cpu_id)
        if entry.policy in mine and (held is None or entry.target_frequency <= held.target_frequency):
            cpus[entry.cpu_id] = entry
    return NodeFrequenciesSpec(
        node_name=planned.node_name or current.node_name,
        gpu_frequencies=[gpus[uuid] for uuid in sorted(gpus)],
        cpu_frequencies=[cpus[cpu] for cpu in sorted(cpus)],
        power_budgets=list((planned if budgets else current).power_budgets or []),
    )


def entry_policies(spec: NodeFrequenciesSpec) -> set[str]:
    """The policies named by a spec's entries and budgets."""
    named = {e.policy for e in spec.gpu_frequencies or []} | {e.policy for e in spec.cpu_frequencies or []}
    return {key for key in named | {b.policy for b in spec.power_budgets or []} if key}


def _touching(active: list[PowerCappingPolicy], scope: set[str], nodes: list[NodeFrequencies],
              budgets: Budgets) -> list[PowerCappingPolicy]:
    """The policies that observe GPUs on, hold entries or budgets on, or are given budgets on a node in `scope`."""
    named: set[str] = set()
    for node in nodes:
        if _node_name(node) in scope:
            spec = node.spec
            named |= {e.policy for e in spec.gpu_frequencies or [] if e.policy}
            named |= {e.policy for e in spec.cpu_frequencies or [] if e.policy}
            named |= {b.policy for b in spec.power_budgets or []}
    return [p for p in active if p.key in named or scope & set(budgets.get(p.key, {}))
            or any(node.name in scope for node in (p.status.nodes or [] if p.status else []))]


def _contributes(policy: PowerCappingPolicy) -> bool:
    return policy.metadata.deletion_timestamp is None and not policy.spec.dry_run


def _rank(policy: PowerCappingPolicy) -> tuple[int, float, str]:
    """Sort key: the policy that wins a GPU sorts first."""
    created = float("inf")
    if policy.metadata.creation_timestamp:
        try:
            created = parse_time(policy.metadata.creation_timestamp).timestamp()
        except ValueError:
            created = float("inf")
    return (-(policy.spec.priority or 0), created, policy.key)


def _claims(policy: PowerCappingPolicy, wanted: Targets) -> set[str]:
    observed = {gpu.uuid for node in (policy.status.nodes or [] if policy.status else []) for gpu in node.gpus or []}
    return observed | set(wanted.gpu_entries())


def _assign_gpus(active: list[PowerCappingPolicy],
                 wanted: Mapping[str, Targets]) -> tuple[dict[str, PowerCappingPolicy], list[Conflict]]:
    """Each claimed GPU's owner (policies come best-ranked first) and the conflicts found on the way."""
    owner: dict[str, PowerCappingPolicy] = {}
    conflicts: list[Conflict] = []
    for policy in active:
        for uuid in sorted(_claims(policy, wanted[policy.key])):
            if uuid in owner:
                conflicts.append(Conflict(gpu=uuid, node=_observed_node(uuid, owner[uuid]),
                                          winner=owner[uuid].key, loser=policy.key))
            else:
                owner[uuid] = policy
    return owner, sorted(conflicts, key=lambda c: (c.gpu, c.winner, c.loser))


def _merge_cpus(active: list[PowerCappingPolicy], wanted: Mapping[str, Targets]) -> dict[CpuKey, CpuFrequency]:
    merged: dict[CpuKey, CpuFrequency] = {}
    for policy in active:
        for (node, cpu), mhz in sorted(wanted[policy.key].cpu_entries().items()):
            held = merged.get((node, cpu))
            if held is None or mhz < held.target_frequency:
                merged[(node, cpu)] = CpuFrequency(cpu_id=cpu, target_frequency=int(mhz), policy=policy.key)
    return merged


def _merge_budgets(active: list[PowerCappingPolicy], budgets: Budgets, gpu_owner: Mapping[str, PowerCappingPolicy],
                   nodes: list[NodeFrequencies]) -> dict[str, list[PowerBudget]]:
    """Each node's budgets: those allocated this pass, else those held; only over GPUs the policy drives."""
    held: dict[str, dict[str, PowerBudget]] = {}
    for node in nodes:
        for budget in node.spec.power_budgets or []:
            held.setdefault(budget.policy, {})[_node_name(node)] = budget
    merged: dict[str, list[PowerBudget]] = {}
    for policy in active:
        if not policy.spec.node_budgets:
            continue
        mine = budgets.get(policy.key, held.get(policy.key, {}))
        for name, budget in mine.items():
            driven = [uuid for uuid in budget.gpu_ids if uuid not in gpu_owner or gpu_owner[uuid].key == policy.key]
            if driven:
                merged.setdefault(name, []).append(replace(budget, gpu_ids=sorted(driven)))
    return merged


def _observed_node(uuid: str, policy: PowerCappingPolicy) -> str | None:
    for node in policy.status.nodes or [] if policy.status else []:
        if any(gpu.uuid == uuid for gpu in node.gpus or []):
            return node.name
    return None


def _locate(uuid: str, policy: PowerCappingPolicy, nodes: list[NodeFrequencies]) -> str | None:
    """The node a GPU is on: from the policy's observations, else from a tuner's inventory or an existing entry."""
    observed = _observed_node(uuid, policy)
    if observed is not None:
        return observed
    for node in nodes:
        inventory = node.inventory
        if inventory is not None and inventory.gpu(uuid) is not None:
            return _node_name(node)
    for node in nodes:
        if any(gpu.gpu_id == uuid for gpu in node.spec.gpu_frequencies or []):
            return _node_name(node)
    return None


def _node_name(node: NodeFrequencies) -> str:
    return node.spec.node_name or node.metadata.name


LOSES = "LosesSharedGpus"
WINS = "WinsSharedGpus"
NONE = "NoSharedGpus"

_SHOWN = 5


@dataclass(frozen=True)
class ConflictReport:
    """The Conflict condition of one policy, and the GPUs it does not drive because another policy does."""

    active: bool
    reason: str
    message: str
    lost: tuple[str, ...] = ()


def conflict_report(key: str, conflicts: Sequence[Conflict],
                    policies: Mapping[str, PowerCappingPolicy]) -> ConflictReport:
    """The report for policy `key`, given the conflicts it takes part in."""
    mine = [c for c in conflicts if key in (c.winner, c.loser)]
    if not mine:
        return ConflictReport(False, NONE, "no GPU of this policy is claimed by another policy")
    lines = [_line(key, c, policies) for c in mine[:_SHOWN]]
    if len(mine) > _SHOWN:
        lines.append(f"and {len(mine) - _SHOWN} more")
    lost = tuple(sorted({c.gpu for c in mine if c.loser == key}))
    return ConflictReport(True, LOSES if lost else WINS, "; ".join(lines), lost)


def _line(key: str, conflict: Conflict, policies: Mapping[str, PowerCappingPolicy]) -> str:
    other = conflict.loser if conflict.winner == key else conflict.winner
    where = f" on {conflict.node}" if conflict.node else ""
    who = "this policy drives it" if conflict.winner == key else f"{other} drives it"
    return f"{conflict.gpu}{where} is also claimed by {other}; {who} ({_rule(conflict, policies)})"


def _rule(conflict: Conflict, policies: Mapping[str, PowerCappingPolicy]) -> str:
    """Which part of the rule decided: priority, then creation time, then namespace/name."""
    winner, loser = policies.get(conflict.winner), policies.get(conflict.loser)
    if winner is None or loser is None:
        return "ranked by priority, age and name"
    high, low = winner.spec.priority or 0, loser.spec.priority or 0
    if high != low:
        return f"higher priority: {high} over {low}"
    born, later = winner.metadata.creation_timestamp, loser.metadata.creation_timestamp
    if born and later and born != later:
        return f"older: created {born}, the other {later}"
    return "equal priority and age: the lower namespace/name wins"
