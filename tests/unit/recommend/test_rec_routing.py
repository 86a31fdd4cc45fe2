"""Which policies a NodeFrequencies event wakes: those with entries on the node and those that observe it."""

from __future__ import annotations

from typing import Any

from climatik.kube.store import Store
from climatik.recommend.app import POLICY_INDEXES, policies_of_node


def policy(name: str, nodes: list[str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ml", "resourceVersion": "1"},
            "status": {"nodes": [{"name": node, "gpus": []} for node in nodes]}}


def test_inventory_on_a_node_wakes_the_policies_that_observe_it_and_those_that_target_it() -> None:
    store = Store(POLICY_INDEXES)
    store.replace([policy("llm", ["n1", "n2"]), policy("train", ["n2"]), policy("batch", [])])
    node = {"metadata": {"name": "n1"},
            "spec": {"nodeName": "n1", "gpuFrequencies": [{"gpuId": "GPU-a", "targetFrequency": 900,
                                                           "policy": "other/old"}],
                     "cpuFrequencies": [{"cpuId": 0, "targetFrequency": 2000, "policy": "ml/batch"}]},
            "status": {"inventory": {"gpus": [{"uuid": "GPU-a"}]}}}

    assert policies_of_node(store)(node) == ["ml/batch", "ml/llm", "other/old"]


def test_entries_without_a_policy_wake_nothing() -> None:
    node = {"metadata": {"name": "n9"}, "spec": {"nodeName": "n9", "gpuFrequencies": [
        {"gpuId": "GPU-a", "targetFrequency": 900}]}}

    assert policies_of_node(Store(POLICY_INDEXES))(node) == []
