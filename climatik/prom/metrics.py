"""Prometheus metrics about Climatik's own Prometheus queries."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram


class PromQueryMetrics:
    """A `QueryObserver` recording `climatik_prom_query_duration_seconds{query, outcome}` in `registry`.

    Create one per registry and share it between clients.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._duration = Histogram(
            "climatik_prom_query_duration_seconds",
            "Time taken by Prometheus queries, by query and outcome (success or the error reason).",
            ["query", "outcome"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )

    def observe_query(self, name: str, outcome: str, seconds: float) -> None:
        self._duration.labels(query=name, outcome=outcome).observe(seconds)
