"""The recommender's reconciler against an in-process API server: targets land in the right NodeFrequencies
objects, several policies share nodes, deletion cleans up, and a steady cluster costs nothing."""

from __future__ import annotations

import itertools

import pytest
from rec_world import GPU_A, GPU_B, GPU_C, World, two_nodes
from support.kube import FakeRequest

from climatik.api.constants import POLICY_FINALIZER
from climatik.kube.client import NODE_FREQUENCIES, POLICIES
from climatik.kube.errors import ConflictError

world = pytest.fixture(two_nodes, name="world")


def test_a_policy_over_its_threshold_caps_its_gpus_on_each_node_and_says_so(world: World) -> None:
    llm = world.policy("llm", parameters={"mhz": "1200"})
    world.observe(llm, {"n1": [GPU_A], "n2": [GPU_C]}, power=950, capping=True)
    world.reconcile(llm)
    world.acknowledge()
    world.reconcile(llm)

    assert world.entries("n1") == [(GPU_A, 1200, llm)]
    assert world.entries("n2") == [(GPU_C, 1200, llm)]
    status = world.status(llm)
    assert status["recommendation"]["gpuFrequency"] == 1200 and status["recommendation"]["applied"] is True
    assert world.condition(llm, "Actuated") == ("True", "TargetsWritten", "2 GPUs at 1200 MHz")
    assert world.condition(llm, "Conflict")[0] == "False"  # type: ignore[index]
    assert world.condition(llm, "InvalidSpec") == ("False", "Valid", "spec is valid")
    assert status["currentPower"] == 950, "the monitor's fields are kept"
    assert world.metric("climatik_recommend_policy_gpu_target_mhz", policy=llm) == 1200
    assert world.metric("climatik_recommend_actions_total", policy=llm, action="lower") == 1
    assert ("Normal", "TargetsChanged") in [e[:2] for e in world.events(llm)]


def test_the_first_reconcile_adds_the_finalizer(world: World) -> None:
    llm = world.policy("llm")
    world.reconcile(llm)

    namespace, name = llm.split("/")
    assert world.client.policies.get(name, namespace=namespace)["metadata"]["finalizers"] == [POLICY_FINALIZER]


def test_a_steady_cluster_costs_no_writes(world: World) -> None:
    llm = world.policy("llm")
    world.observe(llm, {"n1": [GPU_A]}, power=950, capping=True)
    world.reconcile(llm)
    before = len(world.writes())

    for _ in range(3):
        world.clock.advance(5)
        world.reconcile(llm)

    assert len(world.writes()) == before
    assert world.metric("climatik_recommend_actions_total", policy=llm, action="hold") == 3


def test_two_policies_on_one_node_merge_and_each_keeps_its_own_entry(world: World) -> None:
    llm = world.policy("llm", parameters={"mhz": "1200"})
    train = world.policy("train", parameters={"mhz": "900"})
    world.observe(llm, {"n1": [GPU_A]}, power=950, capping=True)
    world.observe(train, {"n1": [GPU_B]}, power=950, capping=True)
    world.reconcile(llm, train)

    assert world.entries("n1") == [(GPU_A, 1200, llm), (GPU_B, 900, train)]

    world.clock.advance(10)
    world.observe(train, {"n1": [GPU_B]}, power=500, capping=False)
    world.reconcile(train)

    assert world.entries("n1") == [(GPU_A, 1200, llm)]
    assert world.metric("climatik_recommend_actions_total", policy=train, action="release") == 1


def test_deleting_a_policy_removes_its_entries_before_its_finalizer(world: World) -> None:
    llm, train = world.policy("llm"), world.policy("train")
    world.observe(llm, {"n1": [GPU_A], "n2": [GPU_C]}, power=950, capping=True)
    world.observe(train, {"n1": [GPU_B]}, power=950, capping=True)
    world.reconcile(llm, train)
    world.delete(llm)

    assert world.exists(llm), "the finalizer holds the policy until its entries are gone"
    world.reconcile(llm)
    assert world.entries("n1") == [(GPU_B, 1200, train)]
    assert world.entries("n2") == []
    assert world.exists(llm), "and until the tuners have taken the caps off"

    world.acknowledge()
    world.reconcile(llm)
    assert not world.exists(llm)
    assert world.metric("climatik_recommend_policy_gpu_target_mhz", policy=llm) is None


def test_a_failed_entry_removal_keeps_the_finalizer_until_it_succeeds(world: World) -> None:
    llm = world.policy("llm")
    world.observe(llm, {"n1": [GPU_A]}, power=950, capping=True)
    world.reconcile(llm)
    world.delete(llm)
    world.cluster.fail_next(ConflictError("busy", status=409), count=5, verbs=["update"])

    with pytest.raises(ConflictError):
        world.reconcile(llm)
    assert world.exists(llm) and world.entries("n1") == [(GPU_A, 1200, llm)]

    world.reconcile(llm)
    assert world.entries("n1") == []
    world.acknowledge()
    world.reconcile(llm)
    assert not world.exists(llm)


def test_a_policy_deleted_without_the_finalizer_loses_its_entries_on_the_next_pass(world: World) -> None:
    llm = world.policy("llm")
    world.observe(llm, {"n1": [GPU_A]}, power=950, capping=True)
    world.reconcile(llm)
    namespace, name = llm.split("/")
    policy = world.client.policies.get(name, namespace=namespace)
    policy["metadata"]["finalizers"] = []
    world.client.policies.replace(policy)
    world.delete(llm)

    world.reconcile(llm)
    assert world.entries("n1") == []


def test_a_dead_tuner_is_shown_by_name_within_its_bound(world: World) -> None:
    llm = world.policy("llm", parameters={"mhz": "1200"})
    world.observe(llm, {"n1": [GPU_A], "n2": [GPU_C]}, power=950, capping=True)
    after = world.reconcile(llm)
    assert world.condition(llm, "Actuated")[:2] == ("False", "Applying")  # type: ignore[index]
    assert world.status(llm)["recommendation"]["applied"] is False
    assert after is not None and after <= 30.0, "the policy is looked at again when the bound passes"

    world.acknowledge("n1")  # n2's tuner is dead
    world.reconcile(llm)
    assert world.condition(llm, "Actuated") == ("False", "Applying",
                                                "waiting for the tuners of 1 nodes to apply the targets: n2")
    world.clock.advance(31)
    world.reconcile(llm)

    assert world.condition(llm, "Actuated") == (
        "False", "TunerNotResponding", "the tuners of 1 nodes have not applied their targets within 30 s: n2")
    assert ("Warning", "TunerNotResponding") in [e[:2] for e in world.events(llm)]
    assert world.metric("climatik_recommend_nodes_not_responding", policy=llm) == 1
    world.acknowledge("n2")
    world.reconcile(llm)
    assert world.condition(llm, "Actuated")[:2] == ("True", "TargetsWritten")  # type: ignore[index]
    assert world.status(llm)["recommendation"]["applied"] is True


def test_deleting_a_policy_while_a_tuner_is_down_waits_then_names_the_node(world: World) -> None:
    llm = world.policy("llm")
    world.observe(llm, {"n1": [GPU_A], "n2": [GPU_C]}, power=950, capping=True)
    world.reconcile(llm)
    world.acknowledge()
    world.delete(llm)

    world.reconcile(llm)
    world.acknowledge("n1")  # n2's tuner is down
    world.reconcile(llm)
    assert world.exists(llm)
    actuated = world.condition(llm, "Actuated")
    assert actuated == ("False", "Releasing", "deleted: waiting for the tuners of n2 to remove its caps")

    world.clock.advance(61)
    world.reconcile(llm)
    assert not world.exists(llm), "the bound passed: the policy goes"
    assert any(e[1] == "NodesStillCapped" and "n2" in e[2] for e in world.events(llm))


def test_a_flapping_limit_never_raises_the_clocks_until_it_settles(world: World) -> None:
    llm = world.policy("llm", algorithm=None, limit=2000)
    namespace, name = llm.split("/")

    def observe() -> int:
        """A new observation from GPUs running at their caps, drawing what such GPUs draw there."""
        mhz = min([m for _, m, _ in world.entries("n1")] or [1980])
        world.observe(llm, {"n1": [GPU_A, GPU_B]}, power=600 + 900 * (mhz / 1980) ** 2.7, capping=False, clock=mhz)
        return mhz

    observe()
    world.reconcile(llm)
    clocks: list[int] = []
    for change in range(30):  # 30 changes in 10 s, a new observation every second
        world.clock.advance(1.0 / 3)
        policy = world.client.policies.get(name, namespace=namespace)
        policy["spec"]["powerCapLimit"] = 1000 if change % 2 == 0 else 2400
        world.client.policies.replace(policy)
        if change % 3 == 2:
            world.acknowledge()
            clocks.append(observe())
        world.reconcile(llm)
    assert all(later <= earlier for earlier, later in itertools.pairwise(clocks)), clocks
    assert min(clocks) < 1980, "a lower limit is acted on at once"

    after = world.reconcile(llm)
    assert after is not None and after <= 5.0, "and the policy is looked at again once the limit settles"
    for _ in range(70):
        world.clock.advance(1.0)
        world.acknowledge()
        observe()
        world.reconcile(llm)
    assert observe() > min(clocks), "once it settles (at 2400 W), the final limit is acted on"


def test_a_write_that_races_the_tuner_is_retried_and_lands(world: World) -> None:
    llm = world.policy("llm")
    world.observe(llm, {"n1": [GPU_A]}, power=950, capping=True)
    raced = False

    def tuner_writes_status(request: FakeRequest) -> None:
        nonlocal raced
        if request.verb == "update" and request.resource == NODE_FREQUENCIES and not raced:
            raced = True
            world.cluster.patch(NODE_FREQUENCIES, None, "n1", {"status": {"lastUpdated": "2025-01-01T00:00:01Z"}},
                                subresource="status")

    world.cluster.add_reactor(tuner_writes_status)
    world.reconcile(llm)

    assert raced
    assert world.entries("n1") == [(GPU_A, 1200, llm)]


def test_an_observed_node_without_an_object_gets_an_empty_one_and_the_policy_waits(world: World) -> None:
    llm = world.policy("llm")
    world.observe(llm, {"n3": ["GPU-new"]}, power=950, capping=True)
    world.reconcile(llm)

    assert "n3" in world.node_names()
    assert world.entries("n3") == []
    actuated = world.condition(llm, "Actuated")
    assert actuated is not None and actuated[:2] == ("False", "WaitingForInventory") and "GPU-new" in actuated[2]


def test_inventory_arriving_later_acts_on_the_observation_it_waited_with(world: World) -> None:
    llm = world.policy("llm")
    world.observe(llm, {"n3": ["GPU-new"]}, power=950, capping=True)
    world.reconcile(llm)

    world.inventory("n3", ["GPU-new"])
    world.reconcile(llm)
    world.acknowledge("n3")
    world.reconcile(llm)

    assert world.entries("n3") == [("GPU-new", 1200, llm)]
    assert world.condition(llm, "Actuated")[:2] == ("True", "TargetsWritten")  # type: ignore[index]


def test_dry_run_reports_targets_and_writes_no_entries(world: World) -> None:
    trial = world.policy("trial", dryRun=True)
    world.observe(trial, {"n1": [GPU_A]}, power=950, capping=True)
    world.reconcile(trial)

    assert world.entries("n1") == []
    recommendation = world.status(trial)["recommendation"]
    assert recommendation["gpuFrequency"] == 1200 and recommendation["applied"] is False
    assert world.condition(trial, "Actuated")[:2] == ("False", "DryRun")  # type: ignore[index]
    assert [e[:2] for e in world.events(trial)] == [("Normal", "DryRunTargets")]
    assert not any(kind == NODE_FREQUENCIES.kind and verb == "update" for verb, kind, _ in world.writes())


def test_switching_to_dry_run_removes_the_entries_and_back_writes_them_again(world: World) -> None:
    llm = world.policy("llm")
    world.observe(llm, {"n1": [GPU_A]}, power=950, capping=True)
    world.reconcile(llm)
    namespace, name = llm.split("/")

    world.cluster.patch(world.client.policies.resource, namespace, name, {"spec": {"dryRun": True}})
    world.reconcile(llm)
    assert world.entries("n1") == []

    world.cluster.patch(world.client.policies.resource, namespace, name, {"spec": {"dryRun": False}})
    world.reconcile(llm)
    assert world.entries("n1") == [(GPU_A, 1200, llm)]


def test_an_unknown_algorithm_is_reported_and_drives_nothing(world: World) -> None:
    bad = world.policy("bad", algorithm="no-such-algorithm")
    world.observe(bad, {"n1": [GPU_A]}, power=950, capping=True)
    world.reconcile(bad)

    invalid = world.condition(bad, "InvalidSpec")
    assert invalid is not None and invalid[:2] == ("True", "InvalidSpec") and "no-such-algorithm" in invalid[2]
    assert world.condition(bad, "Actuated")[:2] == ("False", "Invalid")  # type: ignore[index]
    assert world.entries("n1") == []
    assert [e[:2] for e in world.events(bad)] == [("Warning", "InvalidSpec")]

    world.reconcile(bad)
    assert len(world.events(bad)) == 1, "a standing problem is told once"


def test_a_policy_that_turns_invalid_holds_the_caps_it_had(world: World) -> None:
    llm = world.policy("llm")
    world.observe(llm, {"n1": [GPU_A]}, power=950, capping=True)
    world.reconcile(llm)
    namespace, name = llm.split("/")

    world.cluster.patch(world.client.policies.resource, namespace, name,
                        {"spec": {"customAlgorithms": [{"name": "fixed", "parameters": {"mhz": "fast"}}]}})
    world.clock.advance(10)
    world.observe(llm, {"n1": [GPU_A]}, power=500, capping=False)
    world.reconcile(llm)

    assert world.entries("n1") == [(GPU_A, 1200, llm)]
    assert world.condition(llm, "InvalidSpec")[0] == "True"  # type: ignore[index]
    assert world.status(llm)["recommendation"]["applied"] is False


def test_lost_metrics_hold_the_caps_although_the_algorithm_would_release_them(world: World) -> None:
    llm = world.policy("llm")
    world.observe(llm, {"n1": [GPU_A]}, power=950, capping=True)
    world.reconcile(llm)
    world.acknowledge()

    world.clock.advance(10)
    world.observe(llm, {"n1": [GPU_A]}, power=100, capping=False, metrics=("False", "PrometheusError"))
    world.reconcile(llm)

    assert world.entries("n1") == [(GPU_A, 1200, llm)]
    actuated = world.condition(llm, "Actuated")
    assert actuated is not None and actuated[:2] == ("True", "Holding") and "PrometheusError" in actuated[2]


def test_a_stale_observation_holds_the_caps(world: World) -> None:
    llm = world.policy("llm")
    world.observe(llm, {"n1": [GPU_A]}, power=950, capping=True)
    world.reconcile(llm)
    world.clock.advance(10)
    world.observe(llm, {"n1": [GPU_A]}, power=100, capping=False)

    world.clock.advance(600)
    world.reconcile(llm)

    assert world.entries("n1") == [(GPU_A, 1200, llm)]


def test_a_restart_keeps_entries_and_resumes_the_algorithm_state_from_status(world: World) -> None:
    llm = world.policy("llm")
    world.observe(llm, {"n1": [GPU_A]}, power=950, capping=True)
    world.reconcile(llm)
    world.reconciler = world.build()
    before = len(world.writes())

    world.reconcile(llm)

    assert world.entries("n1") == [(GPU_A, 1200, llm)]
    assert len(world.writes()) == before, "the same observation is not acted on twice"


def test_two_policies_claiming_one_gpu_are_both_told_and_the_winner_drives_it(world: World) -> None:
    first = world.policy("first", parameters={"mhz": "900"}, priority=5)
    second = world.policy("second", parameters={"mhz": "1500"})
    world.observe(first, {"n1": [GPU_A]}, power=950, capping=True)
    world.observe(second, {"n1": [GPU_A, GPU_B]}, power=950, capping=True)
    world.reconcile(first)

    won = world.condition(first, "Conflict")
    assert won is not None and won[:2] == ("True", "WinsSharedGpus") and second in won[2]
    assert ("Warning", "Conflict") in [e[:2] for e in world.events(first)]
    assert world.requeued == [second], "the other policy is asked to report the conflict too"

    world.reconcile(second)
    assert world.entries("n1") == [(GPU_A, 900, first), (GPU_B, 1500, second)]
    lost = world.condition(second, "Conflict")
    assert lost is not None and lost[:2] == ("True", "LosesSharedGpus")
    assert first in lost[2] and "higher priority: 5 over 0" in lost[2]
    assert world.condition(second, "Actuated")[:2] == ("False", "Conflict")  # type: ignore[index]
    assert world.status(second)["recommendation"]["applied"] is False


def test_the_conflict_clears_when_the_other_policy_goes(world: World) -> None:
    first, second = world.policy("first", priority=5), world.policy("second")
    world.observe(first, {"n1": [GPU_A]}, power=950, capping=True)
    world.observe(second, {"n1": [GPU_A]}, power=950, capping=True)
    world.reconcile(first, second, first)
    world.requeued.clear()

    world.delete(first)
    world.reconcile(first)
    assert second in world.requeued
    world.reconcile(second)

    assert world.condition(second, "Conflict")[:2] == ("False", "NoSharedGpus")  # type: ignore[index]


def test_the_default_algorithm_lowers_the_clocks_of_a_workload_over_its_budget(world: World) -> None:
    llm = world.policy("llm", algorithm=None)
    world.observe(llm, {"n1": [GPU_A, GPU_B]}, power=1300, capping=True)
    world.reconcile(llm)

    entries = world.entries("n1")
    assert [gpu for gpu, _, _ in entries] == [GPU_A, GPU_B]
    assert all(210 <= mhz < 1980 and mhz in range(210, 1981, 15) for _, mhz, _ in entries)
    assert entries[0][1] == entries[1][1], "one workload's GPUs share one clock"
    assert world.status(llm)["recommendation"]["algorithm"] == "closed-loop"


def test_mig_instances_are_measured_but_their_gpu_is_never_capped_for_one_tenant(world: World) -> None:
    llm = world.policy("llm", algorithm=None)
    world.observe(llm, {"n1": [GPU_A]}, power=950, capping=True)
    status = world.status(llm)
    status["nodes"][0]["gpus"][0]["migInstance"] = 2
    namespace, name = llm.split("/")
    world.cluster.patch(POLICIES, namespace, name, {"status": status}, subresource="status")
    world.reconcile(llm)

    assert world.entries("n1") == []
    actuated = world.condition(llm, "Actuated")
    assert actuated is not None and actuated[:2] == ("False", "MigNotCapped")
    assert "1 MIG instances are measured" in actuated[2]


def test_the_policys_budget_is_split_over_its_nodes_and_moved_to_the_pressed_one(world: World) -> None:
    llm = world.policy("llm", limit=2000, algorithm=None)
    world.observe(llm, {"n1": [GPU_A, GPU_B], "n2": [GPU_C]}, power=1500, capping=False)
    world.reconcile(llm)
    first = {node: world.budgets(node)[llm] for node in ("n1", "n2")}
    assert sum(first.values()) <= 1800, "the threshold share of the limit"
    assert world.status(llm)["budget"] == sum(first.values())
    assert world.condition(llm, "Feasible")[:2] == ("True", "WithinReach")  # type: ignore[index]

    world.report_budget("n1", llm, power=first["n1"] * 0.99, lever="PowerLimit")  # n1 is held at its budget
    world.report_budget("n2", llm, power=200.0)
    world.reconcile(llm)
    second = {node: world.budgets(node)[llm] for node in ("n1", "n2")}
    assert second["n2"] < first["n2"], "the donor comes down first"
    assert second["n1"] == first["n1"], "the receiver waits for the donor's tuner"

    world.report_budget("n2", llm, power=200.0)
    world.reconcile(llm)
    third = {node: world.budgets(node)[llm] for node in ("n1", "n2")}
    assert third["n1"] > first["n1"]
    assert third["n1"] + third["n2"] <= 1800
    assert world.status(llm)["nodePower"] == pytest.approx(0.9 * (first["n1"] * 0.99 + 200.0), abs=0.2)


def test_a_budget_under_the_gpus_floor_is_reported_infeasible_with_the_floor(world: World) -> None:
    llm = world.policy("llm", limit=1000, algorithm=None)
    world.observe(llm, {"n1": [GPU_A, GPU_B], "n2": [GPU_C]}, power=2000, capping=True)
    world.reconcile(llm)
    for node in ("n1", "n2"):
        world.report_budget(node, llm, power=700.0, lever="ClockCap", floor=600.0)
    world.reconcile(llm)

    feasible = world.condition(llm, "Feasible")
    assert feasible is not None and feasible[:2] == ("False", "BelowFloor")
    assert "1200 W" in feasible[2]
    assert [e for e in world.events(llm) if e[1] == "CapInfeasible"]


def test_a_clocks_only_policy_gets_no_budgets(world: World) -> None:
    llm = world.policy("llm", algorithm=None, enforcement="ClocksOnly")
    world.observe(llm, {"n1": [GPU_A]}, power=950, capping=True)
    world.reconcile(llm)

    assert world.budgets("n1") == {}
    assert "budget" not in world.status(llm)


def test_the_node_power_in_the_status_moves_only_by_a_share_worth_a_write(world: World) -> None:
    llm = world.policy("llm", limit=2000, algorithm=None)
    world.observe(llm, {"n1": [GPU_A, GPU_B]}, power=1900, capping=True)
    world.reconcile(llm)
    world.report_budget("n1", llm, power=1000.0)
    world.reconcile(llm)
    written = world.status(llm)["nodePower"]

    world.report_budget("n1", llm, power=1020.0)  # about 1 % of the 1800 W budget
    world.reconcile(llm)
    assert world.status(llm)["nodePower"] == written

    world.report_budget("n1", llm, power=1200.0)
    world.reconcile(llm)
    assert world.status(llm)["nodePower"] > written


def test_the_node_power_of_a_policy_at_rest_is_written_first_and_then_with_news(world: World) -> None:
    llm = world.policy("llm", limit=2000, algorithm=None)
    world.observe(llm, {"n1": [GPU_A, GPU_B]}, power=1000, capping=False)
    world.reconcile(llm)
    world.report_budget("n1", llm, power=1000.0)
    world.reconcile(llm)
    written = world.status(llm)["nodePower"]

    world.report_budget("n1", llm, power=1300.0)  # a move worth a write while capping; at rest it waits
    world.reconcile(llm)
    assert world.status(llm)["nodePower"] == written
