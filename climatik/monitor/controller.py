"""The monitor's policy reconciler: measure the policy on the latest sample, decide, write status, tell."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from climatik.api import DecodeError, PolicySpec, PowerCappingPolicy
from climatik.api.conditions import find_condition, is_condition_true
from climatik.api.constants import DEFAULT_RELEASE_BAND
from climatik.clock import Clock
from climatik.kube.client import ResourceClient
from climatik.kube.controller import Result
from climatik.kube.events import EventRecorder
from climatik.kube.status import update_status
from climatik.kube.store import CacheReader
from climatik.monitor.decision import CappingDecision, decide
from climatik.monitor.measure import measure
from climatik.monitor.metrics import MonitorMetrics
from climatik.monitor.pods import candidate_pods, select_pods
from climatik.monitor.sampling import LatestSample, SampleOutcome
from climatik.monitor.status import INVALID_SPEC, METRICS_AVAILABLE, Verdict, WritePolicy, monitor_status

log = structlog.get_logger(__name__)

#: Checks of a spec the schema cannot express (selector, algorithm and parameters); [] when valid.
SpecValidator = Callable[[PolicySpec], list[str]]


class MonitorReconciler:
    """Reconciles one PowerCappingPolicy key against the latest Prometheus sample."""

    def __init__(self, *, policies: CacheReader, pods: CacheReader, api: ResourceClient, latest: LatestSample,
                 events: EventRecorder | None, clock: Clock, metrics: MonitorMetrics | None = None,
                 validate: SpecValidator = lambda spec: spec.selector.problems(), max_age: float = 30.0,
                 release_band: int = DEFAULT_RELEASE_BAND, rules: WritePolicy | None = None) -> None:
        self._policies = policies
        self._pods = pods
        self._api = api
        self._latest = latest
        self._events = events
        self._clock = clock
        self._metrics = metrics
        self._validate = validate
        self._max_age = max_age
        self._band = release_band
        self._rules = rules or WritePolicy()

    def __call__(self, key: str) -> Result:
        obj = self._policies.get(key)
        if obj is None:
            if self._metrics is not None:
                self._metrics.forget(key)
            return Result()
        try:
            policy = PowerCappingPolicy.from_api(obj)
        except DecodeError as exc:
            self._invalid(obj, key, [str(exc)])
            return Result()
        problems = self._validate(policy.spec)
        verdict = self._verdict(policy, self._latest.get(), problems)
        self._write(obj, policy, verdict)
        if self._metrics is not None:
            self._metrics.observe(key, policy.spec, verdict)
        return Result()

    def _verdict(self, policy: PowerCappingPolicy, outcome: SampleOutcome | None, problems: list[str]) -> Verdict:
        was = bool(policy.status and policy.status.capping_action_required)
        if outcome is None:
            return self._no_data(policy, was, "NoSampleYet", "no Prometheus sample taken yet", problems)
        if outcome.snapshot is None:
            error = outcome.error
            return self._no_data(policy, was, error.reason if error else "PrometheusError", str(error), problems)
        age = self._clock.wall().timestamp() - outcome.snapshot.query_time
        if age > self._max_age:
            return self._no_data(policy, was, "SampleStale", f"the last sample is {age:.0f} s old", problems)
        namespace = policy.metadata.namespace or ""
        pods = select_pods(policy.spec.selector, candidate_pods(self._pods, namespace, policy.spec.selector))
        measurement = measure(pods, outcome.snapshot)
        if measurement.complete:
            capping = decide(policy.spec, measurement.power, was, release_band=self._band)
            return Verdict(capping, measurement, True, "MetricsFresh",
                           f"{measurement.gpu_count} GPUs of {len(pods)} pods measured", tuple(problems),
                           urgent=self._in_motion(policy, measurement.power))
        missing = measurement.missing_gpus + measurement.pods_without_metrics
        message = f"no valid reading for {len(missing)}: {', '.join(missing[:10])}"
        if measurement.power >= policy.spec.threshold_watts:
            # What is known already exceeds the threshold: the missing part can only add to it.
            capping = decide(policy.spec, measurement.power, was, release_band=self._band)
        else:
            capping = CappingDecision(was, "IncompleteData", f"holding the decision: {message}")
        return Verdict(capping, measurement, False, "IncompleteData", message, tuple(problems))

    def _in_motion(self, policy: PowerCappingPolicy, power: float) -> bool:
        """Over the threshold, or under the release level while the recommender still holds clock caps."""
        spec = policy.spec
        if power >= spec.threshold_watts:
            return True
        release = spec.release_watts(self._band)
        recommendation = policy.status.recommendation if policy.status else None
        return power < release and bool(recommendation and recommendation.target_count)

    def _no_data(self, policy: PowerCappingPolicy, was: bool, reason: str, message: str,
                 problems: list[str]) -> Verdict:
        capping = decide(policy.spec, None, was, release_band=self._band)
        return Verdict(capping, None, False, reason, message, tuple(problems))

    def _write(self, obj: dict[str, Any], policy: PowerCappingPolicy, verdict: Verdict) -> None:
        generation = policy.metadata.generation
        limit = policy.spec.power_cap_limit

        def mutate(current: dict[str, Any]) -> dict[str, Any] | None:
            return monitor_status(current.get("status"), verdict, limit=limit, generation=generation,
                                  now=self._clock.wall(), rules=self._rules)

        result = update_status(self._api, policy.key, mutate, current=obj)
        if not result.written:
            return
        log.info("status_updated", controller="monitor", key=policy.key, power=verdict.measurement
                 and verdict.measurement.power, capping=verdict.capping.required, reason=verdict.capping.reason)
        self._tell(obj, policy, verdict)

    def _tell(self, obj: dict[str, Any], policy: PowerCappingPolicy, verdict: Verdict) -> None:
        if self._events is None:
            return
        was = bool(policy.status and policy.status.capping_action_required)
        if verdict.capping.required and not was:
            self._events.normal(obj, "CappingStarted", verdict.capping.message)
        elif was and not verdict.capping.required:
            self._events.normal(obj, "CappingReleased", verdict.capping.message)
        conditions = (obj.get("status") or {}).get("conditions")
        had_metrics = find_condition(conditions, METRICS_AVAILABLE)
        if not verdict.metrics_available and (had_metrics is None or had_metrics.get("status") != "False"):
            self._events.warning(obj, "MetricsLost", f"{verdict.metrics_reason}: {verdict.metrics_message}")
        if verdict.spec_problems and not is_condition_true(conditions, INVALID_SPEC):
            self._events.warning(obj, "InvalidSpec", "; ".join(verdict.spec_problems))

    def _invalid(self, obj: dict[str, Any], key: str, problems: list[str]) -> None:
        log.warning("invalid_spec", controller="monitor", key=key, problems=problems)
        if self._events is not None:
            self._events.warning(obj, "InvalidSpec", "; ".join(problems))

