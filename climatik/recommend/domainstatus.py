"""The recommender's reconciler of PowerDomain objects: take (or compute) the split of the domains, write the node
specs it changed (the budgets of GPUs no policy budgets exist without any policy pass), and write the domain's
status: its budget in force, power, allocation per child and per policy, what is borrowed, and the conditions
Valid, MetricsAvailable, Overcommitted and Infeasible; Events when one turns bad; one gauge set per domain.

A status is rewritten when a condition or the budget in force changed, or when a figure moved by more than
`MOVE` of the budget: the readings behind it move all the time, and a steady domain costs no writes. While the
budget ramps or a schedule is set, the domain is looked at again every split interval (the ramp continues from
status.budget and status.budgetSince, so a restart resumes it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Gauge

from climatik.api import DecodeError, format_time, to_dict
from climatik.api.conditions import (
    FALSE,
    INFEASIBLE,
    METRICS_AVAILABLE,
    OVERCOMMITTED,
    TRUE,
    VALID,
    find_condition,
    set_condition,
)
from climatik.api.domain import ChildShare, PolicyShare, PowerDomain, PowerDomainStatus
from climatik.clock import Clock
from climatik.kube.client import ResourceClient
from climatik.kube.controller import Result
from climatik.kube.events import EventRecorder
from climatik.kube.shards import Hold, sole_replica
from climatik.kube.status import update_status
from climatik.kube.store import CacheReader
from climatik.recommend.core import ALLOCATOR, Recommender
from climatik.recommend.domains import DomainReport
from climatik.recommend.sharing import DomainPower
from climatik.recommend.tree import Resolved

log = structlog.get_logger(__name__)

#: A figure of the status is rewritten once it moved by this share of the budget.
MOVE = 0.03
#: Policies listed in a status, at most (the largest shares first).
SHOWN_POLICIES = 64


class DomainMetrics:
    """Gauges per domain: budget in force, power, what is allocated and borrowed, and each policy's share."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.budget = Gauge("climatik_domain_budget_watts", "The power domain's budget in force.", ["domain"],
                            registry=registry)
        self.power = Gauge("climatik_domain_power_watts",
                           "GPU power of the domain's nodes over the last second, as their tuners read it.",
                           ["domain"], registry=registry)
        self.allocated = Gauge("climatik_domain_allocated_watts", "Node budgets handed out within the domain.",
                               ["domain"], registry=registry)
        self.borrowed = Gauge("climatik_domain_borrowed_watts",
                              "The part of the domain's node budgets lent from unused headroom.", ["domain"],
                              registry=registry)
        self.policy = Gauge("climatik_domain_policy_watts", "A policy's node budgets within the domain.",
                            ["domain", "policy"], registry=registry)
        self._policies: dict[str, set[str]] = {}

    def observe(self, name: str, status: PowerDomainStatus) -> None:
        for gauge, value in ((self.budget, status.budget), (self.power, status.power),
                             (self.allocated, status.allocated), (self.borrowed, status.borrowed)):
            if value is None:
                with contextlib.suppress(KeyError):
                    gauge.remove(name)
            else:
                gauge.labels(name).set(value)
        shown = {share.name: share.watts for share in status.policies or []}
        for gone in self._policies.get(name, set()) - set(shown):
            with contextlib.suppress(KeyError):
                self.policy.remove(name, gone)
        for policy, watts in shown.items():
            self.policy.labels(name, policy).set(watts)
        self._policies[name] = set(shown)

    def forget(self, name: str) -> None:
        for gauge in (self.budget, self.power, self.allocated, self.borrowed):
            with contextlib.suppress(KeyError):
                gauge.remove(name)
        for policy in self._policies.pop(name, set()):
            with contextlib.suppress(KeyError):
                self.policy.remove(name, policy)


class DomainReconciler:
    """Reconciles one PowerDomain by name. `inputs()` reads the caches: every PowerDomain, the nodes' labels, the
    policies and the NodeFrequencies objects; `write_specs` writes the specs a pass planned (the policy
    reconciler's NodeWriter)."""

    def __init__(self, *, domains: CacheReader, api: ResourceClient, core: Recommender,
                 inputs: Callable[[], tuple[list[PowerDomain], Mapping[str, Mapping[str, str]], Mapping[str, Any],
                                            list[Any]]],
                 write_specs: Callable[[Mapping[str, Any]], list[str]], events: EventRecorder | None, clock: Clock,
                 enqueue_policy: Callable[[str], None] = lambda key: None,
                 metrics: DomainMetrics | None = None, hold: Hold = sole_replica) -> None:
        self._domains = domains
        self._hold = hold
        self._api = api
        self._core = core
        self._inputs = inputs
        self._write_specs = write_specs
        self._enqueue_policy = enqueue_policy
        self._events = events
        self._clock = clock
        self._metrics = metrics

    def __call__(self, name: str) -> Result:
        """Shards: only the replica that allocates (it owns climatik.recommend.core.ALLOCATOR) splits and writes
        the domains; the others export nothing of them."""
        with self._hold(ALLOCATOR) as allocating:
            if allocating:
                return self._reconcile(name)
        if self._metrics is not None:
            self._metrics.forget(name)
        return Result()

    def _reconcile(self, name: str) -> Result:
        obj = self._domains.get(name)
        if obj is None:
            if self._metrics is not None:
                self._metrics.forget(name)
            return Result()
        try:
            domain = PowerDomain.from_api(obj)
        except DecodeError as exc:
            log.warning("invalid_spec", controller="recommend", domain=name, problems=[str(exc)])
            return Result()
        now = self._clock.wall()
        domains, labels, policies, nodes = self._inputs()
        with self._core.lock:
            outcome = self._core.share(domains, labels, policies, nodes, now=now)
            if outcome.fresh:
                # The budgets of GPUs no policy budgets exist without any policy pass to write them.
                self._write_specs(self._core.replan(policies, nodes, origin=f"PowerDomain/{name}").writes)
        for key in sorted(outcome.moved):
            self._enqueue_policy(key)
        shared, wait = outcome.shared, outcome.wait
        if shared is None or name not in shared.tree.domains:
            return Result(requeue_after=self._core.settings.domain_interval)
        resolved = shared.tree.domains[name]
        report = shared.allocation.domains.get(name)
        status = desired_status(obj.get("status"), resolved, report, shared.power.get(name),
                                generation=domain.metadata.generation, now=now)
        if status is not None:
            self._write(obj, name, status)
            self._tell(obj, status)
        if self._metrics is not None:
            self._metrics.observe(name, PowerDomain.from_api({**obj, "status": status or obj.get("status")}).status
                                  or PowerDomainStatus())
        ramping = resolved.budget != resolved.target or bool(domain.spec.schedule and domain.spec.ramp_watts_per_second)
        interval = self._core.settings.domain_interval
        return Result(requeue_after=min(w for w in (wait, interval if ramping else None, 30.0) if w is not None))

    def _write(self, obj: dict[str, Any], name: str, status: dict[str, Any]) -> None:
        if update_status(self._api, name, lambda current: status, current=obj).written:
            log.info("domain_status_updated", controller="recommend", domain=name, budget=status.get("budget"),
                     power=status.get("power"), allocated=status.get("allocated"))

    def _tell(self, obj: dict[str, Any], status: Mapping[str, Any]) -> None:
        """Events when a condition turns bad."""
        if self._events is None:
            return
        before = (obj.get("status") or {}).get("conditions")
        for kind, bad, reason in _TOLD:
            now_condition = find_condition(status.get("conditions"), kind) or {}
            was = find_condition(before, kind) or {}
            if now_condition.get("status") == bad and was.get("status") != bad:
                self._events.warning(obj, reason, str(now_condition.get("message")))


#: Conditions told as an Event when they turn bad: type, bad status, Event reason.
_TOLD = ((VALID, FALSE, "DomainInvalid"), (OVERCOMMITTED, TRUE, "DomainOvercommitted"),
         (INFEASIBLE, TRUE, "DomainInfeasible"), (METRICS_AVAILABLE, FALSE, "DomainNoMetrics"))


def desired_status(current: Mapping[str, Any] | None, resolved: Resolved, report: DomainReport | None,
                   power: DomainPower | None, *, generation: int | None, now: dt.datetime) -> dict[str, Any] | None:
    """The domain's new status, or None when it would say nothing worth a write (see the module docstring)."""
    current = dict(current or {})
    budget = resolved.budget
    figures = PowerDomainStatus(
        observed_generation=generation,
        budget=round(budget, 1),
        target_budget=round(resolved.target, 1),
        power=power.watts if power is not None else None,
        node_count=len(resolved.nodes),
        allocated=round(report.allocated, 1) if report is not None else None,
        borrowed=report.borrowed if report is not None else None,
        children=[ChildShare(name=child, watts=round(s.watts, 1), borrowed=s.borrowed, demand=s.demand)
                  for child, s in sorted(report.children.items())] if report is not None else None,
        policies=_policies(report),
    )
    body = {key: value for key, value in to_dict(figures).items() if value is not None}
    conditions = current.get("conditions")
    for kind, (status, reason, message) in _conditions(resolved, report, power).items():
        conditions = set_condition(conditions, type=kind, status=status, reason=reason, message=message,
                                   observed_generation=generation, now=now)
    body["conditions"] = conditions
    if _same(current, body, move=MOVE * max(budget, 1.0)):
        return None
    body["lastUpdated"] = format_time(now)
    body["budgetSince"] = format_time(now) if body.get("budget") != current.get("budget") \
        else current.get("budgetSince", format_time(now))
    return body


def _policies(report: DomainReport | None) -> list[PolicyShare] | None:
    if report is None:
        return None
    shares = sorted(report.claimants.items(), key=lambda item: (-item[1].watts, item[0]))[:SHOWN_POLICIES]
    return [PolicyShare(name="(unselected)" if key.startswith("PowerDomain/") else key, watts=round(s.watts, 1),
                        borrowed=s.borrowed, guaranteed=s.guaranteed or None, demand=s.demand)
            for key, s in shares]


def _conditions(resolved: Resolved, report: DomainReport | None,
                power: DomainPower | None) -> dict[str, tuple[str, str, str]]:
    conditions: dict[str, tuple[str, str, str]] = {}
    if resolved.problems:
        conditions[VALID] = (FALSE, "InvalidTree", "; ".join(resolved.problems)[:4000])
    else:
        conditions[VALID] = (TRUE, "Valid", "the spec and its place in the tree make sense")
    if power is None or power.watts is None:
        conditions[METRICS_AVAILABLE] = (FALSE, "NoNodePower", "no node of the domain reports its GPU power"
                                         if resolved.nodes else "the selector chooses no node")
    elif power.missing:
        shown = ", ".join(power.missing[:5]) + (f" and {len(power.missing) - 5} more" if len(power.missing) > 5 else "")
        conditions[METRICS_AVAILABLE] = (FALSE, "NodesNotReporting",
                                         f"the tuners of {shown} do not report their GPU power; it is not counted")
    else:
        conditions[METRICS_AVAILABLE] = (TRUE, "AllNodesReporting",
                                         f"all {len(resolved.nodes)} nodes report their GPU power")
    if report is not None and report.overcommitted:
        conditions[OVERCOMMITTED] = (TRUE, "GuaranteesAboveBudget",
                                     f"the guarantees of {', '.join(report.overcommitted)} add up to more than the "
                                     f"budget of {resolved.budget:.0f} W; they are scaled down")
    else:
        conditions[OVERCOMMITTED] = (FALSE, "WithinBudget", "the guarantees fit within the budget")
    if report is not None and report.infeasible_floor is not None:
        conditions[INFEASIBLE] = (TRUE, "BelowFloor",
                                  f"the budget of {resolved.budget:.0f} W is under the {report.infeasible_floor:.0f} W "
                                  "the domain's GPUs draw at their lowest limits and clocks; they are held there")
    else:
        conditions[INFEASIBLE] = (FALSE, "WithinReach", "the domain's GPUs can be held under its budget")
    return conditions


def _same(current: Mapping[str, Any], body: Mapping[str, Any], *, move: float) -> bool:
    """Whether `body` says nothing `current` does not, figures within `move` watts."""
    for key, value in body.items():
        before = current.get(key)
        if key == "conditions":
            if _condition_view(before) != _condition_view(value):
                return False
        elif isinstance(value, int | float) and not isinstance(value, bool) and key not in ("nodeCount",
                                                                                            "observedGeneration"):
            if not isinstance(before, int | float) or abs(before - value) > (0.0 if key == "budget" else move):
                return False
        elif isinstance(value, list):
            if not _shares_close(before, value, move):
                return False
        elif before != value:
            return False
    return all(key in body for key in current if key not in ("lastUpdated", "budgetSince"))


def _shares_close(before: Any, after: Sequence[Mapping[str, Any]], move: float) -> bool:
    if not isinstance(before, list) or [b.get("name") for b in before] != [a.get("name") for a in after]:
        return False
    for old, new in zip(before, after, strict=True):
        for key, value in new.items():
            if isinstance(value, int | float):
                if not isinstance(old.get(key), int | float) or abs(old[key] - value) > move:
                    return False
            elif old.get(key) != value:
                return False
    return True


def _condition_view(conditions: Any) -> list[tuple[Any, ...]]:
    return sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("observedGeneration"))
                  for c in conditions or [] if isinstance(c, Mapping))

