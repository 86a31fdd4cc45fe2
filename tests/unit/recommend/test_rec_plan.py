"""Planning across policies: merged, attributed, conflict-free, deterministic NodeFrequencies specs; and what a
policy is told about a shared GPU: who drives it, and which part of the rule decided."""

from __future__ import annotations

import random
from typing import Any

from climatik.algorithms import Targets
from climatik.api import (
    CpuFrequency,
    GpuFrequency,
    NodeFrequencies,
    NodeFrequenciesSpec,
    PowerBudget,
    PowerCappingPolicy,
    to_dict,
)
from climatik.recommend.plan import Conflict, conflict_report, merge_owned, plan


def a_policy(name: str, gpus: dict[str, list[str]], *, namespace: str = "ml", priority: int | None = None,
             created: str = "2025-01-01T00:00:00Z", dry_run: bool = False, deleting: bool = False
             ) -> PowerCappingPolicy:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "creationTimestamp": created}
    if deleting:
        metadata["deletionTimestamp"] = "2025-01-02T00:00:00Z"
    spec: dict[str, Any] = {"powerCapLimit": 1000, "selector": {}, "dryRun": dry_run}
    if priority is not None:
        spec["priority"] = priority
    nodes = [{"name": node, "gpus": [{"uuid": uuid} for uuid in uuids]} for node, uuids in gpus.items()]
    return PowerCappingPolicy.from_api({"metadata": metadata, "spec": spec, "status": {"nodes": nodes}})


def a_node(name: str, *, gpu_entries: list[dict[str, Any]] | None = None,
           cpu_entries: list[dict[str, Any]] | None = None, inventory_gpus: list[str] | None = None
           ) -> NodeFrequencies:
    spec: dict[str, Any] = {"nodeName": name}
    if gpu_entries is not None:
        spec["gpuFrequencies"] = gpu_entries
    if cpu_entries is not None:
        spec["cpuFrequencies"] = cpu_entries
    inventory = {"gpus": [{"uuid": u, "minFrequency": 210, "maxFrequency": 1980} for u in inventory_gpus or []]}
    return NodeFrequencies.from_api({"metadata": {"name": name}, "spec": spec, "status": {"inventory": inventory}})


def gpu_entries(result: Any, node: str) -> list[tuple[str, int, str | None]]:
    return [(e.gpu_id, e.target_frequency, e.policy) for e in result.specs[node].gpu_frequencies]


def test_entries_land_on_the_observed_node_and_name_their_policy() -> None:
    llm = a_policy("llm", {"n1": ["GPU-b", "GPU-a"], "n2": ["GPU-c"]})
    result = plan([llm], {"ml/llm": Targets({"GPU-a": 1200, "GPU-b": 1200, "GPU-c": None})},
                  [a_node("n1"), a_node("n2")])

    assert gpu_entries(result, "n1") == [("GPU-a", 1200, "ml/llm"), ("GPU-b", 1200, "ml/llm")]
    assert gpu_entries(result, "n2") == []
    assert result.entries == {"ml/llm": 2}
    assert result.conflicts == ()


def test_several_policies_on_one_node_merge() -> None:
    llm, train = a_policy("llm", {"n1": ["GPU-a"]}), a_policy("train", {"n1": ["GPU-b"]})
    result = plan([train, llm], {"ml/llm": Targets({"GPU-a": 1200}), "ml/train": Targets({"GPU-b": 900})},
                  [a_node("n1")])

    assert gpu_entries(result, "n1") == [("GPU-a", 1200, "ml/llm"), ("GPU-b", 900, "ml/train")]


def test_a_shared_gpu_goes_to_the_higher_priority_and_both_hear_of_it() -> None:
    low = a_policy("low", {"n1": ["GPU-a", "GPU-b"]}, priority=0, created="2020-01-01T00:00:00Z")
    high = a_policy("high", {"n1": ["GPU-a"]}, priority=10)
    outputs = {"ml/low": Targets({"GPU-a": 600, "GPU-b": 600}), "ml/high": Targets({"GPU-a": 1500})}
    result = plan([low, high], outputs, [a_node("n1")])

    assert gpu_entries(result, "n1") == [("GPU-a", 1500, "ml/high"), ("GPU-b", 600, "ml/low")]
    assert [(c.gpu, c.winner, c.loser) for c in result.conflicts] == [("GPU-a", "ml/high", "ml/low")]
    assert result.conflicts_of("ml/low") == result.conflicts_of("ml/high") == list(result.conflicts)


def test_on_equal_priority_the_older_policy_wins_then_the_lower_name() -> None:
    older = a_policy("zeta", {"n1": ["GPU-a"]}, created="2024-01-01T00:00:00Z")
    newer = a_policy("alpha", {"n1": ["GPU-a"]}, created="2025-01-01T00:00:00Z")
    twin = a_policy("beta", {"n1": ["GPU-a"]}, created="2024-01-01T00:00:00Z", namespace="aa")
    outputs = {p.key: Targets({"GPU-a": 1000 + i}) for i, p in enumerate([older, newer, twin])}

    assert gpu_entries(plan([older, newer], outputs, []), "n1")[0][2] == "ml/zeta"
    assert gpu_entries(plan([older, twin], outputs, []), "n1")[0][2] == "aa/beta"


def test_the_winner_drives_the_gpu_even_when_it_releases_it() -> None:
    winner = a_policy("winner", {"n1": ["GPU-a"]}, priority=5)
    loser = a_policy("loser", {"n1": ["GPU-a"]})
    result = plan([winner, loser], {"ml/winner": Targets(), "ml/loser": Targets({"GPU-a": 600})}, [a_node("n1")])

    assert gpu_entries(result, "n1") == []
    assert len(result.conflicts_of("ml/loser")) == 1


def test_dry_run_and_deleted_policies_contribute_nothing_and_lose_their_entries() -> None:
    dry = a_policy("dry", {"n1": ["GPU-a"]}, dry_run=True, priority=100)
    going = a_policy("going", {"n1": ["GPU-b"]}, deleting=True)
    live = a_policy("live", {"n1": ["GPU-a"]})
    node = a_node("n1", gpu_entries=[{"gpuId": "GPU-b", "targetFrequency": 500, "policy": "ml/going"}])
    outputs = {"ml/dry": Targets({"GPU-a": 300}), "ml/going": Targets({"GPU-b": 500}),
               "ml/live": Targets({"GPU-a": 1500})}
    result = plan([dry, going, live], outputs, [node])

    assert gpu_entries(result, "n1") == [("GPU-a", 1500, "ml/live")]
    assert result.conflicts == ()


def test_entries_of_vanished_policies_and_unowned_entries_are_dropped() -> None:
    node = a_node("n1", gpu_entries=[{"gpuId": "GPU-a", "targetFrequency": 500, "policy": "ml/gone"},
                                     {"gpuId": "GPU-b", "targetFrequency": 700}],
                  cpu_entries=[{"cpuId": 0, "targetFrequency": 1000, "policy": "ml/gone"}])
    result = plan([], {}, [node])

    assert result.specs["n1"].gpu_frequencies == [] and result.specs["n1"].cpu_frequencies == []
    assert result.changed([node]) == {"n1": result.specs["n1"]}


def test_a_policy_without_output_this_pass_holds_its_entries() -> None:
    held = a_policy("held", {"n1": ["GPU-a"]})
    node = a_node("n1", gpu_entries=[{"gpuId": "GPU-a", "targetFrequency": 900, "policy": "ml/held"}],
                  cpu_entries=[{"cpuId": 2, "targetFrequency": 1800, "policy": "ml/held"}])
    result = plan([held], {}, [node])

    assert gpu_entries(result, "n1") == [("GPU-a", 900, "ml/held")]
    assert result.changed([node]) == {}


def test_the_lowest_cpu_target_wins_and_is_recorded_with_its_policy() -> None:
    one, two = a_policy("one", {"n1": ["GPU-a"]}), a_policy("two", {"n1": ["GPU-b"]})
    outputs = {"ml/one": Targets(cpus={("n1", 0): 2000, ("n1", 1): 1500}),
               "ml/two": Targets(cpus={("n1", 0): 1800, ("n1", 1): 1500})}
    result = plan([two, one], outputs, [a_node("n1")])

    assert [(c.cpu_id, c.target_frequency, c.policy) for c in result.specs["n1"].cpu_frequencies or []] == [
        (0, 1800, "ml/two"), (1, 1500, "ml/one")]


def test_a_gpu_not_in_the_observations_is_placed_by_inventory_or_reported() -> None:
    llm = a_policy("llm", {})
    result = plan([llm], {"ml/llm": Targets({"GPU-known": 1000, "GPU-lost": 1000})},
                  [a_node("n7", inventory_gpus=["GPU-known"])])

    assert gpu_entries(result, "n7") == [("GPU-known", 1000, "ml/llm")]
    assert result.unplaced == {"ml/llm": ("GPU-lost",)}


def test_a_steady_cluster_plans_identical_specs_and_needs_no_writes() -> None:
    policies = [a_policy("llm", {"n1": ["GPU-b", "GPU-a"]}), a_policy("train", {"n2": ["GPU-c"]}, priority=1)]
    outputs = {"ml/llm": Targets({"GPU-b": 1200, "GPU-a": 1200}, {("n1", 3): 2000, ("n1", 1): 2000}),
               "ml/train": Targets({"GPU-c": 900})}
    first = plan(policies, outputs, [a_node("n2"), a_node("n1")])
    written = [NodeFrequencies.from_api({"metadata": {"name": name}, "spec": to_dict(spec)})
               for name, spec in first.specs.items()]
    second = plan(list(reversed(policies)), dict(reversed(list(outputs.items()))), written)

    assert second.specs == first.specs
    assert second.changed(written) == {}
    assert [e.cpu_id for e in first.specs["n1"].cpu_frequencies or []] == [1, 3]


def test_a_node_that_needs_entries_but_has_no_object_yet_is_planned() -> None:
    result = plan([a_policy("llm", {"n5": ["GPU-a"]})], {"ml/llm": Targets({"GPU-a": 1000})}, [])

    assert result.changed([]) == {"n5": result.specs["n5"]}


# -- what a policy is told about a shared GPU ------------------------------------------------------------------


def ranked_policy(name: str, *, priority: int = 0, created: str = "2025-01-01T00:00:00Z") -> PowerCappingPolicy:
    return PowerCappingPolicy.from_api({"metadata": {"name": name, "namespace": "ml", "creationTimestamp": created},
                                        "spec": {"powerCapLimit": 1000, "selector": {}, "priority": priority}})


def test_the_loser_hears_who_drives_the_gpu_and_why() -> None:
    policies = {p.key: p for p in (ranked_policy("high", priority=10), ranked_policy("low"))}
    report = conflict_report("ml/low", [Conflict("GPU-a", "n1", winner="ml/high", loser="ml/low")], policies)

    assert report.active and report.reason == "LosesSharedGpus" and report.lost == ("GPU-a",)
    assert report.message == "GPU-a on n1 is also claimed by ml/high; ml/high drives it (higher priority: 10 over 0)"


def test_the_winner_hears_it_too_and_age_or_name_can_decide() -> None:
    policies = {p.key: p for p in (ranked_policy("old", created="2024-01-01T00:00:00Z"), ranked_policy("new"),
                                   ranked_policy("twin", created="2024-01-01T00:00:00Z"))}
    by_age = conflict_report("ml/old", [Conflict("GPU-a", None, winner="ml/old", loser="ml/new")], policies)
    by_name = conflict_report("ml/old", [Conflict("GPU-b", None, winner="ml/old", loser="ml/twin")], policies)

    assert by_age.reason == "WinsSharedGpus" and by_age.lost == ()
    assert "this policy drives it (older: created 2024-01-01T00:00:00Z" in by_age.message
    assert "lower namespace/name wins" in by_name.message


def test_no_shared_gpu_is_no_conflict() -> None:
    report = conflict_report("ml/a", [Conflict("GPU-a", None, winner="ml/b", loser="ml/c")], {})

    assert not report.active and report.reason == "NoSharedGpus"


def test_a_plan_of_some_nodes_is_the_full_plan_of_those_nodes() -> None:
    rng = random.Random(5)
    names = [f"n{i}" for i in range(12)]
    for _ in range(30):
        gpus = {name: [f"GPU-{name}-{k}" for k in range(4)] for name in names}
        policies, outputs = [], {}
        for index in range(8):
            mine: dict[str, list[str]] = {}
            for node in rng.sample(names, 3):
                mine[node] = rng.sample(gpus[node], 2)  # GPUs shared by two policies make conflicts
            policy = a_policy(f"p{index}", mine, priority=rng.choice([0, 10]))
            policies.append(policy)
            if rng.random() < 0.8:
                outputs[policy.key] = Targets({uuid: rng.choice([900, 1200, None]) for uuids in mine.values()
                                               for uuid in uuids})
        held = [a_node(name, gpu_entries=[{"gpuId": f"GPU-{name}-0", "targetFrequency": 600, "policy": "ml/p1"}])
                for name in names]
        full = plan(policies, outputs, held)
        scope = {name for node in policies[rng.randrange(8)].status.nodes or [] for name in [node.name]}  # type: ignore[union-attr]
        part = plan(policies, outputs, held, scope=scope)
        assert part.specs == {name: spec for name, spec in full.specs.items() if name in scope}
        assert {c for c in part.conflicts if c.node in scope} == {c for c in full.conflicts if c.node in scope}


# -- what a shard writes: its part of a spec, over the object's ------------------------------------------------

TRAIN, SERVE = "ml/train", "ml/serve"


def a_spec(gpus: dict[str, tuple[int, str | None]] = {}, cpus: dict[int, tuple[int, str]] = {},  # noqa: B006
           budgets: dict[str, int] = {}) -> NodeFrequenciesSpec:  # noqa: B006
    return NodeFrequenciesSpec(
        node_name="n1",
        gpu_frequencies=[GpuFrequency(gpu_id=u, target_frequency=mhz, policy=p) for u, (mhz, p) in gpus.items()],
        cpu_frequencies=[CpuFrequency(cpu_id=c, target_frequency=mhz, policy=p) for c, (mhz, p) in cpus.items()],
        power_budgets=[PowerBudget(policy=p, watts=w, gpu_ids=[]) for p, w in budgets.items()])


def test_a_shard_replaces_its_own_entries_and_keeps_the_others_as_the_object_has_them() -> None:
    current = a_spec(gpus={"GPU-a": (1200, TRAIN), "GPU-b": (900, SERVE)}, budgets={TRAIN: 700, SERVE: 400})
    planned = a_spec(gpus={"GPU-a": (1050, TRAIN), "GPU-b": (1980, SERVE)}, budgets={TRAIN: 650, SERVE: 450})

    merged = merge_owned(current, planned, {TRAIN}, budgets=False)

    assert [(e.gpu_id, e.target_frequency, e.policy) for e in merged.gpu_frequencies or []] == [
        ("GPU-a", 1050, TRAIN), ("GPU-b", 900, SERVE)]
    assert {b.policy: b.watts for b in merged.power_budgets or []} == {TRAIN: 700, SERVE: 400}, \
        "budgets are the allocator's"
    assert merge_owned(current, planned, {TRAIN}, budgets=True).power_budgets == planned.power_budgets


def test_a_gpu_the_plan_gives_to_a_shards_policy_is_taken_from_the_other() -> None:
    current = a_spec(gpus={"GPU-a": (900, SERVE)})
    planned = a_spec(gpus={"GPU-a": (1200, TRAIN)})  # train outranks serve

    merged = merge_owned(current, planned, {TRAIN}, budgets=False)

    assert [(e.gpu_id, e.policy) for e in merged.gpu_frequencies or []] == [("GPU-a", TRAIN)]


def test_an_entry_the_shard_dropped_goes_and_one_it_does_not_hold_stays() -> None:
    current = a_spec(gpus={"GPU-a": (900, SERVE), "GPU-b": (1200, TRAIN), "GPU-c": (600, None)})
    planned = a_spec()

    assert [e.gpu_id for e in merge_owned(current, planned, {TRAIN}, budgets=False).gpu_frequencies or []] == [
        "GPU-a", "GPU-c"]
    assert [e.gpu_id for e in merge_owned(current, planned, {TRAIN}, budgets=True).gpu_frequencies or []] == [
        "GPU-a"], "the allocator drops entries that name no policy, as one recommender does"


def test_a_shared_cpu_keeps_the_lowest_target_either_shard_asked_for() -> None:
    current = a_spec(cpus={0: (1800, SERVE), 1: (2400, SERVE)})
    planned = a_spec(cpus={0: (2000, TRAIN), 1: (2000, TRAIN)})

    merged = merge_owned(current, planned, {TRAIN}, budgets=False)

    assert [(e.cpu_id, e.target_frequency, e.policy) for e in merged.cpu_frequencies or []] == [
        (0, 1800, SERVE), (1, 2000, TRAIN)]
