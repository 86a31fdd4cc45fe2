"""The node guard in the tuner process: a tick every `interval` (default 100 ms) over the budgets of the last spec
the reconciler applied, with the node guard's statuses handed to the reconciler's status writer.

* Budgets: the reconciler calls `enforce` with the power budgets of each spec it applies (none when the object is
  gone), and the guard ticks at once, so that the status the reconciler writes next, which carries the spec's
  generation, acknowledges budgets that are already in force: the recommender raises another node's budget only
  then. Between specs the guard keeps ticking on the last budgets, whether or not the API server, Prometheus or
  the monitor answer: it needs nothing but the GPUs.
* Before the first spec is read the guard does nothing: limits an earlier run left (recorded in the state file)
  stay in force until the spec says whether their budget still stands, then are kept or given back.
* Without budgets it still reads the node's GPU power (what power domains count), every `idle_interval`, and lets
  the backend release what it holds after each read (NVML's session where persistence mode keeps the GPUs'
  state); while budgets exist the backend is held (climatik.tune.levers.CappedGpus.hold).
* Statuses: when `BudgetReports` says the budgets' statuses or the node's power are worth a write, the guard asks
  for one (`request_report`, which queues it for the reconciler's worker: one writer for the whole status, with
  optimistic concurrency). A request not answered is asked again after `retry_s`, so that an unreachable API
  server costs a few failed writes a minute, not ten a second.
* A tick that fails (the GPU library gone, the state file not writable) changes nothing more, is counted and logged
  when the failure starts and ends, and the next tick tries again.

`GuardLoop` is the guard controller's reconcile (one key, requeued after each tick), run by the process shell
like every other controller, so that it starts once the caches are synced and stops before the shutdown hooks,
among them `release`, which gives back every limit and cap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from climatik.api import to_dict
from climatik.api.nodefrequencies import BudgetStatus, PowerBudget
from climatik.clock import Clock
from climatik.kube.controller import Result
from climatik.tune.backends.base import BackendUnavailableError
from climatik.tune.budget import WINDOW_S
from climatik.tune.guard import BudgetReports, GuardTick, NodeGuard
from climatik.tune.levers import CappedGpus
from climatik.tune.state import StateError

log = structlog.get_logger(__name__)

#: The guard controller's one key.
GUARD_KEY = "guard"
#: The status fields the guard writes; the reconciler's status keeps them as they are.
GUARDED_FIELDS = ("budgets", "power")


class GuardMetrics:
    """The guard's metrics: ticks and their duration, the writes it makes, and whether each budget is met."""

    def __init__(self, registry: CollectorRegistry, node: str) -> None:
        self._node = node
        self.ticks_total = Counter("climatik_tune_guard_ticks_total", "Guard ticks, by outcome (ok, failed).",
                                   ["node", "outcome"], registry=registry)
        self.tick_seconds = Histogram("climatik_tune_guard_tick_seconds",
                                      "Time one guard tick takes: reading the GPUs, stepping, writing.",
                                      ["node"], registry=registry,
                                      buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
        self.limit_writes_total = Counter("climatik_tune_guard_limit_writes_total",
                                          "GPU power limits the guard set, originals given back included.",
                                          ["node"], registry=registry)
        self.clock_cap_writes_total = Counter("climatik_tune_guard_clock_cap_writes_total",
                                              "GPU clock locks the guard's caps moved.", ["node"], registry=registry)
        self.budget_met = Gauge("climatik_tune_guard_budget_met",
                                "1 while a budget's mean power over the last second is within it, else 0.",
                                ["node", "policy"], registry=registry)
        self._policies: set[str] = set()

    def observe(self, tick: GuardTick | None, seconds: float) -> None:
        self.tick_seconds.labels(self._node).observe(seconds)
        self.ticks_total.labels(self._node, "failed" if tick is None else "ok").inc()
        if tick is None:
            return
        self.limit_writes_total.labels(self._node).inc(tick.limit_writes)
        self.clock_cap_writes_total.labels(self._node).inc(tick.clock_writes)
        policies = set()
        for budget in tick.budgets:
            policies.add(budget.policy)
            self.budget_met.labels(self._node, budget.policy).set(1 if budget.met else 0)
        for gone in self._policies - policies:
            self.budget_met.remove(self._node, gone)
        self._policies = policies


class GuardLoop:
    """Ticks a node's guard (see the module docstring). Thread-safe: the guard controller's worker ticks, the
    reconcile worker hands budgets over and takes statuses, the shutdown path releases."""

    def __init__(self, *, guard: NodeGuard, devices: CappedGpus, clock: Clock, node: str,
                 request_report: Callable[[], None], interval: float = 0.1, idle_interval: float = 1.0,
                 retry_s: float = 5.0, reports: BudgetReports | None = None,
                 metrics: GuardMetrics | None = None) -> None:
        if interval <= 0 or idle_interval <= 0:
            raise ValueError("the guard's intervals must be positive")
        self._guard = guard
        self._devices = devices
        self._clock = clock
        self._node = node
        self._request_report = request_report
        self._interval = interval
        self._idle_interval = idle_interval
        self._retry_s = retry_s
        self._reports = reports or BudgetReports()
        self._metrics = metrics
        self._lock = threading.Lock()
        self._budgets: list[PowerBudget] | None = None
        self._latest: tuple[GuardTick, float] | None = None
        self._requested_at: float | None = None
        self._said: dict[str, BudgetStatus] = {}
        self._since: dict[str, float] = {}
        self._unmet: set[str] = set()
        self._failure: str | None = None
        self._leftovers = True

    def enforce(self, budgets: Sequence[PowerBudget]) -> GuardTick | None:
        """Keep `budgets` from now on (those of the spec just applied; none once the object is gone), with one
        tick at once; the tick, or None when it failed."""
        with self._lock:
            self._budgets = list(budgets)
            self._devices.hold(bool(self._budgets))
            return self._tick()

    def __call__(self, key: str) -> Result:
        """One tick of the guard controller; look again after what is left of the interval."""
        started = self._clock.now()
        with self._lock:
            if self._budgets is not None:
                self._tick()
            idle = not self._budgets
            if idle:
                self._devices.release()
        interval = self._idle_interval if idle else self._interval
        return Result(requeue_after=max(0.0, interval - (self._clock.now() - started)))

    def latest(self) -> tuple[GuardTick, float] | None:
        """The last tick that succeeded and when it was taken, for the status write."""
        with self._lock:
            return self._latest

    def due(self, tick: GuardTick, at: float) -> bool:
        """Whether the statuses of `tick` (taken at `at`) say something worth a write (climatik.tune.guard.
        BudgetReports): the reconcile writes them only then, or its own status write would wake it to write the
        next tick's readings, and so on, as fast as the API server answers."""
        with self._lock:
            return self._reports.due(tick.budgets, at, power=tick.power, scale=tick.scale)

    def written(self, tick: GuardTick, at: float) -> None:
        """The statuses of `tick` (taken at `at`) are in the API server now."""
        with self._lock:
            self._reports.written(tick.budgets, at, power=tick.power)
            self._requested_at = None

    def release(self) -> int:
        """Give back every limit and cap (the tuner is stopping); returns the writes made. The guard keeps no
        budget afterwards until `enforce` hands it one again."""
        with self._lock:
            self._budgets = None
            writes = 0
            try:
                writes = self._guard.release()
                self._restore_leftovers()
            except Exception as error:  # the clocks are restored next, whatever happened here
                log.error("guard_release_failed", controller="tune", key=self._node,
                          error=f"{type(error).__name__}: {error}")
            self._devices.hold(False)
            self._devices.release()
            log.info("guard_released", controller="tune", key=self._node, writes=writes)
            return writes

    def _tick(self) -> GuardTick | None:
        assert self._budgets is not None
        now = self._clock.now()
        tick: GuardTick | None = None
        try:
            tick = self._guard.tick(self._budgets, now)
        except Exception as error:  # the guard must outlive any one tick's trouble
            self._failed(error)
        if tick is not None:
            if self._failure is not None:
                log.info("guard_tick_recovered", controller="tune", key=self._node, after=self._failure)
                self._failure = None
            self._latest = (tick, now)
            if self._leftovers:
                try:
                    self._restore_leftovers()
                except Exception as error:  # tried again on the next tick
                    self._failed(error)
            self._tell(tick, now)
            self._ask_for_report(tick, now)
        if self._metrics is not None:
            self._metrics.observe(tick, self._clock.now() - now)
        return tick

    def _restore_leftovers(self) -> None:
        """Once the first tick set the caps the budgets ask for, give back those a crashed run left behind."""
        restored = self._devices.restore_leftovers()
        self._leftovers = False
        if restored:
            log.info("guard_caps_restored", controller="tune", key=self._node, gpus=restored)

    def _failed(self, error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"
        if reason != self._failure:
            # Trouble of the hardware or the state file is expected; anything else is a bug worth a traceback.
            log.warning("guard_tick_failed", controller="tune", key=self._node, error=reason,
                        exc_info=not isinstance(error, BackendUnavailableError | StateError))
            self._failure = reason

    def _ask_for_report(self, tick: GuardTick, now: float) -> None:
        if not self._reports.due(tick.budgets, now, power=tick.power, scale=tick.scale):
            return
        if self._requested_at is not None and now - self._requested_at < self._retry_s:
            return
        self._requested_at = now
        self._request_report()

    def _tell(self, tick: GuardTick, now: float) -> None:
        """A log line when a budget's lever changes, and when it starts or stops being met (judged once the
        budget has been in force for the window its mean spans: before, the mean still holds the readings
        from before the limits)."""
        said, since = {}, {}
        for budget in tick.budgets:
            before = self._said.get(budget.policy)
            said[budget.policy] = budget
            same = before is not None and before.watts == budget.watts
            since[budget.policy] = self._since.get(budget.policy, now) if same else now
            fields: dict[str, Any] = {"controller": "tune", "key": self._node, "policy": budget.policy,
                                      "watts": budget.watts, "lever": budget.lever, "power_mean": budget.power_mean}
            if before is None or before.lever != budget.lever:
                log.info("guard_lever_changed", was=before.lever if before else None, **fields)
            if not budget.met and budget.policy not in self._unmet and now - since[budget.policy] >= WINDOW_S:
                log.warning("guard_budget_not_met", floor=budget.floor, message=budget.message, **fields)
                self._unmet.add(budget.policy)
            elif budget.met and budget.policy in self._unmet:
                log.info("guard_budget_met", **fields)
                self._unmet.discard(budget.policy)
        self._said, self._since = said, since
        self._unmet &= set(said)


def with_guard_status(status: Mapping[str, Any], tick: GuardTick) -> dict[str, Any]:
    """`status` with the budgets' statuses and the node's power of `tick` in place of what it said before (no
    budgets: no `budgets` field; power not read: the last power kept)."""
    body = {key: value for key, value in status.items() if key != "budgets"}
    if tick.budgets:
        body["budgets"] = [to_dict(budget) for budget in tick.budgets]
    if tick.power is not None:
        body["power"] = to_dict(tick.power)
    return body
