"""The informer's store: keyed, indexed, read-only, and able to report what a relist changed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from climatik.kube.store import BY_NAMESPACE, BY_NODE, POD_INDEXES, Store, freeze


def pod(name: str, *, namespace: str = "ns", node: str | None = None, rv: str = "1") -> dict[str, Any]:
    spec = {"nodeName": node} if node else {}
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": rv}, "spec": spec}


@pytest.fixture
def store() -> Store:
    return Store(POD_INDEXES)


def test_pods_are_found_by_node_and_by_namespace(store: Store) -> None:
    store.upsert(pod("a", node="n1"))
    store.upsert(pod("b", node="n1", namespace="other"))
    store.upsert(pod("c", node="n2"))
    store.upsert(pod("pending"))
    assert [p["metadata"]["name"] for p in store.by_index(BY_NODE, "n1")] == ["a", "b"]
    assert [p["metadata"]["name"] for p in store.by_index(BY_NAMESPACE, "ns")] == ["a", "c", "pending"]
    assert store.index_values(BY_NODE) == ["n1", "n2"]


def test_an_update_moves_an_object_between_index_buckets(store: Store) -> None:
    store.upsert(pod("a"))
    store.upsert(pod("a", node="n1", rv="2"))
    assert [p["metadata"]["name"] for p in store.by_index(BY_NODE, "n1")] == ["a"]
    store.upsert(pod("a", node="n2", rv="3"))
    assert store.by_index(BY_NODE, "n1") == []
    assert store.index_values(BY_NODE) == ["n2"]


def test_a_removed_object_leaves_every_index(store: Store) -> None:
    store.upsert(pod("a", node="n1"))
    assert store.remove("ns/a") is not None
    assert store.get("ns/a") is None
    assert store.by_index(BY_NODE, "n1") == []
    assert store.remove("ns/a") is None


def test_an_unknown_index_is_an_error(store: Store) -> None:
    with pytest.raises(KeyError):
        store.by_index("colour", "red")


def test_stored_objects_are_read_only_and_insulated_from_the_caller(store: Store) -> None:
    original = pod("a", node="n1")
    store.upsert(original)
    original["spec"]["nodeName"] = "n9"
    cached = store.get("ns/a")
    assert cached is not None
    assert cached["spec"]["nodeName"] == "n1"
    with pytest.raises(TypeError):
        cached["spec"]["nodeName"] = "n2"


def test_replace_reports_adds_changes_and_deletes_but_not_unchanged_objects(store: Store) -> None:
    store.upsert(pod("kept", rv="1"))
    store.upsert(pod("changed", rv="1"))
    store.upsert(pod("vanished", rv="1"))
    changes = store.replace([pod("kept", rv="1"), pod("changed", rv="2"), pod("new", rv="3")])
    summary = {
        (old["metadata"]["name"] if old else "-", new["metadata"]["name"] if new else "-") for old, new in changes
    }
    assert summary == {("changed", "changed"), ("-", "new"), ("vanished", "-")}
    assert len(changes) == 3
    assert sorted(store.keys()) == ["ns/changed", "ns/kept", "ns/new"]
    assert len(store) == 3


def test_cached_objects_share_one_copy_of_each_field_name() -> None:
    # Decoded separately, as two API answers are: equal keys, distinct string objects.
    first = freeze(json.loads('{"metadata": {"name": "a", "resourceVersion": "1"}}'))
    second = freeze(json.loads('{"metadata": {"name": "b", "resourceVersion": "2"}}'))
    (key_1,), (key_2,) = first.keys(), second.keys()
    assert key_1 is key_2
    names = [next(k for k in obj["metadata"] if k == "resourceVersion") for obj in (first, second)]
    assert names[0] is names[1]
    assert first["metadata"]["resourceVersion"] == "1"
