"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

* A candidate takes the Lease when it does not exist, is released (no holder), has not been renewed for
  its `leaseDurationSeconds` *as observed on our own clock* (so clock skew between nodes is harmless), or
  names this very identity as holder: a process restarted under the same identity (the pod name survives a
  container restart) takes its own lease back at once instead of waiting for it to expire.
* The leader renews every `retry_period`, each attempt's requests bounded by `renew_deadline`. It leads
  until `stop` (it then releases the Lease: empty holder, leaseDurationSeconds 1, so a successor takes over
  without waiting), or until it has lost the lease: it saw another holder, or the lease ran out on its own
  clock, `lease_duration` after the start of its last successful renewal. The caller must stop acting then,
  at once (the process exits non-zero and is restarted).

Why a leader that cannot reach the API server may keep leading until then, and no longer:
  let `t` be when (on the leader's clock) its last successful renewal began. The server wrote that renewal
  at some moment after `t`, and any other candidate can only have read the record after that write; a
  candidate takes over only once the record has stayed unchanged for `leaseDurationSeconds` on *its* clock,
  counted from when it read it. So nobody can hold the lease before `t + lease_duration`, up to the
  difference in clock *rates* (parts per million), whatever the offset between the clocks. Until then, the
  leader that lost the API keeps trying to renew and keeps leading: an outage shorter than the lease costs
  no control at all. Both sides use the duration written in the record, and a renewal only counts from its
  start, so a request that is slow, or hangs, can never stretch the lease: the deadline is watched by a
  timer of its own, not by the renewal loop. What this cannot rule out, like any lease without fencing, is
  a write that the old leader sent just before its deadline and that reaches the server after a successor
  started; writes are compare-and-swap on resourceVersion, so such a write fails or is seen by the successor.
An identity must name one live process at a time (a pod name does): two processes with the same identity
would both take the lease.

Writes are compare-and-swap on resourceVersion, so two candidates can never both succeed.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from climatik.clock import Clock, SystemClock
from climatik.kube.client import KubeClient, ResourceClient
from climatik.kube.errors import ConflictError, KubeError, NotFoundError
from climatik.kube.metrics import RuntimeMetrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LeaseConfig:
    """Which Lease to contend for, as whom, and the timings (client-go's defaults scaled as asked: 15/10/2).

    `lease_duration`: how long a lease lasts after its last renewal (written into the Lease, in whole
    seconds); `renew_deadline`: the longest one acquire or renew attempt may take; `retry_period`: the pause
    between attempts.
    """

    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        if not self.identity:
            raise ValueError("a leader-election identity is required")

    @property
    def lease_seconds(self) -> int:
        """The duration as written into the Lease, which is what other candidates go by."""
        return max(1, round(self.lease_duration))


class LeaderElector:
    """Contends for one Lease. `run()` blocks; `try_acquire_or_renew()` is one attempt, for tests and loops."""

    def __init__(
        self,
        client: KubeClient,
        config: LeaseConfig,
        *,
        clock: Clock | None = None,
        metrics: RuntimeMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._leases: ResourceClient = client.leases
        self._clock = clock or SystemClock()
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._observed: dict[str, Any] | None = None  # the lease spec last read or written
        self._observed_at = 0.0  # when (our clock) it last changed
        self._other_holder = ""  # who held the lease at our last attempt, when not us
        self._renewed_at = 0.0  # when (our clock) our last successful acquire or renewal began
        self._leading = threading.Event()
        self._state = threading.Lock()

    def is_leader(self) -> bool:
        return self._leading.is_set()

    def run(
        self,
        stop: threading.Event,
        *,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
    ) -> bool:
        """Acquire, call `on_started_leading`, renew until `stop` or loss, then call `on_stopped_leading`
        (once; on loss, from whichever thread noticed it first).

        Returns True if leadership ended because of `stop` (the lease is then released), False if it was
        lost (or never acquired before `stop`).
        """
        if not self._acquire(stop):
            return False
        on_started_leading()
        renewing_ended = threading.Event()
        expiry = threading.Thread(target=self._expire, args=(renewing_ended, on_stopped_leading),
                                  name="leader-lease-expiry", daemon=True)
        expiry.start()
        kept = self._renew(stop)
        renewing_ended.set()
        expiry.join()
        if not self._step_down():
            return False  # the lease ran out first; the expiry timer has told the caller
        if kept:
            self.release()
        else:
            log.error("leader_lost", lease=self.config.name, identity=self.config.identity,
                      holder=self._other_holder)
        on_stopped_leading()
        return kept

    def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the lease; True if we hold it afterwards."""
        now = self._clock.now()
        timeout = self.config.renew_deadline
        self._other_holder = ""
        try:
            lease = self._leases.get(self.config.name, namespace=self.config.namespace, timeout=timeout)
        except NotFoundError:
            return self._create(now)
        except KubeError as exc:
            log.warning("lease_read_failed", lease=self.config.name, error=str(exc))
            return False
        spec = lease.get("spec") or {}
        if spec != self._observed:
            self._observed, self._observed_at = spec, now
        holder = spec.get("holderIdentity") or ""
        mine = holder == self.config.identity
        duration = float(spec.get("leaseDurationSeconds") or self.config.lease_seconds)
        if holder and not mine and self._observed_at + duration > now:
            self._other_holder = holder
            return False
        new_spec = self._record(spec, keep_acquire=mine)
        return self._update(lease, new_spec, now)

    def release(self) -> None:
        """Give the lease up if we hold it (best effort: a failure only means the successor waits)."""
        timeout = self.config.renew_deadline
        try:
            lease = self._leases.get(self.config.name, namespace=self.config.namespace, timeout=timeout)
        except KubeError:
            return
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") != self.config.identity:
            return
        now = self._micro_time()
        lease["spec"] = {
            "leaseDurationSeconds": 1,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": spec.get("leaseTransitions", 0),
        }
        try:
            self._leases.replace(lease, timeout=timeout)
            log.info("lease_released", lease=self.config.name, identity=self.config.identity)
        except KubeError as exc:
            log.warning("lease_release_failed", lease=self.config.name, error=str(exc))

    # -- loops ---------------------------------------------------------------------------------------------

    def _acquire(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            started = self._clock.now()
            if self.try_acquire_or_renew():
                self._renewed_at = started
                self._set_leading(True)
                log.info("lease_acquired", lease=self.config.name, identity=self.config.identity)
                return True
            jitter = 1.0 + 0.2 * self._rng.random()
            self._clock.wait_event(stop, self.config.retry_period * jitter)
        return False

    def _renew(self, stop: threading.Event) -> bool:
        """Renew every retry_period until stop (True), or until the lease is lost (False): another holder was
        seen, or it ran out (the expiry timer steps down then). Failures to reach the server are retried."""
        while True:
            left = self._lease_left()
            if left <= 0 or not self.is_leader():
                return False
            if self._clock.wait_event(stop, min(self.config.retry_period, left)):
                return True
            if self._lease_left() <= 0:
                continue
            started = self._clock.now()
            renewed = self.try_acquire_or_renew()
            if not self.is_leader():
                return False  # the lease ran out while the attempt was in flight
            if renewed:
                with self._state:
                    self._renewed_at = max(self._renewed_at, started)
            elif self._other_holder:
                return False
            else:
                log.warning("lease_renewal_failed", lease=self.config.name,
                            lease_left=round(self._lease_left(), 3))

    def _expire(self, renewing_ended: threading.Event, on_stopped_leading: Callable[[], None]) -> None:
        """Step down when the lease runs out on our clock, whatever the renewal loop is doing."""
        while not renewing_ended.is_set():
            left = self._lease_left()
            if left <= 0:
                if self._step_down():
                    log.error("leader_lost", lease=self.config.name, identity=self.config.identity,
                              reason="lease expired without a renewal")
                    on_stopped_leading()
                return
            self._clock.wait_event(renewing_ended, left)

    def _lease_left(self) -> float:
        with self._state:
            return self._renewed_at + self.config.lease_seconds - self._clock.now()

    def _step_down(self) -> bool:
        """Stop leading; True for the caller that did it (the other one finds it done)."""
        with self._state:
            if not self._leading.is_set():
                return False
            self._set_leading(False)
            return True

    # -- writes --------------------------------------------------------------------------------------------

    def _record(self, spec: dict[str, Any], *, keep_acquire: bool) -> dict[str, Any]:
        now = self._micro_time()
        transitions = int(spec.get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": self.config.lease_seconds,
            "acquireTime": spec.get("acquireTime", now) if keep_acquire else now,
            "renewTime": now,
            "leaseTransitions": transitions if keep_acquire or not spec else transitions + 1,
        }

    def _create(self, now: float) -> bool:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.config.name, "namespace": self.config.namespace},
            "spec": self._record({}, keep_acquire=False),
        }
        try:
            created = self._leases.create(body, timeout=self.config.renew_deadline)
        except KubeError as exc:  # AlreadyExists: another candidate was quicker
            log.debug("lease_create_failed", lease=self.config.name, error=str(exc))
            return False
        self._observed, self._observed_at = created.get("spec") or {}, now
        return True

    def _update(self, lease: dict[str, Any], spec: dict[str, Any], now: float) -> bool:
        lease["spec"] = spec
        try:
            updated = self._leases.replace(lease, timeout=self.config.renew_deadline)
        except ConflictError:
            return False
        except KubeError as exc:
            log.warning("lease_update_failed", lease=self.config.name, error=str(exc))
            return False
        self._observed, self._observed_at = updated.get("spec") or {}, now
        return True

    def _micro_time(self) -> str:
        # metav1.MicroTime: RFC 3339 with microseconds.
        return self._clock.wall().strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _set_leading(self, leading: bool) -> None:
        if leading:
            self._leading.set()
        else:
            self._leading.clear()
        if self._metrics is not None:
            self._metrics.leader.labels(self.config.name).set(1 if leading else 0)
