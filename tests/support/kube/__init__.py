"""In-process fakes of the API server for component tests: a `FakeCluster` with real resourceVersion,
conflict, finalizer, status-subresource and watch semantics, a `KubeClient` that talks to it, and hooks to
inject faults (dropped and silent watches, 410 Gone, failing requests, 429/503 with Retry-After, racing
writers)."""

from support.kube.client import FakeKubeClient
from support.kube.cluster import FakeCluster, FakeRequest

__all__ = ["FakeCluster", "FakeKubeClient", "FakeRequest"]
