"""Building an algorithm's input from API objects: status, inventories and the policy's own entries."""

from __future__ import annotations

from typing import Any

from climatik.algorithms import CpuLimits, algorithm_input, inventory_of, observation_from_status, policy_targets
from climatik.api import NodeFrequencies, PowerCappingPolicy


def a_node(name: str, *, gpus: list[dict[str, Any]] | None = None, entries: list[dict[str, Any]] | None = None,
           cpus: list[dict[str, Any]] | None = None, cpu_entries: list[dict[str, Any]] | None = None
           ) -> NodeFrequencies:
    return NodeFrequencies.from_api({
        "metadata": {"name": name},
        "spec": {"nodeName": name, "gpuFrequencies": entries or [], "cpuFrequencies": cpu_entries or []},
        "status": {"inventory": {"gpus": gpus or [], "cpus": cpus or []}},
    })


def a_policy(status: dict[str, Any] | None = None) -> PowerCappingPolicy:
    data: dict[str, Any] = {"metadata": {"name": "llm", "namespace": "ml"},
                            "spec": {"powerCapLimit": 1000, "selector": {}}}
    if status is not None:
        data["status"] = status
    return PowerCappingPolicy.from_api(data)


STATUS = {
    "lastUpdated": "2025-01-01T00:00:10Z", "currentPower": 900.5, "cappingActionRequired": True,
    "nodes": [{"name": "n1", "gpus": [{"uuid": "GPU-1", "power": 450.0, "smClock": 1980},
                                      {"uuid": "GPU-2", "power": float("nan")}]}],
}


def test_observation_carries_time_power_and_each_gpu_with_its_node() -> None:
    observation = observation_from_status(a_policy(STATUS).status)

    assert observation.at == 1735689610.0
    assert observation.power == 900.5
    assert observation.capping_required
    assert [(g.uuid, g.node, g.power, g.sm_clock) for g in observation.gpus] == [
        ("GPU-1", "n1", 450.0, 1980), ("GPU-2", "n1", None, None)]


def test_no_status_is_no_data() -> None:
    observation = observation_from_status(None)

    assert observation.power is None and observation.at is None and observation.gpus == ()


def test_inventory_keeps_gpus_with_a_usable_range_and_sorted_steps() -> None:
    node = a_node("n1", gpus=[
        {"uuid": "GPU-1", "minFrequency": 210, "maxFrequency": 1980, "supportedFrequencies": [1980, 210, 5000, 1005],
         "powerLimit": 700},
        {"uuid": "GPU-2", "maxFrequency": 1980},
    ], cpus=[{"cpuId": 0, "minFrequency": 800, "maxFrequency": 3000}, {"cpuId": 1}])
    inventory = inventory_of([node])

    assert list(inventory.gpus) == ["GPU-1"]
    assert inventory.gpus["GPU-1"].supported == (210, 1005, 1980)
    assert inventory.gpus["GPU-1"].power_limit == 700.0
    assert inventory.cpus == {("n1", 0): CpuLimits(800, 3000)}
    assert inventory_of([node], node_names=["n2"]).gpus == {}


def test_a_policy_holds_only_the_entries_that_name_it() -> None:
    node = a_node("n1", entries=[{"gpuId": "GPU-1", "targetFrequency": 1200, "policy": "ml/llm"},
                                 {"gpuId": "GPU-9", "targetFrequency": 900, "policy": "other/job"}],
                  cpu_entries=[{"cpuId": 3, "targetFrequency": 2000, "policy": "ml/llm"}])
    targets = policy_targets("ml/llm", [node])

    assert targets.gpus == {"GPU-1": 1200}
    assert targets.cpus == {("n1", 3): 2000}


def test_algorithm_input_puts_it_together_for_the_policys_nodes() -> None:
    nodes = [a_node("n1", gpus=[{"uuid": "GPU-1", "minFrequency": 210, "maxFrequency": 1980}],
                    entries=[{"gpuId": "GPU-1", "targetFrequency": 1200, "policy": "ml/llm"}]),
             a_node("n9", gpus=[{"uuid": "GPU-x", "minFrequency": 210, "maxFrequency": 1980}])]
    inp = algorithm_input(a_policy(STATUS), nodes, state={"v": 2}, now=1735689611.0)

    assert inp.current.gpus == {"GPU-1": 1200}
    assert set(inp.inventory.gpus) == {"GPU-1"}
    assert inp.threshold_watts == 900.0
    assert inp.release_watts == 850.0
    assert inp.state == {"v": 2}
