"""The controller runner: N worker threads taking keys from a work queue and reconciling them.

A reconciler is level-triggered (controller-runtime's contract): it gets a key, reads the cache and the
world, makes them agree, and

* returns `Result()` (or None): done; the key's back-off is forgotten;
* returns `Result(requeue_after=s)`: look again in `s` seconds (instead of sleeping);
* raises `TerminalError`: the key is dropped without retry and the error is logged with the key;
* raises anything else: retried with the queue's per-key exponential back-off.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from climatik.clock import Clock, SystemClock
from climatik.kube.errors import KubeError
from climatik.kube.metrics import RuntimeMetrics
from climatik.kube.workqueue import WorkQueue

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Result:
    """What a reconcile asks for next: nothing, or another look after `requeue_after` seconds."""

    requeue_after: float | None = None


class TerminalError(Exception):
    """A reconcile failure that retrying cannot fix (e.g. an invalid spec already reported in a condition)."""


#: A reconciler: key in, `Result` (or None) out.
Reconcile = Callable[[str], Result | None]


class Controller:
    """Feeds keys from `queue` to `reconcile` on `workers` threads; a key is never reconciled twice at once."""

    def __init__(
        self,
        *,
        name: str,
        reconcile: Reconcile,
        queue: WorkQueue,
        workers: int = 1,
        clock: Clock | None = None,
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("a controller needs at least one worker")
        self.name = name
        self.queue = queue
        self._reconcile = reconcile
        self._workers = workers
        self._clock = clock or SystemClock()
        self._m_duration = metrics.reconcile_duration_seconds.labels(name) if metrics else None
        self._m_errors = metrics.reconcile_errors_total.labels(name) if metrics else None
        self._m_outcomes = {
            outcome: metrics.reconcile_total.labels(name, outcome)
            for outcome in ("success", "requeue_after", "error", "terminal")
        } if metrics else {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the worker threads."""
        for i in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"{self.name}-worker-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, grace: float | None = None) -> bool:
        """Take no new keys, let reconciles in flight finish; True if all workers ended within `grace`
        seconds (real time)."""
        self._stopping.set()
        self.queue.shut_down()
        deadline = None if grace is None else SystemClock().now() + grace
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - SystemClock().now())
            thread.join(remaining)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("workers_still_busy", controller=self.name, workers=alive)
        return not alive

    def process_next(self, timeout: float | None = None) -> bool:
        """Take one key (waiting up to `timeout`) and reconcile it; False when the queue gave none."""
        key = self.queue.get(timeout)
        if key is None:
            return False
        try:
            if self._stopping.is_set():
                return False
            self._process(key)
        finally:
            self.queue.done(key)
        return True

    def _work(self) -> None:
        while not self._stopping.is_set() and self.process_next():
            pass

    def _process(self, key: str) -> None:
        started = self._clock.now()
        outcome = "success"
        try:
            result = self._reconcile(key)
        except TerminalError as exc:
            outcome = "terminal"
            log.error("reconcile_failed_terminally", controller=self.name, key=key, error=str(exc))
            self.queue.forget(key)
        except Exception as exc:
            outcome = "error"
            log.warning(
                "reconcile_failed",
                controller=self.name,
                key=key,
                error=f"{type(exc).__name__}: {exc}",
                retries=self.queue.num_requeues(key),
                # API failures explain themselves; anything else is a bug worth a traceback.
                exc_info=not isinstance(exc, KubeError),
            )
            self.queue.add_rate_limited(key)
        else:
            self.queue.forget(key)
            if result is not None and result.requeue_after is not None:
                outcome = "requeue_after"
                self.queue.add_after(key, result.requeue_after)
        finally:
            self._observe(outcome, self._clock.now() - started)

    def _observe(self, outcome: str, seconds: float) -> None:
        if self._m_duration is None or self._m_errors is None:
            return
        self._m_outcomes[outcome].inc()
        self._m_duration.observe(max(0.0, seconds))
        if outcome in ("error", "terminal"):
            self._m_errors.inc()
