"""The recommender's reconciler, I/O around its core (climatik.recommend.core): read the policy, every policy
and every NodeFrequencies object from the caches, run one pass, write the node specs it planned and the policy's
status, tell (Events, metrics, log lines), and let a deleted policy go only once its entries are gone
(finalizer).

Specs are written by climatik.recommend.writer. A pass plans the nodes the policy touches, and every node now and
then: a pass that changes nothing writes nothing, and a spec left behind by an earlier failure is mended by a
later pass whatever triggered it.

Sharded (`--shard`), a replica reconciles the policies it owns (`hold`) and, if it owns the allocator's key
(climatik.recommend.core.ALLOCATOR), splits the node budgets of the others too (`allocate_only`): their steps,
statuses and Events are their owners'.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from climatik.algorithms import Targets
from climatik.api import DecodedCache, DecodeError, PowerCappingPolicy
from climatik.api.conditions import ACTUATED, CONFLICT, FEASIBLE, INVALID_SPEC, find_condition, is_condition_true
from climatik.api.constants import POLICY_FINALIZER
from climatik.api.domain import PowerDomain
from climatik.clock import Clock
from climatik.kube.client import ResourceClient
from climatik.kube.controller import Result
from climatik.kube.events import EventRecorder
from climatik.kube.shards import Hold, sole_replica
from climatik.kube.status import update_object, update_status
from climatik.kube.store import CacheReader
from climatik.recommend.actuation import some
from climatik.recommend.core import ALLOCATOR, Pass, Recommender
from climatik.recommend.report import (
    ALGORITHM_FAILED,
    RELEASING,
    TUNER_NOT_RESPONDING,
    ConditionState,
    Report,
    describe,
    desired_status,
)
from climatik.recommend.step import ACTIONS, Decision
from climatik.recommend.writer import NodeWriter

#: Reads the power domains and the nodes' labels (name -> labels) from the caches.
DomainInputs = Callable[[], tuple[list[PowerDomain], Mapping[str, Mapping[str, str]]]]

log = structlog.get_logger(__name__)


class RecommendMetrics:
    """The recommender's own metrics: the clocks each policy asks for, what it did, what it wrote. Registered once
    on the process registry; the series of a deleted policy are removed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.gpu_target = Gauge("climatik_recommend_policy_gpu_target_mhz",
                                "Lowest GPU clock cap the policy asks for (absent: no GPU is capped).", ["policy"],
                                registry=registry)
        self.cpu_target = Gauge("climatik_recommend_policy_cpu_target_mhz",
                                "Lowest CPU frequency cap the policy asks for (absent: no CPU is capped).",
                                ["policy"], registry=registry)
        self.targets = Gauge("climatik_recommend_policy_targets", "GPU and CPU caps the policy asks for.",
                             ["policy"], registry=registry)
        self.actions = Counter("climatik_recommend_actions_total",
                               "Decisions per policy: lower, raise or release caps, or hold them.",
                               ["policy", "action"], registry=registry)
        self.node_writes = Counter("climatik_recommend_node_frequencies_writes_total",
                                   "NodeFrequencies objects created or whose spec was updated.", ["operation"],
                                   registry=registry)
        self.conflicting_gpus = Gauge("climatik_recommend_conflicting_gpus",
                                      "GPUs claimed by more than one policy.", registry=registry)
        self.late_nodes = Gauge("climatik_recommend_nodes_not_responding",
                                "Nodes whose tuner has not applied the policy's targets within the bound.",
                                ["policy"], registry=registry)

    def observe(self, key: str, targets: Targets, action: str) -> None:
        self.actions.labels(key, action).inc()
        self.targets.labels(key).set(len(targets.gpu_entries()) + len(targets.cpu_entries()))
        for gauge, values in ((self.gpu_target, targets.gpu_entries().values()),
                              (self.cpu_target, targets.cpu_entries().values())):
            if values:
                gauge.labels(key).set(min(values))
            else:
                with contextlib.suppress(KeyError):
                    gauge.remove(key)

    def forget(self, key: str) -> None:
        for gauge in (self.gpu_target, self.cpu_target, self.targets, self.late_nodes):
            with contextlib.suppress(KeyError):
                gauge.remove(key)
        for action in ACTIONS:
            with contextlib.suppress(KeyError):
                self.actions.remove(key, action)


class RecommendReconciler:
    """Reconciles one PowerCappingPolicy key. `enqueue` is told about other policies whose conflicts changed, so
    that their Conflict condition follows without waiting for an event of their own."""

    def __init__(self, *, policies: CacheReader, api: ResourceClient, writer: NodeWriter, core: Recommender,
                 events: EventRecorder | None, clock: Clock, enqueue: Callable[[str], None] = lambda key: None,
                 metrics: RecommendMetrics | None = None, domains: DomainInputs | None = None,
                 on_split: Callable[[], None] = lambda: None, hold: Hold = sole_replica,
                 sharded: bool = False) -> None:
        self._policies = policies
        self._hold = hold
        self._sharded = sharded
        self._domains = domains
        self._on_split = on_split
        self._last_split: object | None = None
        self._api = api
        self._writer = writer
        self._core = core
        self._events = events
        self._clock = clock
        self._enqueue = enqueue
        self._metrics = metrics
        # Every pass reads every policy; decoding each only when its resourceVersion moved keeps a pass cheap.
        self._decoded: DecodedCache[PowerCappingPolicy] = DecodedCache(PowerCappingPolicy.from_api)

    def __call__(self, key: str) -> Result:
        with self._hold(key) as owned:
            if owned:
                return self._reconcile(key)
        if self._sharded:
            with self._hold(ALLOCATOR) as allocating:
                if allocating:
                    return self._allocate_only(key)
        return Result()

    def _reconcile(self, key: str) -> Result:
        obj = self._policies.get(key)
        if obj is None:
            # Gone (its finalizer was removed by someone else, or it never had one): drop what it held.
            self._forget(key)
            self._replan(key)
            return Result()
        try:
            policy = PowerCappingPolicy.from_api(obj)
        except DecodeError as exc:
            log.warning("invalid_spec", controller="recommend", key=key, problems=[str(exc)])
            if self._events is not None:
                self._events.warning(obj, "InvalidSpec", str(exc))
            return Result()
        if policy.metadata.deletion_timestamp:
            return self._finalize(obj, policy)
        current = self._ensure_finalizer(obj, policy)
        if current is None:
            return Result()
        return self._step(current, policy)

    def _step(self, obj: dict[str, Any], policy: PowerCappingPolicy) -> Result:
        key = policy.key
        domains, labels = self._domains() if self._domains is not None else ([], {})
        with self._core.lock, self._hold(ALLOCATOR) as allocating:
            done = self._core.step(policy, self.all_policies(), self._writer.objects(), now=self._clock.wall(),
                                   domains=domains, node_labels=labels, allocate=allocating)
            written = self._written(done)
        self._note_split(done)
        self._writer.ensure(node.name for node in (policy.status.nodes or [] if policy.status else []))
        decision, said = done.decision, done.report
        assert decision is not None and said is not None
        self._write_status(obj, policy, said)
        self._tell(obj, policy, decision, said)
        if self._metrics is not None:
            output = decision.output
            self._metrics.observe(key, output.targets if output else decision.before, decision.action)
            self._metrics.late_nodes.labels(key).set(len(done.actuation.late))
        if decision.output is not None and decision.output.changed:
            log.info("targets_decided", controller="recommend", key=key, action=decision.action,
                     targets=describe(decision.output.targets), reason=decision.output.reason,
                     dry_run=bool(policy.spec.dry_run), nodes_written=written)
        return Result(requeue_after=done.recheck_after)

    def _allocate_only(self, key: str) -> Result:
        """The node budgets of a policy another shard owns (this replica allocates): split, planned, written."""
        policies = self.all_policies()
        policy = policies.get(key)
        if policy is None or policy.metadata.deletion_timestamp:
            # Gone or going: its budgets go with it (its owner removes its clock entries).
            self._replan(key)
            return Result()
        domains, labels = self._domains() if self._domains is not None else ([], {})
        with self._core.lock:
            done = self._core.allocate_only(policy, policies, self._writer.objects(),
                                            now=self._clock.wall(), domains=domains, node_labels=labels)
            written = self._written(done)
        self._note_split(done)
        if written:
            log.info("budgets_written", controller="recommend", key=key, nodes_written=written)
        return Result(requeue_after=done.recheck_after)

    def _note_split(self, done: Pass) -> None:
        """Tell `on_split` when a pass used a domain split newer than the last one seen."""
        if done.shared is not None and done.shared is not self._last_split:
            self._last_split = done.shared
            self._on_split()

    def _replan(self, origin: str) -> list[str]:
        with self._core.lock:
            return self._written(self._core.replan(self.all_policies(), self._writer.objects(), origin=origin))

    def _written(self, done: Pass) -> list[str]:
        """Write the pass's specs (raises when a write fails: the reconcile is retried) and follow up."""
        written = self._writer.write(done.writes)
        if self._metrics is not None:
            self._metrics.conflicting_gpus.set(len({c.gpu for c in done.plan.conflicts}))
        for other in sorted(done.moved):
            self._enqueue(other)
        return written

    def all_policies(self) -> dict[str, PowerCappingPolicy]:
        """Every cached policy, typed (one that does not decode is left out and logged)."""
        policies = {}
        for decoded in self._decoded.decode_all(self._policies.list()):
            if isinstance(decoded, Exception):
                # The schema makes this all but impossible; such a policy is left out like a deleted one.
                log.warning("policy_undecodable", controller="recommend", error=str(decoded))
                continue
            policies[decoded.key] = decoded
        return policies

    def _write_status(self, obj: dict[str, Any], policy: PowerCappingPolicy, said: Report) -> None:
        generation = policy.metadata.generation
        now = self._clock.wall()

        def mutate(current: dict[str, Any]) -> dict[str, Any] | None:
            return desired_status(current.get("status"), said, generation=generation, now=now)

        if update_status(self._api, policy.key, mutate, current=obj).written:
            log.info("status_updated", controller="recommend", key=policy.key, actuated=said.actuated.reason,
                     conflict=said.conflict.status)

    def _tell(self, obj: dict[str, Any], policy: PowerCappingPolicy, decision: Decision, said: Report) -> None:
        """Events on transitions (a condition turning bad) and on every change of targets."""
        if self._events is None:
            return
        conditions = (obj.get("status") or {}).get("conditions")
        if said.problems and not is_condition_true(conditions, INVALID_SPEC):
            self._events.warning(obj, "InvalidSpec", "; ".join(said.problems))
        actuated = find_condition(conditions, ACTUATED) or {}
        if decision.failure is not None and actuated.get("reason") != ALGORITHM_FAILED:
            self._events.warning(obj, "AlgorithmFailed", decision.failure)
        if said.conflict.status and not is_condition_true(conditions, CONFLICT):
            self._events.warning(obj, "Conflict", said.conflict.message)
        if said.actuated.reason == TUNER_NOT_RESPONDING and actuated.get("reason") != TUNER_NOT_RESPONDING:
            self._events.warning(obj, TUNER_NOT_RESPONDING, said.actuated.message)
        feasible = find_condition(conditions, FEASIBLE) or {}
        if said.budgets is not None and not said.budgets.feasible.status and feasible.get("status") != "False":
            self._events.warning(obj, "CapInfeasible", said.budgets.feasible.message)
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

    def _finalize(self, obj: dict[str, Any], policy: PowerCappingPolicy) -> Result:
        """Remove the policy's entries from every NodeFrequencies object, wait (within a bound) for the tuners to
        acknowledge, then remove the finalizer."""
        key = policy.key
        self._forget(key)
        if POLICY_FINALIZER not in (policy.metadata.finalizers or []):
            return Result()
        # The plan gives a policy being deleted no entries; a failed write raises and the deletion is retried.
        with self._core.lock:
            holding = self._writer.objects()
            written = self._written(self._core.replan(self.all_policies(), holding, origin=key))
            waiting, timed_out = self._core.acks.releasing(key, holding, written, self._clock.wall().timestamp())
        if waiting and not timed_out:
            self._write_releasing(obj, policy, waiting)
            return Result(requeue_after=2.0)
        if waiting and self._events is not None:
            self._events.warning(obj, "NodesStillCapped",
                                 f"the tuners of {some(waiting)} did not remove this policy's caps within "
                                 f"{self._core.acks.release_timeout:.0f} s; they keep them until their tuner "
                                 "returns and restores the defaults of entries that are gone")

        def remove(current: dict[str, Any]) -> dict[str, Any] | None:
            metadata = current.setdefault("metadata", {})
            finalizers = list(metadata.get("finalizers") or [])
            if POLICY_FINALIZER not in finalizers:
                return None
            metadata["finalizers"] = [f for f in finalizers if f != POLICY_FINALIZER]
            return current

        if update_object(self._api, key, remove, current=obj).written:
            log.info("finalizer_removed", controller="recommend", key=key, nodes_written=written,
                     still_capped=list(waiting))
        self._core.acks.released(key)
        return Result()

    def _write_releasing(self, obj: dict[str, Any], policy: PowerCappingPolicy, waiting: tuple[str, ...]) -> None:
        message = f"deleted: waiting for the tuners of {some(waiting)} to remove its caps"
        said = Report(recommendation=None, actuated=ConditionState(False, RELEASING, message),
                      conflict=ConditionState(False, "NoSharedGpus", "the policy is being deleted"))
        self._write_status(obj, policy, said)

    def _forget(self, key: str) -> None:
        self._core.forget(key)
        if self._metrics is not None:
            self._metrics.forget(key)
