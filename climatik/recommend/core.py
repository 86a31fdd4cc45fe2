"""The recommender's core: one pass for a policy, from the typed policies and NodeFrequencies objects to the
node specs to write and what the policy's status should say. No cache, no client, no clock: the reconciler does
that I/O around it, and the simulated-time benchmark runs exactly this code.

A pass steps the policy (climatik.recommend.step), remembers its result, plans every node's spec from every
policy's latest result (climatik.recommend.plan), and reports: the recommendation summary and the Actuated and
Conflict conditions (InvalidSpec too: the recommender is its one writer).

What the status says is climatik.recommend.report's.

A policy with GPUs in a power domain gets its node budgets from the split of every domain (climatik.recommend.
sharing), computed at most every `domain_interval` seconds for all policies at once; other policies split their
own budget (climatik.recommend.budgets). A pass that finds a newer split also names the policies whose budget it
moved by a share worth a status write, so that their status follows.

Replicas that split the policies (`climatik recommend --shard`) each step their own policies, and one of them,
the allocator, also splits the node budgets of every policy (`allocate_only` for those it does not step) and the
domains: budgets move safely only when one process sees every budget it wrote and its acknowledgement. A replica
that does not allocate reports the budgets the allocator wrote, and whether the cap is feasible from its own
reading of the same objects.

Only this process's results are remembered. After a restart a policy has none until its first step, and the
plan keeps the entries it holds in the meantime; its algorithm state comes back from status.recommendation.state.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from climatik.algorithms import AlgorithmRegistry, StepResult, Targets
from climatik.api import (
    NodeFrequencies,
    NodeFrequenciesSpec,
    PowerBudget,
    PowerCappingPolicy,
    format_time,
)
from climatik.api.domain import PowerDomain
from climatik.recommend.actuation import Acknowledgements, Actuation
from climatik.recommend.budgets import allocate, node_demands
from climatik.recommend.plan import Conflict, Plan, conflict_report, plan
from climatik.recommend.report import NODE_POWER_MOVE, BudgetReport, Report, feasible, report
from climatik.recommend.sharing import Shared, Sharing
from climatik.recommend.step import Decision, StepSettings, decide, spec_problems

#: The key of the allocator's part among shards (climatik.kube.shards): the replica that owns it splits every node
#: budget and the power domains. No policy key looks like it (those are namespace/name).
ALLOCATOR = "@node-budgets"


@dataclass(frozen=True)
class Pass:
    """One pass: the policy's decision and report (None when the pass only re-planned, e.g. for a deleted
    policy), the plan, the specs that differ from the objects' and must be written, the other policies whose
    conflicts changed (their Conflict condition must follow), the actuation, and when to look at the policy
    again without an event (a tuner's bound, the end of spec churn; None: no need)."""

    plan: Plan
    writes: dict[str, NodeFrequenciesSpec]
    moved: frozenset[str] = frozenset()
    decision: Decision | None = None
    report: Report | None = None
    policies: Mapping[str, PowerCappingPolicy] = field(default_factory=dict)
    actuation: Actuation = field(default_factory=Actuation)
    recheck_after: float | None = None
    shared: Shared | None = None


@dataclass(frozen=True)
class ShareOutcome:
    """The domains' split to use (None: no domains), when to look again (None: no need), whether it was computed
    just now, and the policies whose budget it moved by a share worth a status write."""

    shared: Shared | None
    wait: float | None = None
    fresh: bool = False
    moved: frozenset[str] = frozenset()


class Recommender:
    """Each policy's last step result and conflicts, and the passes that use them.

    Thread-safe. Hold `lock` around a pass and the writes of its specs, so that two workers never write specs
    planned from different results.
    """

    def __init__(self, *, registry: AlgorithmRegistry, settings: StepSettings | None = None) -> None:
        self.lock = threading.RLock()
        self._registry = registry
        self.settings = settings or StepSettings()
        self._results: dict[str, StepResult] = {}
        self._conflicts: dict[str, frozenset[Conflict]] = {}
        self._spec_changes: dict[str, tuple[int | None, tuple[float, ...]]] = {}
        self._budgets: dict[str, dict[str, PowerBudget]] = {}
        self.acks = Acknowledgements(timeout=self.settings.ack_timeout,
                                     release_timeout=self.settings.release_timeout)
        self.sharing = Sharing(interval=self.settings.domain_interval)
        self._full_plan_at = -math.inf

    def step(self, policy: PowerCappingPolicy, policies: Mapping[str, PowerCappingPolicy],
             nodes: Sequence[NodeFrequencies], *, now: dt.datetime, domains: Sequence[PowerDomain] = (),
             node_labels: Mapping[str, Mapping[str, str]] | None = None, allocate: bool = True) -> Pass:
        """Step `policy` at `now`, then plan every node from every policy's latest result. `domains` and
        `node_labels` (node name -> labels) describe the power domains, if any. Without `allocate` (a shard that
        does not allocate) the node budgets are those the objects hold."""
        with self.lock:
            key = policy.key
            if not allocate:
                self._budgets.clear()
            sharing = self.share(domains, node_labels or {}, policies, nodes, now=now, allocate=allocate)
            shared, domain_wait, moved_budgets = sharing.shared, sharing.wait, sharing.moved
            churn = self._churn(policy, now.timestamp())
            decision = decide(policy, nodes, registry=self._registry, previous=self._results.get(key),
                              now=now.timestamp(), settings=self.settings,
                              lower_only=None if churn is None else "the spec is changing fast")
            if decision.output is not None:
                self._results[key] = decision.output
            elif decision.problems:
                self._results.pop(key, None)
            budgets = None if decision.problems else self._allocate(policy, nodes, now.timestamp(), shared,
                                                                      store=allocate)
            scope = None if sharing.fresh else self._scope(policy, nodes, now.timestamp())
            planned = self.replan(policies, nodes, origin=key, scope=scope)
            conflict = conflict_report(key, planned.plan.conflicts_of(key), policies)
            actuation = self.acks.judge(key, planned.plan, nodes, planned.writes, now.timestamp())
            said = replace(report(policy, decision, conflict, actuation, now=format_time(now)), budgets=budgets)
            waits = [t for t in (churn, actuation.recheck_after, domain_wait) if t is not None]
            return replace(planned, decision=decision, report=said, actuation=actuation,
                           recheck_after=min(waits) if waits else None, shared=shared,
                           moved=planned.moved | frozenset(moved_budgets - {key}))

    def allocate_only(self, policy: PowerCappingPolicy, policies: Mapping[str, PowerCappingPolicy],
                      nodes: Sequence[NodeFrequencies], *, now: dt.datetime, domains: Sequence[PowerDomain] = (),
                      node_labels: Mapping[str, Mapping[str, str]] | None = None) -> Pass:
        """Split the node budgets of a policy that another shard steps (this replica allocates), and plan its
        nodes: as `step` does, without stepping it (its targets are the other shard's, held in the objects)."""
        with self.lock:
            key = policy.key
            sharing = self.share(domains, node_labels or {}, policies, nodes, now=now)
            if not spec_problems(policy.spec, self._registry):
                self._allocate(policy, nodes, now.timestamp(), sharing.shared)
            scope = None if sharing.fresh else self._scope(policy, nodes, now.timestamp())
            planned = self.replan(policies, nodes, origin=key, scope=scope)
            actuation = self.acks.judge(key, planned.plan, nodes, planned.writes, now.timestamp())
            waits = [t for t in (actuation.recheck_after, sharing.wait) if t is not None]
            return replace(planned, actuation=actuation, recheck_after=min(waits) if waits else None,
                           shared=sharing.shared, moved=planned.moved | frozenset(sharing.moved - {key}))

    def replan(self, policies: Mapping[str, PowerCappingPolicy], nodes: Sequence[NodeFrequencies], *,
               origin: str, scope: set[str] | None = None) -> Pass:
        """Plan every node (or the nodes in `scope`) from the remembered results, on behalf of policy `origin`."""
        with self.lock:
            shared = self.sharing.last
            result = plan(policies.values(), self.targets(), nodes, self._budgets,
                          extra=shared.unselected if shared is not None else None, scope=scope)
            return Pass(plan=result, writes=result.changed(nodes),
                        moved=frozenset(self._swap_conflicts(result.conflicts, policies, scope) - {origin}),
                        policies=policies)

    def _scope(self, policy: PowerCappingPolicy, nodes: Sequence[NodeFrequencies], now: float) -> set[str] | None:
        """The nodes a pass of `policy` plans: those it observes, holds entries or budgets on, or is given budgets
        on; None (every node) once `full_plan_interval` has passed since the last full plan."""
        if now - self._full_plan_at >= self.settings.full_plan_interval:
            self._full_plan_at = now
            return None
        key = policy.key
        names = {node.name for node in (policy.status.nodes or [] if policy.status else [])}
        names |= set(self._budgets.get(key, {}))
        for node in nodes:
            spec = node.spec
            if any(e.policy == key for e in spec.gpu_frequencies or []) or any(
                    e.policy == key for e in spec.cpu_frequencies or []) or any(
                    b.policy == key for b in spec.power_budgets or []):
                names.add(spec.node_name or node.metadata.name)
        return names

    def forget(self, key: str) -> None:
        """Drop the policy's result: the plan then holds the entries it has (or drops them, if it is gone)."""
        with self.lock:
            self._results.pop(key, None)
            self._spec_changes.pop(key, None)
            self._budgets.pop(key, None)

    def share(self, domains: Sequence[PowerDomain], node_labels: Mapping[str, Mapping[str, str]],
              policies: Mapping[str, PowerCappingPolicy], nodes: Sequence[NodeFrequencies], *,
              now: dt.datetime, allocate: bool = True) -> ShareOutcome:
        """The domains' split to use now (climatik.recommend.sharing), when to look again, whether it is new, and
        the policies whose budget a new split moved (their status should follow). Without `allocate` the split
        is only read (what the policies are told), and its budgets are not taken."""
        with self.lock:
            before = self.sharing.last
            shared, wait = self.sharing.update(domains, node_labels, policies, nodes, now=now,
                                               late=self.acks.late(now.timestamp()))
            fresh = shared is not None and shared is not before
            moved = self._take_split(shared, policies, store=allocate) if fresh else set()
            return ShareOutcome(shared=shared, wait=wait, fresh=fresh, moved=frozenset(moved))

    def _take_split(self, shared: Shared | None, policies: Mapping[str, PowerCappingPolicy], *,
                    store: bool = True) -> set[str]:
        """Take a new split's budgets for every policy in it (with `store`); return those whose status should
        follow (their budget moved by a share worth a write)."""
        if shared is None:
            return set()
        moved = set()
        for key, budgets in shared.budgets.items():
            if key not in policies:
                continue
            if store:
                self._budgets[key] = budgets
            status = policies[key].status
            total = float(sum(b.watts for b in budgets.values()))
            before = status.budget if status is not None else None
            if before is None or abs(total - before) > NODE_POWER_MOVE * policies[key].spec.threshold_watts:
                moved.add(key)
        return moved

    def _allocate(self, policy: PowerCappingPolicy, nodes: Sequence[NodeFrequencies],
                  now: float, shared: Shared | None = None, *, store: bool = True) -> BudgetReport | None:
        """Split the policy's budget over its nodes (climatik.recommend.budgets) and remember the split, or take
        its part of the domains' split; None for a policy that keeps no node budgets, or has no GPUs observed
        yet. Without `store` nothing is remembered, and the report gives the budgets the objects hold."""
        key = policy.key
        lost = {conflict.gpu for conflict in self._conflicts.get(key, ()) if conflict.loser == key}
        gpus = {node.name: [gpu.uuid for gpu in node.gpus or [] if gpu.mig_instance is None and gpu.uuid not in lost]
                for node in (policy.status.nodes or [] if policy.status else [])}
        gpus = {name: uuids for name, uuids in gpus.items() if uuids}
        if not policy.spec.node_budgets or policy.spec.dry_run or not gpus:
            self._budgets.pop(key, None)
            return None
        if shared is not None and shared.takes_part(key):
            return self._domain_budgets(policy, nodes, shared, now, store=store)
        demands = node_demands(policy, gpus, nodes, late=self.acks.late(now))
        allocation = allocate(policy.spec.threshold_watts, demands)
        chosen = {d.node: allocation.budgets.get(d.node, d.current) for d in demands}
        split = {name: PowerBudget(policy=key, watts=watts, gpu_ids=sorted(gpus[name]))
                 for name, watts in chosen.items() if watts is not None}
        budgets = self._keep(key, split, nodes, store)
        if not budgets and not store:
            return None  # the allocator has not split it yet
        measured = [d.measured for d in demands if d.measured is not None]
        return BudgetReport(budget=float(sum(b.watts for b in budgets.values())),
                            node_power=round(sum(measured), 1) if measured else None,
                            feasible=feasible(policy.spec.threshold_watts, allocation.infeasible_floor))

    def _domain_budgets(self, policy: PowerCappingPolicy, nodes: Sequence[NodeFrequencies], shared: Shared,
                        now: float, *, store: bool = True) -> BudgetReport | None:
        """The policy's part of the domains' split, reported as its own split is."""
        key = policy.key
        budgets = self._keep(key, shared.budgets[key], nodes, store)
        if not budgets and not store:
            return None  # the allocator has not split it yet
        gpus = {name: budget.gpu_ids for name, budget in shared.budgets[key].items()}
        measured = [d.measured for d in node_demands(policy, gpus, nodes, late=self.acks.late(now))
                    if d.measured is not None]
        floor = shared.allocation.infeasible.get(key)
        return BudgetReport(budget=float(sum(b.watts for b in budgets.values())),
                            node_power=round(sum(measured), 1) if measured else None,
                            feasible=feasible(policy.spec.threshold_watts, floor))

    def _keep(self, key: str, split: dict[str, PowerBudget], nodes: Sequence[NodeFrequencies],
              store: bool) -> Mapping[str, PowerBudget]:
        """Remember `split` as the policy's budgets (with `store`) and return it; without, return those the
        objects hold (another replica allocates them)."""
        if store:
            self._budgets[key] = split
            return split
        self._budgets.pop(key, None)
        return {(node.spec.node_name or node.metadata.name): budget for node in nodes
                for budget in node.spec.power_budgets or [] if budget.policy == key}

    def _churn(self, policy: PowerCappingPolicy, now: float) -> float | None:
        """Seconds until the policy's spec counts as settled, while it is churning; None when it is not."""
        generation = policy.metadata.generation
        seen, changes = self._spec_changes.get(policy.key, (generation, ()))
        if generation != seen:
            changes = (*changes, now)[-2:]
        self._spec_changes[policy.key] = (generation, changes)
        settings = self.settings
        if len(changes) == 2 and changes[1] - changes[0] <= settings.churn_window \
                and now - changes[1] < settings.churn_quiet:
            return settings.churn_quiet - (now - changes[1])
        return None

    def targets(self) -> dict[str, Targets]:
        """Each remembered policy's targets, by key."""
        with self.lock:
            return {key: result.targets for key, result in self._results.items()}

    def _swap_conflicts(self, conflicts: Sequence[Conflict], keys: Mapping[str, object],
                        scope: set[str] | None = None) -> set[str]:
        """Remember the conflicts of the policies in `keys` (all that exist), those on nodes out of `scope` kept as
        they were; return the policies whose set changed."""
        if scope is not None:
            kept = {c for found in self._conflicts.values() for c in found
                    if c.node is not None and c.node not in scope}
            conflicts = [*conflicts, *kept]
        fresh: dict[str, set[Conflict]] = {key: set() for key in keys}
        for conflict in conflicts:
            for key in (conflict.winner, conflict.loser):
                fresh.setdefault(key, set()).add(conflict)
        changed = {key for key, found in fresh.items() if self._conflicts.get(key, frozenset()) != found}
        self._conflicts = {key: frozenset(found) for key, found in fresh.items() if found}
        return changed




