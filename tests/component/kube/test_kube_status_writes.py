"""Status and object writes: nothing written when nothing changed, and no update lost to a racing writer."""

from __future__ import annotations

from typing import Any

import pytest
from support.kube import FakeCluster, FakeKubeClient, FakeRequest

from climatik.kube.errors import ConflictError
from climatik.kube.status import create_or_update, update_object, update_status


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def client(cluster: FakeCluster) -> FakeKubeClient:
    return FakeKubeClient(cluster)


def policy(name: str = "p") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns"}, "spec": {"powerCapLimit": 1000, "selector": {}}}


def set_power(watts: int) -> Any:
    def mutate(obj: dict[str, Any]) -> dict[str, Any]:
        status = obj.get("status") or {}
        status["currentPower"] = watts
        return status

    return mutate


def test_a_status_change_is_written_to_the_status_subresource(client: FakeKubeClient, cluster: FakeCluster) -> None:
    client.policies.create(policy())
    result = update_status(client.policies, "ns/p", set_power(800))
    assert result.written
    assert client.policies.get("p", namespace="ns")["status"] == {"currentPower": 800}
    assert [(r.verb, r.subresource) for r in cluster.writes()][-1] == ("update", "status")


def test_an_unchanged_status_costs_no_write(client: FakeKubeClient, cluster: FakeCluster) -> None:
    client.policies.create(policy())
    update_status(client.policies, "ns/p", set_power(800))
    writes = len(cluster.writes())
    for _ in range(3):
        assert not update_status(client.policies, "ns/p", set_power(800)).written
        assert not update_status(client.policies, "ns/p", lambda obj: None).written
    assert len(cluster.writes()) == writes


def test_the_cached_object_saves_the_first_read(client: FakeKubeClient, cluster: FakeCluster) -> None:
    cached = client.policies.create(policy())
    update_status(client.policies, "ns/p", set_power(800), current=cached)
    assert [r.verb for r in cluster.requests] == ["create", "update"]


def test_a_conflict_refetches_and_reapplies_so_both_writers_changes_survive(
    client: FakeKubeClient, cluster: FakeCluster
) -> None:
    stale = client.policies.create(policy())
    raced = False

    def other_writer(request: FakeRequest) -> None:
        nonlocal raced
        if request.verb == "update" and request.subresource == "status" and not raced:
            raced = True
            current = cluster.get(request.resource, "ns", "p")
            current["status"] = {**(current.get("status") or {}), "lastUpdated": "2025-01-01T00:00:00Z"}
            cluster.update(request.resource, "ns", "p", current, subresource="status")

    cluster.add_reactor(other_writer)
    result = update_status(client.policies, "ns/p", set_power(700), current=stale)
    assert result.written
    assert client.policies.get("p", namespace="ns")["status"] == {
        "lastUpdated": "2025-01-01T00:00:00Z",
        "currentPower": 700,
    }


def test_a_write_that_keeps_losing_gives_up_with_a_conflict(client: FakeKubeClient, cluster: FakeCluster) -> None:
    client.policies.create(policy())
    cluster.fail_next(ConflictError("raced", status=409), count=10, verbs={"update"})
    with pytest.raises(ConflictError):
        update_status(client.policies, "ns/p", set_power(1), attempts=3)
    assert len([r for r in cluster.requests if r.verb == "update"]) == 3


def test_a_deleted_object_is_not_an_error(client: FakeKubeClient) -> None:
    result = update_status(client.policies, "ns/gone", set_power(1))
    assert result.object is None
    assert not result.written


def test_the_mutation_gets_a_private_copy(client: FakeKubeClient) -> None:
    cached = client.policies.create(policy())

    def scribble(obj: dict[str, Any]) -> None:
        obj["spec"]["powerCapLimit"] = 1

    update_status(client.policies, "ns/p", scribble, current=cached)
    assert cached["spec"]["powerCapLimit"] == 1000


def add_finalizer(obj: dict[str, Any]) -> dict[str, Any] | None:
    finalizers = obj["metadata"].setdefault("finalizers", [])
    if "climatik.io/node-frequencies" in finalizers:
        return None
    finalizers.append("climatik.io/node-frequencies")
    return obj


def test_update_object_adds_a_finalizer_once(client: FakeKubeClient, cluster: FakeCluster) -> None:
    client.policies.create(policy())
    assert update_object(client.policies, "ns/p", add_finalizer).written
    assert not update_object(client.policies, "ns/p", add_finalizer).written
    assert client.policies.get("p", namespace="ns")["metadata"]["finalizers"] == ["climatik.io/node-frequencies"]
    assert len(cluster.writes()) == 2  # the create and one update


def test_update_object_survives_a_racing_spec_change(client: FakeKubeClient, cluster: FakeCluster) -> None:
    stale = client.policies.create(policy())
    current = client.policies.get("p", namespace="ns")
    current["spec"]["powerCapLimit"] = 2000
    client.policies.replace(current)
    update_object(client.policies, "ns/p", add_finalizer, current=stale)
    stored = client.policies.get("p", namespace="ns")
    assert stored["spec"]["powerCapLimit"] == 2000
    assert stored["metadata"]["finalizers"] == ["climatik.io/node-frequencies"]


def node_frequencies(node: str, mhz: int) -> dict[str, Any]:
    return {
        "apiVersion": "climatik.io/v1alpha1",
        "kind": "NodeFrequencies",
        "metadata": {"name": node, "labels": {"app.kubernetes.io/managed-by": "climatik"}},
        "spec": {"nodeName": node, "gpuFrequencies": [{"gpuId": "GPU-1", "targetFrequency": mhz}]},
    }


def test_create_or_update_creates_then_updates_then_leaves_alone(client: FakeKubeClient, cluster: FakeCluster) -> None:
    nfs = client.node_frequencies
    assert create_or_update(nfs, node_frequencies("n1", 1500)).written
    assert create_or_update(nfs, node_frequencies("n1", 1200)).written
    before = len(cluster.writes())
    assert not create_or_update(nfs, node_frequencies("n1", 1200)).written
    assert len(cluster.writes()) == before
    stored = nfs.get("n1")
    assert stored["spec"]["gpuFrequencies"] == [{"gpuId": "GPU-1", "targetFrequency": 1200}]
    assert stored["metadata"]["generation"] == 2


def test_create_or_update_keeps_the_status_and_foreign_labels(client: FakeKubeClient) -> None:
    nfs = client.node_frequencies
    created = nfs.create(node_frequencies("n1", 1500))
    created["metadata"]["labels"]["team"] = "ml"
    created = nfs.replace(created)
    created["status"] = {"observedGeneration": 1}
    nfs.replace_status(created)
    create_or_update(nfs, node_frequencies("n1", 1000))
    stored = nfs.get("n1")
    assert stored["status"] == {"observedGeneration": 1}
    assert stored["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "climatik", "team": "ml"}
