"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

* A candidate takes the Lease when it does not exist, is released (no holder), or has not been renewed
  for `lease_duration` seconds *as observed on our own clock* (so clock skew between nodes is harmless).
* The leader renews every `retry_period`; when renewals keep failing for `renew_deadline` it has lost the
  lease and must stop acting at once (the caller exits non-zero).
* On a clean stop the leader releases the Lease (empty holder, leaseDurationSeconds 1), so a successor
  takes over without waiting for expiry.
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
    """Which Lease to contend for, as whom, and the timings (client-go's defaults scaled as asked: 15/10/2)."""

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
        self._leading = threading.Event()

    def is_leader(self) -> bool:
        return self._leading.is_set()

    def run(
        self,
        stop: threading.Event,
        *,
        on_started_leading: Callable[[], None],
        on_stopped_leading: Callable[[], None],
    ) -> bool:
        """Acquire, call `on_started_leading`, renew until `stop` or loss, then call `on_stopped_leading`.

        Returns True if leadership ended because of `stop` (the lease is then released), False if it was
        lost (or never acquired before `stop`).
        """
        if not self._acquire(stop):
            return False
        on_started_leading()
        kept = self._renew(stop)
        self._set_leading(False)
        if kept:
            self.release()
        else:
            log.error("leader_lost", lease=self.config.name, identity=self.config.identity)
        on_stopped_leading()
        return kept

    def try_acquire_or_renew(self) -> bool:
        """One attempt to take or keep the lease; True if we hold it afterwards."""
        now = self._clock.now()
        try:
            lease = self._leases.get(self.config.name, namespace=self.config.namespace)
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
        duration = float(spec.get("leaseDurationSeconds") or self.config.lease_duration)
        if holder and not mine and self._observed_at + duration > now:
            return False
        new_spec = self._record(spec, keep_acquire=mine)
        return self._update(lease, new_spec, now)

    def release(self) -> None:
        """Give the lease up if we hold it (best effort: a failure only means the successor waits)."""
        try:
            lease = self._leases.get(self.config.name, namespace=self.config.namespace)
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
            self._leases.replace(lease)
            log.info("lease_released", lease=self.config.name, identity=self.config.identity)
        except KubeError as exc:
            log.warning("lease_release_failed", lease=self.config.name, error=str(exc))

    # -- loops ---------------------------------------------------------------------------------------------

    def _acquire(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            if self.try_acquire_or_renew():
                self._set_leading(True)
                log.info("lease_acquired", lease=self.config.name, identity=self.config.identity)
                return True
            jitter = 1.0 + 0.2 * self._rng.random()
            self._clock.wait_event(stop, self.config.retry_period * jitter)
        return False

    def _renew(self, stop: threading.Event) -> bool:
        """Renew until stop (True) or until renewals failed for renew_deadline (False)."""
        last_renewed = self._clock.now()
        while not self._clock.wait_event(stop, self.config.retry_period):
            if self.try_acquire_or_renew():
                last_renewed = self._clock.now()
            elif self._clock.now() - last_renewed >= self.config.renew_deadline:
                return False
        return True

    # -- writes --------------------------------------------------------------------------------------------

    def _record(self, spec: dict[str, Any], *, keep_acquire: bool) -> dict[str, Any]:
        now = self._micro_time()
        transitions = int(spec.get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": max(1, round(self.config.lease_duration)),
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
            created = self._leases.create(body)
        except KubeError as exc:  # AlreadyExists: another candidate was quicker
            log.debug("lease_create_failed", lease=self.config.name, error=str(exc))
            return False
        self._observed, self._observed_at = created.get("spec") or {}, now
        return True

    def _update(self, lease: dict[str, Any], spec: dict[str, Any], now: float) -> bool:
        lease["spec"] = spec
        try:
            updated = self._leases.replace(lease)
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
