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
