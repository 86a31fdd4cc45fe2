"""The monitor's two reconcilers, I/O around its core: the sampler, which queries Prometheus once per cycle
for every policy, and the policy reconciler, which reads a policy and its pods from the caches, asks the core
(climatik.monitor.core) for the verdict and the status, writes it, and tells (Events, metrics, log lines).

The sampler reads only the series of the pods some policy selects (`sampling_scope`, climatik.prom.scope), and
each policy is judged on the pods it selected then, the very pods whose series were read: they are selected once
per cycle, and a pod started since waits for the next sample instead of counting as missing. A policy created
after a sample was taken is measured from the next one: the last sample did not read its pods.
Policies are decoded once per resourceVersion (`DecodedPolicies`), and a status is built for writing only when
the core says a write is due, so that a steady cycle costs little more than the reading."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, NamedTuple

import structlog
from prometheus_client import CollectorRegistry, Gauge

from climatik.api import DecodeError, LabelSelector, PolicySpec, PowerCappingPolicy
from climatik.api.conditions import METRICS_AVAILABLE, find_condition
from climatik.clock import Clock
from climatik.kube.client import ResourceClient
from climatik.kube.controller import Result
from climatik.kube.events import EventRecorder
from climatik.kube.shards import Hold, sole_replica
from climatik.kube.status import update_status
from climatik.kube.store import BY_NAMESPACE, CacheReader, resource_version_of
from climatik.monitor.core import (
    Rules,
    SampleOutcome,
    SelectedPod,
    Selection,
    Verdict,
    desired_status,
    evaluate,
    is_running_on_a_node,
    select_pods,
)
from climatik.prom.errors import PromError
from climatik.prom.scope import Scope
from climatik.prom.snapshot import GpuSnapshot

log = structlog.get_logger(__name__)

#: The one key of the sampler's queue.
SAMPLE_KEY = "prometheus"
#: Pod index by "namespace/key=value" of each label, so a matchLabels selector reads only its candidates.
BY_LABEL = "label"


def index_by_label(pod: Mapping[str, Any]) -> list[str]:
    """One index value per label: "namespace/key=value"."""
    metadata = pod.get("metadata") or {}
    namespace = metadata.get("namespace", "")
    return [f"{namespace}/{key}={value}" for key, value in (metadata.get("labels") or {}).items()]


def candidate_pods(pods: CacheReader, namespace: str, selector: LabelSelector) -> list[dict[str, Any]]:
    """The pods that can match `selector`: those carrying its rarest matchLabels pair, else the whole namespace.

    With many policies in one namespace this keeps a cycle from testing every selector against every pod.
    """
    buckets = [pods.by_index(BY_LABEL, f"{namespace}/{key}={value}")
               for key, value in (selector.match_labels or {}).items()]
    if buckets:
        return min(buckets, key=len)
    return pods.by_index(BY_NAMESPACE, namespace)


class PodSelections:
    """Each policy's selected pods, selected again only when its selector or one of its candidate pods changed.

    The cache replaces a pod's object whenever the pod changes, and lists a bucket's pods in a stable order, so
    candidates that are the very objects of the last selection select the same pods. Used by the sampler's thread
    only; `keep` drops the policies a cycle no longer selects for."""

    def __init__(self, pods: CacheReader) -> None:
        self._pods = pods
        self._last: dict[str, tuple[LabelSelector, list[dict[str, Any]], tuple[SelectedPod, ...]]] = {}

    @property
    def pods(self) -> CacheReader:
        return self._pods

    def select(self, key: str, namespace: str, selector: LabelSelector) -> tuple[SelectedPod, ...]:
        candidates = candidate_pods(self._pods, namespace, selector)
        last = self._last.get(key)
        if (last is not None and last[0] == selector and len(last[1]) == len(candidates)
                and all(a is b for a, b in zip(last[1], candidates, strict=True))):
            return last[2]
        chosen = tuple(select_pods(selector, candidates))
        self._last[key] = (selector, candidates, chosen)
        return chosen

    def keep(self, keys: Collection[str]) -> None:
        for key in self._last.keys() - set(keys):
            del self._last[key]


class DecodedPolicies:
    """The cached policies, each decoded once per resourceVersion (decoding a policy with its status is most of a
    steady reconcile's cost). Thread-safe: a race decodes twice, harmlessly."""

    def __init__(self, policies: CacheReader) -> None:
        self._policies = policies
        self._decoded: dict[str, tuple[str, PowerCappingPolicy | DecodeError]] = {}

    def policy_keys(self) -> list[str]:
        return self._policies.keys()

    def get(self, key: str) -> tuple[Mapping[str, Any], PowerCappingPolicy | DecodeError] | None:
        """The cached object and its decoding (or why it does not decode); None once the policy is gone."""
        obj = self._policies.get(key)
        if obj is None:
            self._decoded.pop(key, None)
            return None
        version = resource_version_of(obj)
        found = self._decoded.get(key)
        if found is not None and version and found[0] == version:
            return obj, found[1]
        try:
            policy: PowerCappingPolicy | DecodeError = PowerCappingPolicy.from_api(obj)
        except DecodeError as exc:
            policy = exc
        self._decoded[key] = (version, policy)
        return obj, policy


class Sampling(NamedTuple):
    """What the next sample reads (`scope`; `clocks` for the SM clocks), the policies it serves, and the pods each
    of them selects. `unclocked` are the policies whose clocks `clocks` leaves out, each with the power at or
    above which the sample reads them after all (climatik.monitor.core.clock_level)."""

    scope: Scope
    policies: frozenset[str]
    selected: Mapping[str, Selection]
    clocks: Scope
    unclocked: Mapping[str, float]

    def late_clocks(self, snapshot: GpuSnapshot) -> Scope:
        """The pods of the `unclocked` policies that drew at least their level in `snapshot`: their clocks are
        to be read at the snapshot's time."""
        names: dict[str, set[str]] = {}
        for key, level in self.unclocked.items():
            pods = [pod.key for pod in self.selected[key].pods]
            if pods and snapshot.total_for(pods).watts >= level:
                for pod in pods:
                    names.setdefault(pod.namespace, set()).add(pod.name)
        return Scope.of_pods(names)


def sampling_scope(policies: DecodedPolicies, pods: CacheReader | PodSelections,
                   owns: Callable[[str], bool] = lambda _key: True,
                   clock_level: Callable[[PowerCappingPolicy], float] = lambda _policy: 0.0) -> Sampling:
    """What the next sample reads: the running pods each policy this replica `owns` selects, by namespace, and
    the SM clocks of those whose `clock_level` is 0 (climatik.monitor.core.clock_level). The selections go with the
    sample, so that each policy is judged on the very pods whose series were read, and its pods are selected once
    per cycle (with `PodSelections` kept between cycles, only when they changed)."""
    selections = pods if isinstance(pods, PodSelections) else PodSelections(pods)
    names: dict[str, set[str]] = {}
    clocked: dict[str, set[str]] = {}
    unclocked: dict[str, float] = {}
    keys = []
    selected: dict[str, Selection] = {}
    for key in policies.policy_keys():
        if not owns(key):
            continue
        found = policies.get(key)
        if found is None or isinstance(found[1], DecodeError):
            continue
        keys.append(key)
        policy = found[1]
        namespace, selector = policy.metadata.namespace or "", policy.spec.selector
        if selector.problems():
            continue
        chosen = selections.select(key, namespace, selector)
        selected[key] = Selection(selector, chosen)
        names.setdefault(namespace, set()).update(pod.key.name for pod in chosen)
        if not chosen:
            continue
        level = clock_level(policy)
        if level > 0:
            unclocked[key] = level
        else:
            clocked.setdefault(namespace, set()).update(pod.key.name for pod in chosen)
    selections.keep(selected)
    counted: dict[str, int] = {}

    def running(namespace: str) -> int:
        if namespace not in counted:
            counted[namespace] = sum(1 for pod in selections.pods.by_index(BY_NAMESPACE, namespace)
                                     if is_running_on_a_node(pod))
        return counted[namespace]

    scope = Scope.of({namespace: found for namespace, found in names.items() if found}, running)
    clock_scope = Scope.of(clocked, running) if unclocked else scope  # none left out: the same pods
    return Sampling(scope, frozenset(keys), selected, clock_scope, unclocked)


class LatestSample:
    """Holds the newest sample outcome for the policy reconcilers. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcome: SampleOutcome | None = None

    def set(self, outcome: SampleOutcome) -> None:
        with self._lock:
            self._outcome = outcome

    def get(self) -> SampleOutcome | None:
        with self._lock:
            return self._outcome


class Sampler:
    """Reconciler of SAMPLE_KEY: query Prometheus once (`fetch` the power of a scope and the SM clocks of another;
    `add_clocks` of the policies whose power reached their clock level in this very sample), publish the
    outcome, queue every policy, and come back after `interval` seconds. Running it through the controller
    runner gives it the runner's lifecycle (it starts only while leading and stops with the process)."""

    def __init__(self, *, fetch: Callable[[Scope, Scope], GpuSnapshot],
                 add_clocks: Callable[[GpuSnapshot, Scope], GpuSnapshot], scope: Callable[[], Sampling],
                 latest: LatestSample, clock: Clock, policy_keys: Callable[[], Iterable[str]],
                 enqueue: Callable[[str], None], interval: float) -> None:
        self._fetch = fetch
        self._add_clocks = add_clocks
        self._scope = scope
        self._latest = latest
        self._clock = clock
        self._policy_keys = policy_keys
        self._enqueue = enqueue
        self._interval = interval
        self._failing = False

    def __call__(self, key: str) -> Result:
        started = self._clock.now()
        taken_at = self._clock.wall().timestamp()
        sampling = self._scope()
        try:
            snapshot = self._fetch(sampling.scope, sampling.clocks)
            outcome = SampleOutcome(self._with_late_clocks(snapshot, sampling), None, taken_at,
                                    policies=sampling.policies, selected=sampling.selected)
            if self._failing:
                log.info("prometheus_recovered", controller="monitor")
            self._failing = False
        except PromError as exc:
            outcome = SampleOutcome(None, exc, taken_at)
            if not self._failing:
                log.warning("prometheus_query_failed", controller="monitor", error=str(exc), reason=exc.reason)
            self._failing = True
        self._latest.set(outcome)
        for policy in self._policy_keys():
            self._enqueue(policy)
        # The period runs from the start of one sample to the next, however long the queries took.
        return Result(requeue_after=max(0.0, self._interval - (self._clock.now() - started)))


    def _with_late_clocks(self, snapshot: GpuSnapshot, sampling: Sampling) -> GpuSnapshot:
        """The snapshot with the clocks of the policies that reached their clock level in it. When that read
        fails, the power stands without them: the algorithms can step without clocks, not without power."""
        late = sampling.late_clocks(snapshot)
        if late.empty:
            return snapshot
        try:
            return self._add_clocks(snapshot, late)
        except PromError as exc:
            log.warning("prometheus_clock_read_failed", controller="monitor", error=str(exc), reason=exc.reason,
                        namespaces=sorted(late.namespaces))
            return snapshot


class MonitorMetrics:
    """The monitor's per-policy metrics: power, limit, headroom, capping state and data availability. Registered
    once on the process registry; series of deleted policies are removed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["policy"]
        self.power = Gauge("climatik_monitor_policy_power_watts", "Power of the policy's workload.", labels,
                           registry=registry)
        self.limit = Gauge("climatik_monitor_policy_limit_watts", "The policy's powerCapLimit.", labels,
                           registry=registry)
        self.threshold = Gauge("climatik_monitor_policy_threshold_watts", "Power at which capping starts.", labels,
                               registry=registry)
        self.headroom = Gauge("climatik_monitor_policy_headroom_watts", "Limit minus power.", labels,
                              registry=registry)
        self.capping = Gauge("climatik_monitor_policy_capping", "1 while capping is required.", labels,
                             registry=registry)
        self.available = Gauge("climatik_monitor_policy_metrics_available", "1 while fresh, complete data exists.",
                               labels, registry=registry)
        self._all = (self.power, self.limit, self.threshold, self.headroom, self.capping, self.available)

    def observe(self, key: str, spec: PolicySpec, verdict: Verdict) -> None:
        self.limit.labels(key).set(spec.power_cap_limit)
        self.threshold.labels(key).set(spec.threshold_watts)
        self.capping.labels(key).set(1 if verdict.capping.required else 0)
        self.available.labels(key).set(1 if verdict.metrics_available else 0)
        if verdict.measurement is not None:
            self.power.labels(key).set(verdict.measurement.power)
            self.headroom.labels(key).set(spec.power_cap_limit - verdict.measurement.power)

    def forget(self, key: str) -> None:
        for gauge in self._all:
            with contextlib.suppress(KeyError):
                gauge.remove(key)


class MonitorReconciler:
    """Reconciles one PowerCappingPolicy key against the latest Prometheus sample."""

    def __init__(self, *, policies: CacheReader | DecodedPolicies, pods: CacheReader, api: ResourceClient,
                 latest: LatestSample, events: EventRecorder | None, clock: Clock,
                 metrics: MonitorMetrics | None = None, rules: Rules | None = None,
                 hold: Hold = sole_replica) -> None:
        self._policies = policies if isinstance(policies, DecodedPolicies) else DecodedPolicies(policies)
        self._hold = hold
        self._pods = pods
        self._api = api
        self._latest = latest
        self._events = events
        self._clock = clock
        self._metrics = metrics
        self._rules = rules or Rules()

    def __call__(self, key: str) -> Result:
        with self._hold(key) as owned:
            found = self._policies.get(key) if owned else None
            if found is None:  # gone, or another shard's: its series are that shard's to export
                if self._metrics is not None:
                    self._metrics.forget(key)
                return Result()
            return self._reconcile(key, *found)

    def _reconcile(self, key: str, obj: Mapping[str, Any], policy: PowerCappingPolicy | DecodeError) -> Result:
        if isinstance(policy, DecodeError):
            # The recommender, the one writer of InvalidSpec, reports it; measuring needs a spec.
            log.warning("invalid_spec", controller="monitor", key=key, problems=[str(policy)])
            return Result()
        outcome = self._latest.get()
        if outcome is None or not outcome.serves(key):
            # Nothing measured yet (just started, or just became the leader), or not for this policy (created since
            # the last sample, which did not read its pods): the status in the API server is the best knowledge
            # there is, so it stays as it is; the next sample queues every policy.
            return Result()
        selector = policy.spec.selector
        pods = outcome.pods_of(key, selector)
        if pods is None:  # the sample selected none for it (it failed), or the policy changed since
            namespace = policy.metadata.namespace or ""
            pods = () if selector.problems() else tuple(select_pods(selector, candidate_pods(self._pods, namespace,
                                                                                               selector)))
        verdict = evaluate(policy, pods, outcome, now=self._clock.wall(), rules=self._rules)
        self._write(obj, policy, verdict)
        if self._metrics is not None:
            self._metrics.observe(key, policy.spec, verdict)
        return Result()

    def _write(self, obj: Mapping[str, Any], policy: PowerCappingPolicy, verdict: Verdict) -> None:
        generation = policy.metadata.generation
        limit = policy.spec.power_cap_limit

        def mutate(current: Mapping[str, Any]) -> dict[str, Any] | None:
            return desired_status(current.get("status"), verdict, limit=limit, generation=generation,
                                  now=self._clock.wall(), rules=self._rules)

        # Asked of the cached object first: most cycles write nothing, and copying an object to edit it costs.
        if mutate(obj) is None:
            return
        result = update_status(self._api, policy.key, mutate, current=obj)
        if not result.written:
            return
        log.info("status_updated", controller="monitor", key=policy.key, power=verdict.measurement
                 and verdict.measurement.power, capping=verdict.capping.required, reason=verdict.capping.reason)
        self._tell(obj, policy, verdict)

    def _tell(self, obj: Mapping[str, Any], policy: PowerCappingPolicy, verdict: Verdict) -> None:
        if self._events is None:
            return
        was = bool(policy.status and policy.status.capping_action_required)
        if verdict.capping.required and not was:
            self._events.normal(obj, "CappingStarted", verdict.capping.message)
        elif was and not verdict.capping.required:
            self._events.normal(obj, "CappingReleased", verdict.capping.message)
        had_metrics = find_condition((obj.get("status") or {}).get("conditions"), METRICS_AVAILABLE)
        if not verdict.metrics_available and (had_metrics is None or had_metrics.get("status") != "False"):
            self._events.warning(obj, "MetricsLost", f"{verdict.metrics_reason}: {verdict.metrics_message}")
