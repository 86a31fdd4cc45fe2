"""The controller runtime's Prometheus metrics, registered once on the registry a process hands in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class RuntimeMetrics:
    """Metrics shared by informers, queues, controllers and the leader elector of one process.

    Build exactly one per registry and hand it to every component (a collector cannot be registered twice).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.reconcile_total = Counter(
            "climatik_controller_reconcile_total",
            "Reconciles by outcome (success, requeue_after, error, terminal).",
            ["controller", "result"],
            registry=registry,
        )
        self.reconcile_errors_total = Counter(
            "climatik_controller_reconcile_errors_total",
            "Reconciles that raised (retried with back-off, or dropped when terminal).",
            ["controller"],
            registry=registry,
        )
        self.reconcile_duration_seconds = Histogram(
            "climatik_controller_reconcile_duration_seconds",
            "Time spent in one reconcile.",
            ["controller"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "climatik_workqueue_depth", "Keys waiting to be processed.", ["queue"], registry=registry
        )
        self.queue_adds_total = Counter(
            "climatik_workqueue_adds_total", "Keys added (deduplicated adds included).", ["queue"], registry=registry
        )
        self.queue_retries_total = Counter(
            "climatik_workqueue_retries_total", "Rate-limited re-adds after a failure.", ["queue"], registry=registry
        )
        self.watch_restarts_total = Counter(
            "climatik_informer_watch_restarts_total",
            "Watches re-opened, by why (timeout, error, gone).",
            ["informer", "reason"],
            registry=registry,
        )
        self.relists_total = Counter(
            "climatik_informer_relists_total", "Full lists (the first one included).", ["informer"], registry=registry
        )
        self.cached_objects = Gauge(
            "climatik_informer_cached_objects", "Objects in the informer's cache.", ["informer"], registry=registry
        )
        self.leader = Gauge(
            "climatik_leader_election_is_leader",
            "1 while this process holds the lease.",
            ["lease"],
            registry=registry,
        )
