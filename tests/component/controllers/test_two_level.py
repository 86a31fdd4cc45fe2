"""Two levels, end to end on simulated time: the recommender splits a policy's budget into node budgets and each
node's guard keeps them from its own GPUs' readings, so that a load step above the cap is held within a fraction
of a second, long before the telemetry could show it."""

from __future__ import annotations

from climatik.algorithms import default_registry
from climatik.api import AlgorithmRef
from climatik.sim.loop import ProductionLoop, run
from climatik.sim.loop import scenario as standard
from climatik.sim.loop.quality import policy_metrics

START = 5.0  # the first seconds are a cold start: no budget exists before the monitor's first observation


def test_a_load_step_above_the_cap_is_held_by_the_node_guard_within_half_a_second() -> None:
    scenario = standard.step(seed=3)
    ref = AlgorithmRef("closed-loop")
    loop = ProductionLoop(default_registry().create(ref), ref=ref, node_budgets=True)
    series = run(scenario, loop).policies["train"]

    metrics = policy_metrics(series)
    later = [episode for episode in metrics.episodes if episode.start_s >= START]
    assert max((episode.span_s for episode in later), default=0.0) <= 0.5, later
    assert loop.limit_changes > 0, "the guard held the budget with power limits"


def test_clocks_only_cannot_hold_the_same_step_that_fast() -> None:
    scenario = standard.step(seed=3)
    ref = AlgorithmRef("closed-loop")
    loop = ProductionLoop(default_registry().create(ref), ref=ref, node_budgets=False)
    series = run(scenario, loop).policies["train"]

    later = [episode for episode in policy_metrics(series).episodes if episode.start_s >= START]
    assert max(episode.span_s for episode in later) > 0.5, "the telemetry's delay shows without the guard"
    assert loop.limit_changes == 0


def test_a_rack_domain_holds_two_workloads_under_its_budget() -> None:
    scenario = standard.shared(seed=1)
    budget = 5000
    domains = [{"metadata": {"name": "rack-1"},
                "spec": {"budget": budget, "nodeSelector": {"matchLabels": {"rack": "r1"}}}}]
    ref = AlgorithmRef("closed-loop")
    loop = ProductionLoop(default_registry().create(ref), ref=ref, node_budgets=True, domains=domains,
                          node_labels={node: {"rack": "r1"} for node in scenario.nodes})
    recording = run(scenario, loop)

    train, serve = recording.policies["train"], recording.policies["serve"]
    rack = [(end, a + b) for end, a, b in zip(train.end_s, train.power, serve.power, strict=True)]
    longest, run_s = 0.0, 0.0
    for end, watts in rack:
        run_s = run_s + 0.05 if watts > budget and end >= START else 0.0
        longest = max(longest, run_s)
    assert longest <= 0.5 + 1e-9, "the rack's true power stays above its budget at most half a second in a row"
    status = loop.domain_status("rack-1")
    assert status["allocated"] <= budget and status["power"] > 0
    assert [c["status"] for c in status["conditions"] if c["type"] == "Valid"] == ["True"]
