"""Power domains: how fast the split is at cluster scale, and how well a rack's budget is kept and shared.

Part 1, the split (climatik.recommend.sharing.split: tree, every policy's node demands, the split itself) at
1,000 nodes x 8 GPUs, 200 policies and 60 domains (10 rows of 5 racks), and at 250 and 3,000 nodes to show how
its cost grows; median and worst of several passes, on this machine's CPU.

Part 2, a rack on simulated time (the controllers' own cores in climatik.sim.loop.production, every node's guard
every 100 ms): 4 nodes x 8 H100, three workloads of different priorities on every node: `chat` (LLM serving on
GPUs 0-3, priority 100, guaranteed 40 % of its uncapped demand), `train` (GPUs 4-5, priority 10) and `batch`
(GPUs 6-7, priority 0), the training jobs data-parallel across the nodes. The rack's budget is 70 % of their
uncapped demand (measured with no capping on the same seed), lowered to 55 % at 60 s and raised back at 120 s;
180 s. Seeds 0-15, each on one of the plants in turn (climatik.sim.loop.scenario.plants: the model's, power
exponents 2.0 and 3.5, boards +-6 % apart, 1 % reading noise). For each run:

* over: the longest time the rack's true power (50 ms steps) stayed above its budget in a row, and the energy
  above it as a share of budget x time, from START s on (before that the split does not exist yet: a cold start,
  reported separately);
* low share: of the watts cut (each workload's uncapped power minus its power, on the same seed), the share cut
  from `batch` while it still had headroom (above 1.1 x its GPUs' lowest power limits);
* re-grant: after the raise at 120 s, how long until the node budgets handed out reach 95 % of the raised budget
  (or of the demand, if lower), against two control periods (2 s);
* chat vs guarantee: chat's throughput against what it gets alone with its guarantee as its budget.

Run with `make bench`, or `python hack/bench/domains/bench_domains.py [--seeds N] [--skip-rack]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import time
from dataclasses import dataclass

from climatik.algorithms import default_registry
from climatik.api import AlgorithmRef, NodeFrequencies, PowerCappingPolicy
from climatik.api.domain import PowerDomain
from climatik.cli import configure_logging
from climatik.recommend.sharing import split
from climatik.sim.loop import CapChange, GpuPlan, NoCapping, PolicyPlan, ProductionLoop, Scenario, plants, run
from climatik.sim.loop.harness import Recording
from climatik.sim.physics import H100
from climatik.sim.traces import InferenceParams, TrainingParams

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
START = 5.0
DURATION = 180.0
STEPS = ((60.0, 0.55), (120.0, 0.70))
CONTROL_PERIOD = 1.0


# -- part 1: the split at scale ---------------------------------------------------------------------------------

def fleet(nodes: int, policies: int, seed: int = 1) -> tuple[list[PowerDomain], dict[str, dict[str, str]],
                                                            dict[str, PowerCappingPolicy], list[NodeFrequencies]]:
    rng = random.Random(seed)
    names = [f"n{i:05d}" for i in range(nodes)]
    labels = {name: {"row": f"r{i * 10 // nodes}", "rack": f"r{i * 10 // nodes}-{(i * 50 // nodes) % 5}"}
              for i, name in enumerate(names)}
    domains = []
    for row in range(10):
        domains.append(PowerDomain.from_api({"metadata": {"name": f"row-{row}"}, "spec": {
            "budget": int(nodes / 10 * 8 * 700 * 0.8), "nodeSelector": {"matchLabels": {"row": f"r{row}"}}}}))
        for rack in range(5):
            domains.append(PowerDomain.from_api({"metadata": {"name": f"rack-{row}-{rack}"}, "spec": {
                "budget": int(nodes / 50 * 8 * 700 * 0.85), "parent": f"row-{row}",
                "nodeSelector": {"matchLabels": {"rack": f"r{row}-{rack}"}}}}))
    gpus = {name: [f"GPU-{name}-{k}" for k in range(8)] for name in names}
    owned: dict[int, dict[str, list[str]]] = {}
    for name in names:
        split_at = rng.choice([4, 8])
        first, second = rng.sample(range(policies), 2)
        owned.setdefault(first, {})[name] = gpus[name][:split_at]
        if split_at < 8:
            owned.setdefault(second, {})[name] = gpus[name][split_at:]
    typed = {}
    for index in range(policies):
        key = f"ml/p{index}"
        status_nodes = [{"name": node, "power": rng.uniform(200, 5000),
                         "gpus": [{"uuid": uuid} for uuid in uuids]} for node, uuids in owned.get(index, {}).items()]
        typed[key] = PowerCappingPolicy.from_api({
            "metadata": {"name": f"p{index}", "namespace": "ml", "resourceVersion": "1"},
            "spec": {"powerCapLimit": 200000, "selector": {}, "priority": rng.choice([0, 10, 100]),
                     "guaranteedWatts": rng.choice([0, 0, 2000])},
            "status": {"nodes": status_nodes}})
    objects = []
    for name in names:
        gpu_inventory = [{"uuid": uuid, "powerLimit": 700, "minPowerLimit": 200, "maxPowerLimit": 700}
                         for uuid in gpus[name]]
        objects.append(NodeFrequencies.from_api({
            "metadata": {"name": name, "generation": 1, "resourceVersion": "1"}, "spec": {"nodeName": name},
            "status": {"observedGeneration": 1, "inventory": {"gpus": gpu_inventory},
                       "power": {"mean": rng.uniform(1000, 5000), "max": 5600.0}}}))
    return domains, labels, typed, objects


def bench_split(sizes: list[tuple[int, int]], passes: int) -> list[str]:
    lines = ["nodes  GPUs    policies  domains  cells  split median  worst   per 1k nodes",
             "-----  ------  --------  -------  -----  ------------  ------  ------------"]
    for nodes, policies in sizes:
        domains, labels, typed, objects = fleet(nodes, policies)
        times, cells = [], 0
        for _ in range(passes):
            started = time.perf_counter()
            shared = split(domains, labels, typed, objects, now=NOW)
            times.append(time.perf_counter() - started)
            cells = sum(len(budgets) for budgets in shared.budgets.values())
        median = statistics.median(times) * 1000
        lines.append(f"{nodes:5d}  {nodes * 8:6d}  {policies:8d}  {len(domains):7d}  {cells:5d}  {median:9.0f} ms  "
                     f"{max(times) * 1000:3.0f} ms  {median / nodes * 1000:9.1f} ms")
    return lines


# -- part 2: a rack on simulated time ---------------------------------------------------------------------------

NODES = tuple(f"node-{c}" for c in "abcd")
CHAT = InferenceParams(base_rps=2.0, burst_rps=8.0, mean_burst_gap_s=30.0, mean_burst_s=10.0)
TRAIN = TrainingParams(utilisation=0.9, jitter=0.02)
BATCH = TrainingParams(utilisation=0.95, jitter=0.02)


def rack(seed: int, *, chat_cap: int = 16 * 700) -> Scenario:
    gpus: list[GpuPlan] = []
    for node in NODES:
        gpus += [GpuPlan(node, i, CHAT, draw=f"chat-{node}", group=f"chat-{node}") for i in range(4)]
        gpus += [GpuPlan(node, i, TRAIN, group="train") for i in (4, 5)]
        gpus += [GpuPlan(node, i, BATCH, group="batch") for i in (6, 7)]
    policies = (
        PolicyPlan("chat", tuple((n, i) for n in NODES for i in range(4)), (CapChange(0.0, chat_cap),), 100),
        PolicyPlan("train", tuple((n, i) for n in NODES for i in (4, 5)), (CapChange(0.0, 8 * 700),), 100),
        PolicyPlan("batch", tuple((n, i) for n in NODES for i in (6, 7)), (CapChange(0.0, 8 * 700),), 100),
    )
    plant = plants()[seed % len(plants())]
    return Scenario(name="rack", title="a rack shared by three workloads", nodes=dict.fromkeys(NODES, 8),
                    gpus=tuple(gpus), policies=policies, duration_s=DURATION, seed=seed, plant=plant)


@dataclass(frozen=True)
class RackResult:
    seed: int
    plant: str
    budget: float
    longest_over_s: float
    energy_over_share: float
    cold_over_s: float
    low_share: float | None
    regrant_s: float | None
    chat_ratio: float


def total(recording: Recording) -> list[float]:
    series = list(recording.policies.values())
    return [sum(values) for values in zip(*(s.power for s in series), strict=True)]


def budget_at(base: float, t: float) -> float:
    share = 0.70
    for at, value in STEPS:
        if t >= at:
            share = value
    return base * share


def rack_run(seed: int) -> RackResult:
    ref = AlgorithmRef("closed-loop")
    scenario = rack(seed)
    uncapped = run(scenario, NoCapping())
    free = total(uncapped)
    ends = next(iter(uncapped.policies.values())).end_s
    demand = statistics.fmean(p for p, t in zip(free, ends, strict=True) if t >= START)
    chat_uncapped = statistics.fmean(uncapped.policies["chat"].power)
    guarantee = int(0.4 * chat_uncapped)
    domain = {"metadata": {"name": "rack"},
              "spec": {"budget": int(0.70 * demand), "nodeSelector": {"matchLabels": {"rack": "r1"}}}}
    changes = [(at, "rack", {"budget": int(share * demand)}) for at, share in STEPS]
    loop = ProductionLoop(default_registry().create(ref), ref=ref, node_budgets=True, domains=[domain],
                          node_labels={node: {"rack": "r1"} for node in NODES}, domain_changes=changes,
                          policy_fields={"chat": {"priority": 100, "guaranteed_watts": guarantee},
                                         "train": {"priority": 10}, "batch": {"priority": 0}})
    shared = run(scenario, loop)
    power = total(shared)
    longest = run_s = cold = 0.0
    over_j = cap_j = 0.0
    for t, watts in zip(ends, power, strict=True):
        budget = budget_at(demand, t - 0.05)
        above = watts > budget
        if t < START:
            cold = cold + 0.05 if above else cold
            continue
        run_s = run_s + 0.05 if above else 0.0
        longest = max(longest, run_s)
        over_j += max(watts - budget, 0.0) * 0.05
        cap_j += budget * 0.05
    # Watts cut per workload, and batch's share while it had headroom.
    floor_batch = 8 * H100.power_limit_range[0]  # batch's GPUs at their lowest power limit
    cut_low = cut_all = 0.0
    for i, t in enumerate(ends):
        if t < START:
            continue
        cuts = {name: max(uncapped.policies[name].power[i] - shared.policies[name].power[i], 0.0)
                for name in ("chat", "train", "batch")}
        if shared.policies["batch"].power[i] > 1.1 * floor_batch and sum(cuts.values()) > 0:
            cut_low += cuts["batch"]
            cut_all += sum(cuts.values())
    raised = STEPS[1][0]
    target = 0.95 * min(budget_at(demand, raised + 1), max(free))
    regrant = next((t - raised for t, allocated in loop.allocated if t >= raised and allocated >= target), None)
    alone = ProductionLoop(default_registry().create(ref), ref=ref, node_budgets=True)
    chat_alone = run(rack(seed, chat_cap=guarantee), alone).policies["chat"].total_work
    return RackResult(seed=seed, plant=scenario.plant.name, budget=0.70 * demand, longest_over_s=longest,
                      energy_over_share=over_j / cap_j if cap_j else 0.0, cold_over_s=cold,
                      low_share=cut_low / cut_all if cut_all else None, regrant_s=regrant,
                      chat_ratio=shared.policies["chat"].total_work / chat_alone if chat_alone else 0.0)


def rack_table(results: list[RackResult]) -> list[str]:
    lines = ["seed  plant                budget W  longest over  E over   cold over  low share  re-grant  chat/guar.",
             "----  -------------------  --------  ------------  -------  ---------  ---------  --------  ----------"]
    for r in results:
        low = "n/a" if r.low_share is None else f"{r.low_share * 100:.0f} %"
        regrant = "never" if r.regrant_s is None else f"{r.regrant_s:.2f} s"
        lines.append(f"{r.seed:4d}  {r.plant:19s}  {r.budget:8.0f}  {r.longest_over_s:10.2f} s  "
                     f"{r.energy_over_share * 100:5.3f} %  {r.cold_over_s:7.2f} s  {low:>9s}  {regrant:>8s}  "
                     f"{r.chat_ratio * 100:8.1f} %")
    lows = [r.low_share for r in results if r.low_share is not None]
    regrants = [r.regrant_s for r in results]
    known = [g for g in regrants if g is not None]
    lines.append("")
    lines.append(f"mean / worst: longest over {statistics.fmean(r.longest_over_s for r in results):.2f} / "
                 f"{max(r.longest_over_s for r in results):.2f} s (target <= 0.5 s); energy over "
                 f"{statistics.fmean(r.energy_over_share for r in results) * 100:.3f} / "
                 f"{max(r.energy_over_share for r in results) * 100:.3f} % (target <= 0.1 %); low share "
                 + (f"{statistics.fmean(lows) * 100:.0f} / {min(lows) * 100:.0f} %" if lows else "n/a")
                 + " (target >= 80 %); re-grant "
                 + (f"{statistics.fmean(known):.2f} / {max(known):.2f} s" if known else "n/a")
                 + f"{'' if len(known) == len(regrants) else f' ({len(regrants) - len(known)} never)'}"
                 f" (target <= {2 * CONTROL_PERIOD:.0f} s); chat vs its guarantee "
                 f"{statistics.fmean(r.chat_ratio for r in results) * 100:.1f} / "
                 f"{min(r.chat_ratio for r in results) * 100:.1f} % (target >= 98 %)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--skip-rack", action="store_true")
    args = parser.parse_args(argv)
    configure_logging("warning", json_lines=False, stream=sys.stderr)
    print("Part 1: one split of every domain (tree, node demands, split), this machine")
    print("\n".join(bench_split([(250, 50), (1000, 200), (3000, 600)], args.passes)))
    if args.skip_rack:
        return 0
    print()
    print(f"Part 2: a rack of 4 x 8 H100, budget 70 % of uncapped demand, 55 % from {STEPS[0][0]:.0f} s, 70 % again "
          f"from {STEPS[1][0]:.0f} s; {DURATION:.0f} s; seeds 0-{args.seeds - 1}")
    results = []
    for seed in range(args.seeds):
        results.append(rack_run(seed))
        print(f"  seed {seed} done", file=sys.stderr, flush=True)
    print("\n".join(rack_table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
