"""The recommender's policy reconciler: step the policy's algorithm, re-plan and write NodeFrequencies specs,
report in the policy's status, and let a deleted policy go only once its entries are gone (finalizer)."""

from __future__ import annotations

from typing import Any

import structlog

from climatik.algorithms import AlgorithmRegistry
from climatik.api import DecodeError, PowerCappingPolicy, format_time
from climatik.api.constants import POLICY_FINALIZER
from climatik.clock import Clock
from climatik.kube.client import ResourceClient
from climatik.kube.controller import Result
from climatik.kube.events import EventRecorder
from climatik.kube.status import update_object, update_status
from climatik.kube.store import CacheReader
from climatik.recommend.conflicts import conflict_report
from climatik.recommend.memory import Memory
from climatik.recommend.metrics import RecommendMetrics
from climatik.recommend.nodes import NodeWriter
from climatik.recommend.planner import Planner
from climatik.recommend.report import ALGORITHM_FAILED, describe, report
from climatik.recommend.status import ACTUATED, CONFLICT, INVALID_SPEC, Report, condition_of, recommend_status
from climatik.recommend.step import Decision, StepSettings, decide

log = structlog.get_logger(__name__)


class RecommendReconciler:
    """Reconciles one PowerCappingPolicy key. See plan.py for how the policies' targets become specs."""

    def __init__(self, *, policies: CacheReader, api: ResourceClient, writer: NodeWriter, planner: Planner,
                 memory: Memory, registry: AlgorithmRegistry, events: EventRecorder | None, clock: Clock,
                 metrics: RecommendMetrics | None = None, settings: StepSettings | None = None) -> None:
        self._policies = policies
        self._api = api
        self._writer = writer
        self._planner = planner
        self._memory = memory
        self._registry = registry
        self._events = events
        self._clock = clock
        self._metrics = metrics
        self._settings = settings or StepSettings()

    def __call__(self, key: str) -> Result:
        obj = self._policies.get(key)
        if obj is None:
            # Gone (its finalizer was removed by someone else, or it never had one): drop what it held.
            self._forget(key)
            self._planner.replan(origin=key)
            return Result()
        try:
            policy = PowerCappingPolicy.from_api(obj)
        except DecodeError as exc:
            log.warning("invalid_spec", controller="recommend", key=key, problems=[str(exc)])
            if self._events is not None:
                self._events.warning(obj, "InvalidSpec", str(exc))
            return Result()
        if policy.metadata.deletion_timestamp:
            self._finalize(obj, policy)
            return Result()
        current = self._ensure_finalizer(obj, policy)
        if current is None:
            return Result()
        self._step(current, policy)
        return Result()

    def _step(self, obj: dict[str, Any], policy: PowerCappingPolicy) -> None:
        key = policy.key
        decision = decide(policy, self._writer.objects(), registry=self._registry, previous=self._memory.get(key),
                          now=self._clock.wall().timestamp(), settings=self._settings)
        self._writer.ensure(node.name for node in (policy.status.nodes or [] if policy.status else []))
        if decision.output is not None:
            self._memory.put(key, decision.output)
        elif decision.problems:
            self._memory.forget(key)
        planned = self._planner.replan(origin=key)
        conflict = conflict_report(key, planned.plan.conflicts_of(key), planned.policies)
        said = report(policy, decision, conflict, now=format_time(self._clock.wall()))
        self._write_status(obj, policy, said)
        self._tell(obj, policy, decision, said)
        if self._metrics is not None:
            output = decision.output
            self._metrics.observe(key, output.targets if output else decision.before, decision.action)
        if decision.output is not None and decision.output.changed:
            log.info("targets_decided", controller="recommend", key=key, action=decision.action,
                     targets=describe(decision.output.targets), reason=decision.output.reason,
                     dry_run=bool(policy.spec.dry_run), nodes_written=list(planned.written))

    def _write_status(self, obj: dict[str, Any], policy: PowerCappingPolicy, said: Report) -> None:
        generation = policy.metadata.generation
        now = self._clock.wall()

        def mutate(current: dict[str, Any]) -> dict[str, Any] | None:
            return recommend_status(current.get("status"), said, generation=generation, now=now)

        if update_status(self._api, policy.key, mutate, current=obj).written:
            log.info("status_updated", controller="recommend", key=policy.key, actuated=said.actuated.reason,
                     conflict=said.conflict.status)

    def _tell(self, obj: dict[str, Any], policy: PowerCappingPolicy, decision: Decision, said: Report) -> None:
        """Events on transitions (a condition turning bad) and on every change of targets."""
        if self._events is None:
            return
        status = obj.get("status")
        if said.problems and condition_of(status, INVALID_SPEC).get("status") != "True":
            self._events.warning(obj, "InvalidSpec", "; ".join(said.problems))
        was_failing = condition_of(status, ACTUATED).get("reason") == ALGORITHM_FAILED
        if decision.failure is not None and not was_failing:
            self._events.warning(obj, "AlgorithmFailed", decision.failure)
        if said.conflict.status and condition_of(status, CONFLICT).get("status") != "True":
            self._events.warning(obj, "Conflict", said.conflict.message)
        output = decision.output
        if output is None or not output.changed:
            return
        message = f"{decision.action}: {describe(output.targets)} ({output.reason})"
        if policy.spec.dry_run:
            self._events.normal(obj, "DryRunTargets", f"would {message}")
        else:
            self._events.normal(obj, "TargetsChanged", message)

    def _ensure_finalizer(self, obj: dict[str, Any], policy: PowerCappingPolicy) -> dict[str, Any] | None:
        """The policy with the finalizer in place (added on its first reconcile); None if it is gone."""
        if POLICY_FINALIZER in (policy.metadata.finalizers or []):
            return obj

        def add(current: dict[str, Any]) -> dict[str, Any] | None:
            metadata = current.setdefault("metadata", {})
            finalizers = list(metadata.get("finalizers") or [])
            if POLICY_FINALIZER in finalizers or metadata.get("deletionTimestamp"):
                return None
            metadata["finalizers"] = [*finalizers, POLICY_FINALIZER]
            return current

        result = update_object(self._api, policy.key, add, current=obj)
        if result.written:
            log.info("finalizer_added", controller="recommend", key=policy.key)
        return result.object

    def _finalize(self, obj: dict[str, Any], policy: PowerCappingPolicy) -> None:
        """Remove the policy's entries from every NodeFrequencies object, then its finalizer."""
        key = policy.key
        self._forget(key)
        if POLICY_FINALIZER not in (policy.metadata.finalizers or []):
            return
        # plan.py gives a policy being deleted no entries; a failed write raises and the deletion is retried.
        planned = self._planner.replan(origin=key)

        def remove(current: dict[str, Any]) -> dict[str, Any] | None:
            metadata = current.setdefault("metadata", {})
            finalizers = list(metadata.get("finalizers") or [])
            if POLICY_FINALIZER not in finalizers:
                return None
            metadata["finalizers"] = [f for f in finalizers if f != POLICY_FINALIZER]
            return current

        if update_object(self._api, key, remove, current=obj).written:
            log.info("finalizer_removed", controller="recommend", key=key, nodes_written=list(planned.written))

    def _forget(self, key: str) -> None:
        self._memory.forget(key)
        if self._metrics is not None:
            self._metrics.forget(key)

