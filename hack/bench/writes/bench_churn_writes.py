"""API writes per second of every component under churn, at cluster scale: N nodes x 8 H100s, one policy per 5
nodes (40 GPUs, a data-parallel training job each), 10 % of the policies over their cap (so capping, with node
budgets that move as their jobs' utilisation jitters, 0.02 a second: their power moves by 5-10 % a second) and
the rest under their threshold, either steady (the churn the target is set for) or jittering as much (a stress:
the whole fleet's load moving every second). Counted after the loop has settled, by component and object: the
monitor's policy statuses, the
recommender's policy statuses and NodeFrequencies specs, the tuners' NodeFrequencies statuses (budget reports
included); plus each component's Lease renewals when run leader-elected or sharded (one write per 2 s per replica:
the retry period), which the loop does not model.

The controllers' own cores run in the simulated-time loop (climatik.sim.loop.production: monitor, recommender,
tuner and the tuner's node guard every 100 ms), with a 1 s exporter, scrape and control period; nothing sleeps, so
a run at 1,000 nodes takes minutes of CPU for its simulated minutes.

Run with `make bench` or `python hack/bench/writes/bench_churn_writes.py --nodes 1000`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from climatik.algorithms import default_registry
from climatik.api import AlgorithmRef
from climatik.cli import configure_logging
from climatik.sim.loop import CapChange, DataPath, GpuPlan, PolicyPlan, ProductionLoop, Scenario, run
from climatik.sim.loop.scenario import training_utilisation
from climatik.sim.physics import H100
from climatik.sim.traces import TrainingParams

GPUS_PER_NODE = 8
NODES_PER_POLICY = 5
CAP_W = NODES_PER_POLICY * GPUS_PER_NODE * 500  # 20 kW a policy: 500 W a GPU
TARGET_WRITES_PER_S = 50.0
#: The capping jobs' utilisation jitter (standard deviation, drawn each second for the whole job).
JITTER = 0.02
COMPONENTS = {("policy", "status", "monitor"): "monitor: policy status",
              ("policy", "status", "recommender"): "recommender: policy status",
              ("node", "spec", "recommender"): "recommender: NodeFrequencies spec",
              ("node", "status", "tuner"): "tuners: NodeFrequencies status"}


def scenario(nodes: int, capping: float, duration_s: float, seed: int, rest_jitter: float) -> Scenario:
    names = [f"n{i:05d}" for i in range(nodes)]
    policies = nodes // NODES_PER_POLICY
    over = max(1, round(policies * capping))
    gpus: list[GpuPlan] = []
    plans: list[PolicyPlan] = []
    for p in range(policies):
        share = 1.25 if p < over else 0.6  # of the cap, uncapped
        jitter = JITTER if p < over else rest_jitter
        utilisation = training_utilisation(H100, share * CAP_W / (NODES_PER_POLICY * GPUS_PER_NODE))
        mine = [(names[p * NODES_PER_POLICY + k], i) for k in range(NODES_PER_POLICY) for i in range(GPUS_PER_NODE)]
        gpus += [GpuPlan(node, index, TrainingParams(utilisation=utilisation, jitter=jitter), draw=f"job-{p}",
                         group=f"job-{p}") for node, index in mine]
        plans.append(PolicyPlan(f"job-{p}", tuple(mine), (CapChange(0.0, CAP_W),)))
    return Scenario(name="churn", title=f"{nodes} nodes, {over} of {policies} policies capping",
                    nodes=dict.fromkeys(names, GPUS_PER_NODE), gpus=tuple(gpus), policies=tuple(plans),
                    duration_s=duration_s, seed=seed)


class CountedLoop(ProductionLoop):
    """The production loop, remembering its writes as they stood when the settling time ended."""

    def __init__(self, settle_s: float) -> None:
        ref = AlgorithmRef("closed-loop")
        super().__init__(default_registry(plugins=False).create(ref), ref=ref, node_budgets=True)
        self.settle_s = settle_s
        self.settled: Counter[tuple[str, str, str]] | None = None

    def before_step(self, now_s: float) -> None:
        if self.settled is None and now_s >= self.settle_s:
            self.settled = self.writes


def counts(nodes: int, capping: float, *, settle_s: float, window_s: float, seed: int,
           rest_jitter: float) -> tuple[Counter[tuple[str, str, str]], float]:
    """Writes in the window (by kind, field, writer), and the wall time of the run."""
    started = time.monotonic()
    loop = CountedLoop(settle_s)
    run(scenario(nodes, capping, settle_s + window_s, seed, rest_jitter), loop, datapath=DataPath())
    assert loop.settled is not None
    return loop.writes - loop.settled, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="100,1000", help="comma-separated node counts")
    parser.add_argument("--capping", type=float, default=0.1, help="share of the policies over their cap")
    parser.add_argument("--settle", type=float, default=60.0, help="simulated seconds before counting")
    parser.add_argument("--window", type=float, default=60.0, help="simulated seconds counted")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rest", default="steady,jittering", help="what the policies under their cap do")
    args = parser.parse_args(argv)
    configure_logging("warning", json_lines=False, stream=sys.stderr)
    print(f"API writes per second under churn ({args.capping:.0%} of the policies over their cap, their jobs' "
          f"utilisation jittering by {JITTER} a second, node budgets; 1 s telemetry and control period, guard every "
          f"100 ms; counted over {args.window:.0f} s after {args.settle:.0f} s)")
    header = (f"{'nodes':>5} {'policies':>8} {'the rest':>9} | "
              + " | ".join(f"{label:>33}" for label in COMPONENTS.values())
              + f" | {'total':>7} | {'per node':>8} | {'run s':>6}")
    print(header)
    print("-" * len(header))
    for rest, rest_jitter in (("steady", 0.0), ("jittering", JITTER)):
        if rest not in args.rest.split(","):
            continue
        for nodes in (int(n) for n in args.nodes.split(",") if n):
            window, wall = counts(nodes, args.capping, settle_s=args.settle, window_s=args.window, seed=args.seed,
                                  rest_jitter=rest_jitter)
            rates = {key: window[key] / args.window for key in COMPONENTS}
            other = sum(v for k, v in window.items() if k not in COMPONENTS) / args.window
            total = sum(rates.values()) + other
            print(f"{nodes:>5} {nodes // NODES_PER_POLICY:>8} {rest:>9} | "
                  + " | ".join(f"{rates[k]:>33.2f}" for k in COMPONENTS)
                  + f" | {total:>7.2f} | {total / nodes:>8.4f} | {wall:>6.0f}"
                  + (f"  (other writes/s: {other:.2f})" if other else ""), flush=True)
            if nodes == 1000:
                verdict = "met" if total < TARGET_WRITES_PER_S else "MISSED"
                print(f"Target at 1000 nodes, the rest {rest}: under {TARGET_WRITES_PER_S:.0f} writes/s in total: "
                      f"{total:.2f} {verdict}")
    print("Not counted: Lease renewals, 0.5 writes/s per leader-elected or sharded replica (retry period 2 s), and "
          "Events (one per capping start or release).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
