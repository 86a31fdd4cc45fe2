"""What the recommender tells about a policy: the recommendation summary, the Actuated, Conflict, InvalidSpec and
Feasible conditions, and the status to write (the monitor's fields kept).

Actuated is False, by precedence, with reason Invalid (the spec is invalid: the policy holds the entries it
had and drives nothing new), DryRun, AlgorithmFailed (the last result is held), Conflict (another policy drives
some of its GPUs), WaitingForInventory (a GPU's tuner has not reported its clocks yet) or MigNotCapped (all its
GPUs are MIG instances, measured but never capped); otherwise True with reason Holding (the fail-safe held the
targets) or TargetsWritten, once the tuners acknowledged (climatik.recommend.actuation). Nothing in a report
moves with time alone: an unchanged decision gives an unchanged status, which costs no write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from climatik.algorithms import Targets
from climatik.api import NodeObservation, PowerCappingPolicy, Recommendation, to_dict
from climatik.api.conditions import ACTUATED, CONFLICT, FEASIBLE, INVALID_SPEC, set_condition
from climatik.recommend.actuation import Actuation, some
from climatik.recommend.plan import ConflictReport
from climatik.recommend.step import Decision

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


def feasible(budget: float, floor: float | None) -> ConditionState:
    if floor is None:
        return ConditionState(True, WITHIN_REACH, f"the policy's GPUs can be held under its budget of {budget:.0f} W")
    return ConditionState(False, BELOW_FLOOR, f"the budget of {budget:.0f} W is under the {floor:.0f} W the "
                                              "policy's GPUs draw at their lowest limits and clocks; they are held "
                                              "at their floor")



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
    """The whole new status (the monitor's fields kept), or None when it would not change, or when only what rides
    along changed for a policy at rest."""
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
    if candidate == current or (_at_rest(candidate) and _news(candidate) == _news(current)):
        return None
    return candidate


#: Top-level status fields that move with every observation: the tuners' power (the algorithm's persisted state,
#: what a restart resumes from, moves too and is left out of the news by `_news` inside status.recommendation).
#: While a policy is at rest they ride along with the next write that says something new
#: (a monitor's heartbeat wakes the recommender once a minute, and most wake-ups carry news), instead of costing a
#: write each: a policy under its threshold whose load moves by a few percent a second would otherwise be written
#: every second, by the recommender as by the monitor.
_RIDE_ALONG = ("nodePower",)


def _at_rest(status: Mapping[str, Any]) -> bool:
    """No capping required and no caps held: nothing the recommender does depends on what moves."""
    summary = status.get("recommendation")
    held = isinstance(summary, Mapping) and bool(summary.get("targetCount"))
    return not status.get("cappingActionRequired") and not held


def _news(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status without what rides along (a first value is news)."""
    news = {key: value if key not in _RIDE_ALONG else None for key, value in status.items()}
    summary = news.get("recommendation")
    if isinstance(summary, Mapping):
        news["recommendation"] = {key: value for key, value in summary.items() if key != "state"}
    return news


def _headline(summary: Recommendation) -> tuple[int | None, int | None, int | None]:
    return summary.gpu_frequency, summary.cpu_frequency, summary.target_count
