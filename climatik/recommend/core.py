"""The recommender's core: one pass for a policy, from the typed policies and NodeFrequencies objects to the
node specs to write and what the policy's status should say. No cache, no client, no clock: the reconciler does
that I/O around it, and the simulated-time benchmark runs exactly this code.

A pass steps the policy (climatik.recommend.step), remembers its result, plans every node's spec from every
policy's latest result (climatik.recommend.plan), and reports: the recommendation summary and the Actuated and
Conflict conditions (InvalidSpec too: the recommender is its one writer).

Actuated is False, by precedence, with reason Invalid (the spec is invalid: the policy holds the entries it
had and drives nothing new), DryRun, AlgorithmFailed (the last result is held), Conflict (another policy drives
some of its GPUs), WaitingForInventory (a GPU's tuner has not reported its clocks yet) or MigNotCapped (all its
GPUs are MIG instances, measured but never capped); otherwise True with
reason Holding (the fail-safe held the targets) or TargetsWritten. Nothing in a report moves with time alone:
an unchanged decision gives an unchanged status, which costs no write.

A policy with GPUs in a power domain gets its node budgets from the split of every domain (climatik.recommend.
sharing), computed at most every `domain_interval` seconds for all policies at once; other policies split their
own budget (climatik.recommend.budgets). A pass that finds a newer split also names the policies whose budget it
moved by a share worth a status write, so that their status follows.

Only this process's results are remembered. After a restart a policy has none until its first step, and the
plan keeps the entries it holds in the meantime; its algorithm state comes back from status.recommendation.state.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from climatik.algorithms import AlgorithmRegistry, StepResult, Targets
from climatik.api import (
    NodeFrequencies,
    NodeFrequenciesSpec,
    NodeObservation,
    PowerBudget,
    PowerCappingPolicy,
    Recommendation,
    format_time,
    to_dict,
)
from climatik.api.conditions import ACTUATED, CONFLICT, FEASIBLE, INVALID_SPEC, set_condition
from climatik.api.domain import PowerDomain
from climatik.recommend.actuation import Acknowledgements, Actuation, some
from climatik.recommend.budgets import allocate, node_demands
from climatik.recommend.plan import Conflict, ConflictReport, Plan, conflict_report, plan
from climatik.recommend.sharing import Shared, Sharing
from climatik.recommend.step import Decision, StepSettings, decide

INVALID = "Invalid"
DRY_RUN = "DryRun"
ALGORITHM_FAILED = "AlgorithmFailed"
WAITING_FOR_INVENTORY = "WaitingForInventory"
MIG_NOT_CAPPED = "MigNotCapped"
TUNER_NOT_RESPONDING = "TunerNotResponding"
APPLYING = "Applying"
NOT_APPLIED_BY_TUNER = "NotApplied"
RELEASING = "Releasing"
WITHIN_REACH = "WithinReach"
#: status.nodePower is rewritten once it moved by this share of the policy's budget (as the monitor's power).
NODE_POWER_MOVE = 0.03
BELOW_FLOOR = "BelowFloor"
HOLDING = "Holding"
TARGETS_WRITTEN = "TargetsWritten"

@dataclass(frozen=True)
class ConditionState:
    """One condition's status, CamelCase reason and message."""

    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Report:
    """What the recommender tells about one policy. `recommendation` None keeps the status's as it is; `budgets`
    None (a policy without node budgets) leaves the budget fields out and the Feasible condition unset."""

    recommendation: Recommendation | None
    actuated: ConditionState
    conflict: ConditionState
    problems: tuple[str, ...] = ()
    budgets: BudgetReport | None = None


@dataclass(frozen=True)
class BudgetReport:
    """The policy's node budgets: their sum, the power the nodes' tuners measured (None: none reported yet), and
    whether the budget can be met at all."""

    budget: float
    node_power: float | None
    feasible: ConditionState


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

    def step(self, policy: PowerCappingPolicy, policies: Mapping[str, PowerCappingPolicy],
             nodes: Sequence[NodeFrequencies], *, now: dt.datetime, domains: Sequence[PowerDomain] = (),
             node_labels: Mapping[str, Mapping[str, str]] | None = None) -> Pass:
        """Step `policy` at `now`, then plan every node from every policy's latest result. `domains` and
        `node_labels` (node name -> labels) describe the power domains, if any."""
        with self.lock:
            key = policy.key
            sharing = self.share(domains, node_labels or {}, policies, nodes, now=now)
            shared, domain_wait, moved_budgets = sharing.shared, sharing.wait, sharing.moved
            churn = self._churn(policy, now.timestamp())
            decision = decide(policy, nodes, registry=self._registry, previous=self._results.get(key),
                              now=now.timestamp(), settings=self.settings,
                              lower_only=None if churn is None else "the spec is changing fast")
            if decision.output is not None:
                self._results[key] = decision.output
            elif decision.problems:
                self._results.pop(key, None)
            budgets = None if decision.problems else self._allocate(policy, nodes, now.timestamp(), shared)
            planned = self.replan(policies, nodes, origin=key)
            conflict = conflict_report(key, planned.plan.conflicts_of(key), policies)
            actuation = self.acks.judge(key, planned.plan, nodes, planned.writes, now.timestamp())
            said = replace(report(policy, decision, conflict, actuation, now=format_time(now)), budgets=budgets)
            waits = [t for t in (churn, actuation.recheck_after, domain_wait) if t is not None]
            return replace(planned, decision=decision, report=said, actuation=actuation,
                           recheck_after=min(waits) if waits else None, shared=shared,
                           moved=planned.moved | frozenset(moved_budgets - {key}))

    def replan(self, policies: Mapping[str, PowerCappingPolicy], nodes: Sequence[NodeFrequencies], *,
               origin: str) -> Pass:
        """Plan every node from the remembered results, on behalf of policy `origin`."""
        with self.lock:
            shared = self.sharing.last
            result = plan(policies.values(), self.targets(), nodes, self._budgets,
                          extra=shared.unselected if shared is not None else None)
            return Pass(plan=result, writes=result.changed(nodes),
                        moved=frozenset(self._swap_conflicts(result.conflicts, policies) - {origin}),
                        policies=policies)

    def forget(self, key: str) -> None:
        """Drop the policy's result: the plan then holds the entries it has (or drops them, if it is gone)."""
        with self.lock:
            self._results.pop(key, None)
            self._spec_changes.pop(key, None)
            self._budgets.pop(key, None)

    def share(self, domains: Sequence[PowerDomain], node_labels: Mapping[str, Mapping[str, str]],
              policies: Mapping[str, PowerCappingPolicy], nodes: Sequence[NodeFrequencies], *,
              now: dt.datetime) -> ShareOutcome:
        """The domains' split to use now (climatik.recommend.sharing), when to look again, whether it is new, and
        the policies whose budget a new split moved (their status should follow)."""
        with self.lock:
            before = self.sharing.last
            shared, wait = self.sharing.update(domains, node_labels, policies, nodes, now=now,
                                               late=self.acks.late(now.timestamp()))
            fresh = shared is not None and shared is not before
            return ShareOutcome(shared=shared, wait=wait, fresh=fresh,
                                moved=frozenset(self._take_split(shared, policies)) if fresh else frozenset())

    def _take_split(self, shared: Shared | None, policies: Mapping[str, PowerCappingPolicy]) -> set[str]:
        """Take a new split's budgets for every policy in it; return those whose status should follow (their
        budget moved by a share worth a write)."""
        if shared is None:
            return set()
        moved = set()
        for key, budgets in shared.budgets.items():
            if key not in policies:
                continue
            self._budgets[key] = budgets
            status = policies[key].status
            total = float(sum(b.watts for b in budgets.values()))
            before = status.budget if status is not None else None
            if before is None or abs(total - before) > NODE_POWER_MOVE * policies[key].spec.threshold_watts:
                moved.add(key)
        return moved

    def _allocate(self, policy: PowerCappingPolicy, nodes: Sequence[NodeFrequencies],
                  now: float, shared: Shared | None = None) -> BudgetReport | None:
        """Split the policy's budget over its nodes (climatik.recommend.budgets) and remember the split, or take
        its part of the domains' split; None for a policy that keeps no node budgets, or has no GPUs observed
        yet."""
        key = policy.key
        lost = {conflict.gpu for conflict in self._conflicts.get(key, ()) if conflict.loser == key}
        gpus = {node.name: [gpu.uuid for gpu in node.gpus or [] if gpu.mig_instance is None and gpu.uuid not in lost]
                for node in (policy.status.nodes or [] if policy.status else [])}
        gpus = {name: uuids for name, uuids in gpus.items() if uuids}
        if not policy.spec.node_budgets or policy.spec.dry_run or not gpus:
            self._budgets.pop(key, None)
            return None
        if shared is not None and shared.takes_part(key):
            return self._domain_budgets(policy, nodes, shared, now)
        demands = node_demands(policy, gpus, nodes, late=self.acks.late(now))
        allocation = allocate(policy.spec.threshold_watts, demands)
        chosen = {d.node: allocation.budgets.get(d.node, d.current) for d in demands}
        self._budgets[key] = {name: PowerBudget(policy=key, watts=watts, gpu_ids=sorted(gpus[name]))
                              for name, watts in chosen.items() if watts is not None}
        measured = [d.measured for d in demands if d.measured is not None]
        return BudgetReport(budget=float(sum(b.watts for b in self._budgets[key].values())),
                            node_power=round(sum(measured), 1) if measured else None,
                            feasible=_feasible(policy.spec.threshold_watts, allocation.infeasible_floor))

    def _domain_budgets(self, policy: PowerCappingPolicy, nodes: Sequence[NodeFrequencies], shared: Shared,
                        now: float) -> BudgetReport:
        """The policy's part of the domains' split, reported as its own split is."""
        key = policy.key
        self._budgets[key] = shared.budgets[key]
        gpus = {name: budget.gpu_ids for name, budget in shared.budgets[key].items()}
        measured = [d.measured for d in node_demands(policy, gpus, nodes, late=self.acks.late(now))
                    if d.measured is not None]
        floor = shared.allocation.infeasible.get(key)
        return BudgetReport(budget=float(sum(b.watts for b in self._budgets[key].values())),
                            node_power=round(sum(measured), 1) if measured else None,
                            feasible=_feasible(policy.spec.threshold_watts, floor))

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

    def _swap_conflicts(self, conflicts: Sequence[Conflict], keys: Mapping[str, object]) -> set[str]:
        """Remember the conflicts of the policies in `keys` (all that exist); return those whose set changed."""
        fresh: dict[str, set[Conflict]] = {key: set() for key in keys}
        for conflict in conflicts:
            for key in (conflict.winner, conflict.loser):
                fresh.setdefault(key, set()).add(conflict)
        changed = {key for key, found in fresh.items() if self._conflicts.get(key, frozenset()) != found}
        self._conflicts = {key: frozenset(found) for key, found in fresh.items() if found}
        return changed


def _feasible(budget: float, floor: float | None) -> ConditionState:
    if floor is None:
        return ConditionState(True, WITHIN_REACH, f"the policy's GPUs can be held under its budget of {budget:.0f} W")
    return ConditionState(False, BELOW_FLOOR, f"the budget of {budget:.0f} W is under the {floor:.0f} W the "
                                              "policy's GPUs draw at their lowest limits and clocks; they are held "
                                              "at their floor")


# -- the report ------------------------------------------------------------------------------------------------


def report(policy: PowerCappingPolicy, decision: Decision, conflict: ConflictReport,
           actuation: Actuation | None = None, *, now: str) -> Report:
    """What the status should say after `decision`; `now` (RFC 3339) dates a change of targets."""
    actuated = actuated_state(policy, decision, conflict, actuation or Actuation())
    previous = policy.status.recommendation if policy.status else None
    summary: Recommendation | None = None
    output = decision.output
    if output is not None:
        summary = recommendation(algorithm=output.algorithm, targets=output.targets, state_text=output.state_text,
                                 applied=actuated.status, changed=output.changed, previous=previous, now=now)
        if previous is not None and _headline(previous) != _headline(summary):
            # Also after a restart, or when a write of the last change was lost: the status tells the truth.
            summary = replace(summary, last_changed=now)
    elif previous is not None:
        summary = replace(previous, applied=False)
    return Report(recommendation=summary, actuated=actuated,
                  conflict=ConditionState(conflict.active, conflict.reason, conflict.message),
                  problems=decision.problems)


def actuated_state(policy: PowerCappingPolicy, decision: Decision, conflict: ConflictReport,
                   actuation: Actuation) -> ConditionState:
    """The Actuated condition (see the module docstring for the precedence of reasons)."""
    output = decision.output
    if decision.problems:
        return ConditionState(False, INVALID, "the spec is invalid: no new targets; the ones it held are kept")
    if policy.spec.dry_run:
        return ConditionState(False, DRY_RUN, "dry run: targets are reported in status.recommendation only")
    if decision.failure is not None or output is None:
        return ConditionState(False, ALGORITHM_FAILED, f"the last targets are held: {decision.failure}")
    if conflict.lost:
        return ConditionState(False, CONFLICT, f"{len(conflict.lost)} GPUs are driven by another policy: "
                                               f"{some(conflict.lost)}")
    if output.waiting_for_inventory:
        waiting = output.waiting_for_inventory
        return ConditionState(False, WAITING_FOR_INVENTORY,
                              f"no hardware inventory yet for {len(waiting)} GPUs: {some(waiting)}")
    if actuation.late:
        return ConditionState(False, TUNER_NOT_RESPONDING,
                              f"the tuners of {len(actuation.late)} nodes have not applied their targets within "
                              f"{actuation.bound:.0f} s: {some(actuation.late)}")
    if actuation.pending:
        return ConditionState(False, APPLYING, f"waiting for the tuners of {len(actuation.pending)} nodes to apply "
                                               f"the targets: {some(actuation.pending)}")
    if actuation.not_applied:
        return ConditionState(False, NOT_APPLIED_BY_TUNER, f"{len(actuation.not_applied)} entries could not be "
                                                           f"applied: {some(actuation.not_applied)}")
    mig = _mig_instances(policy)
    if mig and not output.targets.gpu_entries() and not any(
            gpu.mig_instance is None for node in _observed(policy) for gpu in node.gpus or []):
        return ConditionState(False, MIG_NOT_CAPPED, f"{mig} MIG instances are measured, but a MIG-enabled GPU is "
                                                     "never clock-capped on behalf of one of its tenants")
    if decision.held is not None:
        return ConditionState(True, HOLDING, f"the last targets are held: {decision.held}")
    note = f"; {mig} MIG instances are measured but not capped" if mig else ""
    return ConditionState(True, TARGETS_WRITTEN, describe(output.targets) + note)


def _observed(policy: PowerCappingPolicy) -> list[NodeObservation]:
    return list(policy.status.nodes or []) if policy.status else []


def _mig_instances(policy: PowerCappingPolicy) -> int:
    return sum(1 for node in _observed(policy) for gpu in node.gpus or [] if gpu.mig_instance is not None)


def recommendation(*, algorithm: str, targets: Targets, state_text: str | None, applied: bool, changed: bool,
                   previous: Recommendation | None, now: str) -> Recommendation:
    """The status summary of one decision. `applied` is False in dry-run, in conflict or when invalid;
    `now` (RFC 3339) becomes lastChanged only when the targets changed, so a steady policy's status is stable."""
    gpu_values = set(targets.gpu_entries().values())
    cpu_values = set(targets.cpu_entries().values())
    last_changed = now if changed or previous is None else previous.last_changed
    return Recommendation(
        algorithm=algorithm,
        gpu_frequency=next(iter(gpu_values)) if len(gpu_values) == 1 else None,
        cpu_frequency=next(iter(cpu_values)) if len(cpu_values) == 1 else None,
        target_count=len(targets.gpu_entries()) + len(targets.cpu_entries()),
        applied=applied,
        last_changed=last_changed,
        state=state_text or None,
    )


def describe(targets: Targets) -> str:
    """A short account of bounds, e.g. "4 GPUs at 1200 MHz, 64 CPUs at 2000-2400 MHz"."""
    parts = []
    for what, values in (("GPUs", list(targets.gpu_entries().values())),
                         ("CPUs", list(targets.cpu_entries().values()))):
        if values:
            low, high = min(values), max(values)
            parts.append(f"{len(values)} {what} at {low} MHz" if low == high else
                         f"{len(values)} {what} at {low}-{high} MHz")
    return ", ".join(parts) if parts else "no caps: the hardware runs at its defaults"


def desired_status(current: Mapping[str, Any] | None, said: Report, *, generation: int | None,
                   now: dt.datetime) -> dict[str, Any] | None:
    """The whole new status (the monitor's fields kept), or None when it would not change."""
    current = dict(current or {})
    candidate = dict(current)
    if said.recommendation is not None:
        candidate["recommendation"] = to_dict(said.recommendation)
    valid = (ConditionState(True, INVALID_SPEC, "; ".join(said.problems)) if said.problems else
             ConditionState(False, "Valid", "spec is valid"))
    conditions = current.get("conditions")
    states = [(CONFLICT, said.conflict), (ACTUATED, said.actuated), (INVALID_SPEC, valid)]
    if said.budgets is not None:
        candidate["budget"] = said.budgets.budget
        power, before = said.budgets.node_power, current.get("nodePower")
        # The tuners' readings move all the time; like the monitor's power, a move is news once it is a share of
        # the budget worth a write.
        if power is not None and (not isinstance(before, int | float)
                                  or abs(power - before) > NODE_POWER_MOVE * said.budgets.budget):
            candidate["nodePower"] = power
        states.append((FEASIBLE, said.budgets.feasible))
    for type, state in states:
        conditions = set_condition(conditions, type=type, status=state.status, reason=state.reason,
                                   message=state.message, observed_generation=generation, now=now)
    candidate["conditions"] = conditions
    return None if candidate == current else candidate


def _headline(summary: Recommendation) -> tuple[int | None, int | None, int | None]:
    return summary.gpu_frequency, summary.cpu_frequency, summary.target_count
