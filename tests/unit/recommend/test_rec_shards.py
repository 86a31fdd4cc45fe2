"""Recommenders that split the policies (shards): each steps its own policies and writes their entries and
statuses; the one that holds the allocator's key splits every node budget. Together they write what one
recommender would."""

from __future__ import annotations

import pytest
from rec_world import GPU_A, GPU_B, GPU_C, Shares, World, shard, snapshot, two_nodes

from climatik.recommend.core import ALLOCATOR
from climatik.recommend.reconciler import RecommendReconciler

world = pytest.fixture(two_nodes, name="world")


def two_shards_on_one_node(world: World) -> tuple[str, str, RecommendReconciler, RecommendReconciler]:
    """Policies train (capping GPU_A at 1200 MHz) and serve (GPU_B at 900 MHz), both on n1 and over their
    threshold, and the shards a (train's, and the allocator) and b (serve's)."""
    train = world.policy("train", parameters={"mhz": "1200"})
    serve = world.policy("serve", parameters={"mhz": "900"})
    shares = Shares({train: "a", serve: "b", ALLOCATOR: "a"})
    world.observe(train, {"n1": [GPU_A]}, power=1200, capping=True)
    world.observe(serve, {"n1": [GPU_B]}, power=1200, capping=True)
    return train, serve, shard(world, shares, "a"), shard(world, shares, "b")


def test_each_shard_steps_and_writes_only_its_own_policies(world: World) -> None:
    train, serve, a, b = two_shards_on_one_node(world)

    for replica in (a, b):
        for key in (train, serve):
            replica(key)

    assert world.entries("n1") == [(GPU_A, 1200, train), (GPU_B, 900, serve)]
    assert world.status(train)["recommendation"]["gpuFrequency"] == 1200
    assert world.status(serve)["recommendation"]["gpuFrequency"] == 900
    changed = [e for e in world.events(train) + world.events(serve) if e[1] == "TargetsChanged"]
    assert len(changed) == 2, "each policy is stepped once, by its own shard"


def test_a_shard_keeps_the_entries_another_shard_wrote_after_it_planned(world: World) -> None:
    train, serve, a, b = two_shards_on_one_node(world)
    b(serve)
    a(train)
    world.clock.advance(5)
    world.observe(serve, {"n1": [GPU_B]}, power=200, capping=False)
    b(serve)  # serve releases its GPU

    assert world.entries("n1") == [(GPU_A, 1200, train)]
    world.clock.advance(5)
    world.observe(train, {"n1": [GPU_A]}, power=100, capping=False)
    a(train)
    assert world.entries("n1") == [], "each release removed exactly its own entry"


def test_the_allocator_splits_the_budget_of_a_policy_another_shard_steps(world: World) -> None:
    llm = world.policy("llm", limit=2000, algorithm=None)
    shares = Shares({llm: "b", ALLOCATOR: "a"})
    a, b = shard(world, shares, "a"), shard(world, shares, "b")
    world.observe(llm, {"n1": [GPU_A, GPU_B], "n2": [GPU_C]}, power=1500, capping=False)

    b(llm)
    assert world.budgets("n1") == {} and world.budgets("n2") == {}, "only the allocator writes budgets"
    assert "budget" not in world.status(llm), "no budget is reported before the allocator splits one"

    before = len(world.writes())
    a(llm)
    split = {node: world.budgets(node)[llm] for node in ("n1", "n2")}
    assert sum(split.values()) <= 1800, "the threshold share of the limit"
    assert {kind for _, kind, _ in world.writes()[before:]} == {"NodeFrequencies"}, \
        "the allocator neither steps another's policy nor writes its status"

    b(llm)
    assert world.status(llm)["budget"] == sum(split.values()), "the owner reports the budgets in force"
    assert world.condition(llm, "Feasible")[:2] == ("True", "WithinReach")  # type: ignore[index]


def test_one_recommender_and_two_shards_write_the_same_specs() -> None:
    def story(world: World) -> tuple[str, str]:
        world.inventory("n1", [GPU_A, GPU_B])
        world.inventory("n2", [GPU_C])
        train = world.policy("train", limit=1500, algorithm=None)
        serve = world.policy("serve", limit=800, parameters={"mhz": "900"}, priority=5)
        world.observe(train, {"n1": [GPU_A, GPU_B], "n2": [GPU_C]}, power=1600, capping=True)
        world.observe(serve, {"n1": [GPU_B]}, power=900, capping=True)  # serve outranks train on GPU_B
        return train, serve

    def specs(world: World) -> dict[str, object]:
        return {node: world.client.node_frequencies.get(node)["spec"] for node in ("n1", "n2")}

    alone = World()
    train, serve = story(alone)
    for key in (train, serve, train):
        alone.reconciler(key)

    shared = World()
    story(shared)
    shares = Shares({train: "a", serve: "b", ALLOCATOR: "b"})
    a, b = shard(shared, shares, "a"), shard(shared, shares, "b")
    for key in (train, serve, train):
        a(key)
        b(key)

    assert specs(shared) == specs(alone)
    assert [e[2] for e in shared.entries("n1")] == [train, serve]
    assert shared.budgets("n1")


def test_a_deleted_policys_budgets_go_with_the_allocator_and_its_entries_with_its_owner(world: World) -> None:
    llm = world.policy("llm", limit=1000, algorithm=None)
    shares = Shares({llm: "b", ALLOCATOR: "a"})
    a, b = shard(world, shares, "a"), shard(world, shares, "b")
    world.observe(llm, {"n1": [GPU_A, GPU_B]}, power=1300, capping=True)
    b(llm)
    a(llm)
    assert world.entries("n1") and world.budgets("n1")

    world.delete(llm)  # the finalizer holds it while its caps are removed
    a(llm)
    assert world.budgets("n1") == {}
    assert world.entries("n1"), "the allocator leaves the owner's entries alone"
    b(llm)
    world.acknowledge()
    b(llm)
    assert world.entries("n1") == []
    assert not world.exists(llm)


def test_a_replica_that_owns_neither_the_policy_nor_the_allocator_writes_nothing(world: World) -> None:
    llm = world.policy("llm", limit=1000, algorithm=None)
    shares = Shares({llm: "b", ALLOCATOR: "b"})
    c = shard(world, shares, "c")
    world.observe(llm, {"n1": [GPU_A, GPU_B]}, power=1300, capping=True)
    before = len(world.writes())

    c(llm)

    assert len(world.writes()) == before


def test_a_write_planned_from_a_lagging_cache_keeps_what_another_shard_wrote_since(world: World) -> None:
    train = world.policy("train", parameters={"mhz": "1200"})
    serve = world.policy("serve", parameters={"mhz": "900"})
    shares = Shares({train: "a", serve: "b", ALLOCATOR: "a"})
    world.observe(train, {"n1": [GPU_A]}, power=1200, capping=True)
    world.observe(serve, {"n1": [GPU_B]}, power=1200, capping=True)
    shard(world, shares, "a")(train)
    lagging = snapshot(world.nodes)  # a's watch stops here
    shard(world, shares, "b")(serve)

    namespace, name = train.split("/")
    obj = world.client.policies.get(name, namespace=namespace)
    obj["spec"]["customAlgorithms"][0]["parameters"]["mhz"] = "1000"
    world.client.policies.replace(obj)
    world.clock.advance(5)
    world.observe(train, {"n1": [GPU_A]}, power=1200, capping=True)
    shard(world, shares, "a", nodes=lagging)(train)  # planned without serve's entry; the write meets a 409

    assert world.entries("n1") == [(GPU_A, 990, train), (GPU_B, 900, serve)]
