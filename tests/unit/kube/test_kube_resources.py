"""REST paths of the resources Climatik uses."""

from __future__ import annotations

import pytest

from climatik.kube.client import LEASES, NODE_FREQUENCIES, NODES, PODS, POLICIES


def test_paths_of_core_grouped_namespaced_and_cluster_scoped_resources() -> None:
    assert PODS.path() == "/api/v1/pods"
    assert PODS.path(namespace="ns") == "/api/v1/namespaces/ns/pods"
    assert NODES.path(name="n1", subresource="status") == "/api/v1/nodes/n1/status"
    assert LEASES.path(namespace="kube-system", name="l") == (
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l"
    )
    assert POLICIES.path(namespace="ns", name="p", subresource="status") == (
        "/apis/climatik.io/v1alpha1/namespaces/ns/powercappingpolicies/p/status"
    )
    assert NODE_FREQUENCIES.path(name="n1") == "/apis/climatik.io/v1alpha1/nodefrequencies/n1"
    assert POLICIES.api_version == "climatik.io/v1alpha1"
    assert PODS.api_version == "v1"


def test_impossible_paths_are_refused() -> None:
    with pytest.raises(ValueError):
        NODES.path(namespace="ns")
    with pytest.raises(ValueError):
        PODS.path(namespace="ns", subresource="status")
    with pytest.raises(ValueError):
        PODS.path(namespace="ns", name="")
