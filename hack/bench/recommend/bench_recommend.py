"""The recommender's pass at scale: one policy reconcile (climatik.recommend.core.Recommender.step: the policy's
algorithm step, its node budgets, the plan of the nodes, the report), with every policy already stepped once, at
250, 1,000 and 3,000 nodes x 8 GPUs with 50, 200 and 600 policies, 10 % of them capping. Median and worst over
many passes, on this machine's CPU, and the NodeFrequencies specs a steady pass would write (none).

With shards (`recommend --shard`) a policy's event costs a pass on its owner and, for a policy that keeps node
budgets and another replica owns, a budget pass on the allocator (climatik.recommend.core.Recommender.
allocate_only). Three rows per scale, side by side in one run: `one` (one recommender's pass), `shard` (the owner's
pass in a replica that does not allocate: it reads the budgets from the specs), `allocator` (the allocator's
budget pass for a policy it does not step, planning from the entries the specs hold).

Run with `make bench` or `python hack/bench/recommend/bench_recommend.py`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import time

from climatik.algorithms import default_registry
from climatik.api import NodeFrequencies, PowerCappingPolicy
from climatik.cli import configure_logging
from climatik.recommend.core import Recommender
from climatik.recommend.plan import normalized

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
STEPS = list(range(210, 1981, 15))


def cluster(nodes: int, policies: int, capping: float = 0.1,
            seed: int = 1) -> tuple[dict[str, PowerCappingPolicy], list[NodeFrequencies]]:
    """Nodes with reported inventories, and policies observing GPUs on a few nodes each (each node's GPUs split
    between one or two policies); `capping` of the policies over their threshold."""
    rng = random.Random(seed)
    names = [f"n{i:05d}" for i in range(nodes)]
    owned: dict[int, dict[str, list[str]]] = {}
    for name in names:
        gpus = [f"GPU-{name}-{k}" for k in range(8)]
        first, second = rng.sample(range(policies), 2)
        cut = rng.choice([4, 8])
        owned.setdefault(first, {})[name] = gpus[:cut]
        if cut < 8:
            owned.setdefault(second, {})[name] = gpus[cut:]
    stamp = NOW.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    typed = {}
    for index in range(policies):
        key = f"ml/p{index}"
        mine = owned.get(index, {})
        count = sum(len(uuids) for uuids in mine.values()) or 1
        limit = 500 * count
        power = limit * (1.1 if index < capping * policies else 0.6)
        status_nodes = [{"name": node, "power": power * len(uuids) / count,
                         "gpus": [{"uuid": uuid, "power": power / count, "smClock": 1980} for uuid in uuids]}
                        for node, uuids in mine.items()]
        conditions = [{"type": "MetricsAvailable", "status": "True", "reason": "MetricsFresh", "message": "",
                       "lastTransitionTime": stamp}]
        typed[key] = PowerCappingPolicy.from_api({
            "metadata": {"name": f"p{index}", "namespace": "ml", "resourceVersion": "1", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"powerCapLimit": limit, "selector": {"matchLabels": {"app": f"p{index}"}}},
            "status": {"cappingActionRequired": power > 0.9 * limit, "currentPower": power, "lastUpdated": stamp,
                       "nodes": status_nodes, "conditions": conditions}})
    objects = [NodeFrequencies.from_api({
        "metadata": {"name": name, "generation": 1, "resourceVersion": "1"}, "spec": {"nodeName": name},
        "status": {"observedGeneration": 1, "inventory": {"backend": "sim", "gpus": [
            {"uuid": f"GPU-{name}-{k}", "index": k, "minFrequency": 210, "maxFrequency": 1980,
             "defaultFrequency": 1980, "supportedFrequencies": STEPS, "powerLimit": 700, "minPowerLimit": 200,
             "maxPowerLimit": 700} for k in range(8)]}}}) for name in names]
    return typed, objects


def applied(objects: list[NodeFrequencies], writes: dict[str, object]) -> list[NodeFrequencies]:
    """The objects after a pass's writes, as the cache would show them (specs replaced)."""
    out = []
    for node in objects:
        spec = writes.get(node.metadata.name)
        out.append(node if spec is None else NodeFrequencies(metadata=node.metadata, spec=normalized(spec),  # type: ignore[arg-type]
                                                             status=node.status))
    return out


ROLES = ("one", "shard", "allocator")


def bench(nodes: int, policies: int, passes: int) -> list[str]:
    typed, objects = cluster(nodes, policies)
    core = Recommender(registry=default_registry())
    for policy in typed.values():  # every policy stepped once: the plan holds every policy's result
        core.step(policy, typed, objects, now=NOW)
    objects = applied(objects, dict(core.replan(typed, objects, origin="bench").writes))
    shard = Recommender(registry=default_registry())  # a replica that does not allocate, every policy stepped
    for policy in typed.values():
        shard.step(policy, typed, objects, now=NOW, allocate=False)
    allocator = Recommender(registry=default_registry())  # the allocator, for policies it does not step
    keys = sorted(typed)
    passes_of = {
        "one": lambda key: core.step(typed[key], typed, objects, now=NOW),
        "shard": lambda key: shard.step(typed[key], typed, objects, now=NOW, allocate=False),
        "allocator": lambda key: allocator.allocate_only(typed[key], typed, objects, now=NOW),
    }
    rows = []
    for role in ROLES:
        rng = random.Random(2)  # the same policies in each role
        times, writes = [], 0
        for _ in range(passes):
            key = rng.choice(keys)
            started = time.perf_counter()
            done = passes_of[role](key)
            times.append(time.perf_counter() - started)
            writes += len(done.writes)
        median = statistics.median(times) * 1000
        rows.append(f"{nodes:5d}  {nodes * 8:6d}  {policies:8d}  {role:9s}  {median:9.1f} ms  "
                    f"{max(times) * 1000:7.1f} ms  {writes / passes:10.2f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=40)
    args = parser.parse_args(argv)
    configure_logging("warning", json_lines=False, stream=sys.stderr)
    print("One policy reconcile of the recommender (10 % of policies capping), this machine")
    print("nodes  GPUs    policies  role       pass median  worst       spec writes/pass")
    print("-----  ------  --------  ---------  -----------  ----------  ----------------")
    for nodes, policies in ((250, 50), (1000, 200), (3000, 600)):
        print("\n".join(bench(nodes, policies, args.passes)), flush=True)
    print("Target (one, 1000 nodes): pass under 100 ms. Sharded, each event costs its owner's pass (shard) and,")
    print("for a policy another replica owns, the allocator's budget pass (allocator).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
