"""The monitor's cycle: one Prometheus sample shared by every policy, then a reconcile of each policy."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from climatik.clock import Clock
from climatik.kube.controller import Result
from climatik.prom.errors import PromError
from climatik.prom.snapshot import GpuSnapshot

log = structlog.get_logger(__name__)

#: The one key of the sampler's queue.
SAMPLE_KEY = "prometheus"


@dataclass(frozen=True)
class SampleOutcome:
    """The latest attempt: a snapshot, or the error that prevented one, and when it was taken (wall clock)."""

    snapshot: GpuSnapshot | None
    error: PromError | None
    taken_at: float


class LatestSample:
    """Holds the newest outcome for the policy reconcilers. Thread-safe."""

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
    """Reconciler of SAMPLE_KEY: query Prometheus once, publish the outcome, queue every policy, and come
    back after `interval` seconds. Running it through the controller runner gives it the runner's lifecycle
    (it starts only while leading and stops with the process)."""

    def __init__(self, *, fetch: Callable[[], GpuSnapshot], latest: LatestSample, clock: Clock,
                 policy_keys: Callable[[], Iterable[str]], enqueue: Callable[[str], None],
                 interval: float) -> None:
        self._fetch = fetch
        self._latest = latest
        self._clock = clock
        self._policy_keys = policy_keys
        self._enqueue = enqueue
        self._interval = interval
        self._failing = False

    def __call__(self, key: str) -> Result:
        started = self._clock.now()
        taken_at = self._clock.wall().timestamp()
        try:
            outcome = SampleOutcome(self._fetch(), None, taken_at)
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
