"""From one step's decision and the plan's verdict on conflicts to what the policy's status says: the
recommendation summary and the Actuated and Conflict conditions. Pure.

Actuated is False, by precedence, with reason Invalid (the spec is invalid: the policy holds the entries it
had and drives nothing new), DryRun, AlgorithmFailed (the last result is held), Conflict (another policy drives
some of its GPUs) or WaitingForInventory (a GPU's tuner has not reported its clocks yet); otherwise True with
reason Holding (the fail-safe held the targets) or TargetsWritten.
"""

from __future__ import annotations

from dataclasses import replace

from climatik.algorithms import Targets
from climatik.api import PowerCappingPolicy, Recommendation
from climatik.recommend.conflicts import ConflictReport
from climatik.recommend.status import ConditionState, Report
from climatik.recommend.step import Decision
from climatik.recommend.summary import recommendation

INVALID = "Invalid"
DRY_RUN = "DryRun"
ALGORITHM_FAILED = "AlgorithmFailed"
CONFLICT = "Conflict"
WAITING_FOR_INVENTORY = "WaitingForInventory"
HOLDING = "Holding"
TARGETS_WRITTEN = "TargetsWritten"

#: Actuated reasons under which the targets in the summary were not written (recommendation.applied false).
NOT_APPLIED = (INVALID, DRY_RUN, ALGORITHM_FAILED, CONFLICT)

_SHOWN = 5


def report(policy: PowerCappingPolicy, decision: Decision, conflict: ConflictReport, *, now: str) -> Report:
    """What the status should say after `decision`; `now` (RFC 3339) dates a change of targets."""
    actuated = actuated_state(policy, decision, conflict)
    previous = policy.status.recommendation if policy.status else None
    summary: Recommendation | None = None
    output = decision.output
    if output is not None:
        summary = recommendation(algorithm=output.algorithm, targets=output.targets, state_text=output.state_text,
                                 applied=actuated.reason not in NOT_APPLIED, changed=output.changed,
                                 previous=previous, now=now)
        if previous is not None and _headline(previous) != _headline(summary):
            # Also after a restart, or when a write of the last change was lost: the status tells the truth.
            summary = replace(summary, last_changed=now)
    elif previous is not None:
        summary = replace(previous, applied=False)
    return Report(recommendation=summary, actuated=actuated,
                  conflict=ConditionState(conflict.active, conflict.reason, conflict.message),
                  problems=decision.problems)


def actuated_state(policy: PowerCappingPolicy, decision: Decision, conflict: ConflictReport) -> ConditionState:
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
                                               f"{_some(conflict.lost)}")
    if output.waiting_for_inventory:
        waiting = output.waiting_for_inventory
        return ConditionState(False, WAITING_FOR_INVENTORY,
                              f"no hardware inventory yet for {len(waiting)} GPUs: {_some(waiting)}")
    if decision.held is not None:
        return ConditionState(True, HOLDING, f"the last targets are held: {decision.held}")
    return ConditionState(True, TARGETS_WRITTEN, describe(output.targets))


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


def _headline(summary: Recommendation) -> tuple[int | None, int | None, int | None]:
    return summary.gpu_frequency, summary.cpu_frequency, summary.target_count


def _some(items: tuple[str, ...]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown if len(items) <= _SHOWN else f"{shown} and {len(items) - _SHOWN} more"
