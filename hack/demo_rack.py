"""`make demo DEMO_ARGS="--scenario rack"`: a rack's power budget shared by two prioritised workloads.

The simulated nodes carry the label topology.climatik.io/rack=r1. On every node a high-priority LLM inference
service (app=llm-inference, a bursty trace) holds four GPUs and a low-priority training job (app=llm-training)
the other four; each workload has a PowerCappingPolicy with node budgets whose own limit does not bind, the
service with priority 100 and a guarantee, the training job with priority 0. After a warm-up without a domain,
the PowerDomain rack-r1 is applied with a budget below the two workloads' uncapped demand; a third of the way
through, the budget steps down, and two thirds of the way, back up (at most 500 W/s).

The live line shows the rack's true power (the simulator's one-second averages of every GPU on the rack), the
budget in force, and each workload's power next to its share of the domain (PowerDomain status). The summary
gives the time and energy above the budget, and how the cut was shared: each workload's cut is what it would
draw uncapped (an uncapped twin of the rack: the same traces on the same seed, stepped to the same time) minus
what it draws. The plot goes to out/demo/climatik-demo-rack.png.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demoview import GuardCut, GuardWatch, LiveLine
from loopenv import LoopConfig, LoopEnv, Tenant, running

from climatik.sim.cluster import build_nodes
from climatik.sim.node import SimNode
from climatik.sim.traces import InferenceParams, TrainingParams

RACK_LABEL = "topology.climatik.io/rack"
DOMAIN = "rack-r1"
WARMUP_S = 15.0
RAMP_W_PER_S = 500
INFERENCE = Tenant("llm-inference", {"app": "llm-inference"}, 4,
                   InferenceParams(base_rps=3, burst_rps=10, mean_burst_gap_s=40, mean_burst_s=15))
TRAINING = Tenant("llm-training", {"app": "llm-training"}, 4, TrainingParams(utilisation=0.95))
PRIORITY = {INFERENCE.name: 100, TRAINING.name: 0}
GUARANTEE_PER_NODE = 1500


@dataclass(frozen=True)
class Share:
    """One workload at one moment: what it draws, what it would draw uncapped, and its share of the domain."""

    power: float
    demand: float
    share: float | None


@dataclass(frozen=True)
class RackReading:
    t: float
    power: float  # every GPU of the rack, true one-second averages
    budget: float | None  # in force: the spec's (a fall is at once), or the ramping status's if lower
    reported: float | None  # the domain status's power (the tuners' readings)
    workloads: dict[str, Share]


class UncappedTwin:
    """The rack's nodes again, with the same traces on the same seed but never capped, stepped to the time the
    real nodes reached: what each GPU would draw uncapped over the last second."""

    def __init__(self, env: LoopEnv) -> None:
        self._env = env
        self._nodes: dict[str, SimNode] = {node.name: node for node in build_nodes(env.cluster_config())}

    def power(self) -> dict[str, float]:
        """Uncapped one-second average power by GPU UUID, now."""
        assert self._env.sim is not None
        watts = {}
        for name, twin in self._nodes.items():
            lag = self._env.sim.node(name).now_s - twin.now_s
            if lag > 0:
                twin.step(lag)
            watts.update({gpu.uuid: gpu.true_average_power_w for gpu in twin.gpus})
        return watts


def policy(tenant: Tenant, nodes: int) -> dict[str, Any]:
    """The workload's policy: node budgets, a limit that does not bind on its own (every GPU at its default
    power limit), its priority and (the service) its guarantee."""
    spec: dict[str, Any] = {"powerCapLimit": 700 * tenant.gpus_per_node * nodes,
                            "selector": {"matchLabels": dict(tenant.labels)}, "priority": PRIORITY[tenant.name]}
    if tenant is INFERENCE:
        spec["guaranteedWatts"] = GUARANTEE_PER_NODE * nodes
    return {"apiVersion": "climatik.io/v1alpha1", "kind": "PowerCappingPolicy",
            "metadata": {"name": tenant.name, "namespace": tenant.namespace}, "spec": spec}


def domain(budget: int) -> dict[str, Any]:
    return {"apiVersion": "climatik.io/v1alpha1", "kind": "PowerDomain", "metadata": {"name": DOMAIN},
            "spec": {"budget": budget, "nodeSelector": {"matchLabels": {RACK_LABEL: "r1"}},
                     "rampWattsPerSecond": RAMP_W_PER_S, "defaultPriority": -100}}


def steps(args: argparse.Namespace) -> list[tuple[float, int, str]]:
    """(when, budget, what) from the start of the run."""
    high = args.budget or 3500 * args.nodes
    low = args.budget_low or 2500 * args.nodes
    third = args.duration / 3
    return [(WARMUP_S, high, f"PowerDomain {DOMAIN} applied: budget {high} W"),
            (WARMUP_S + third, low, f"budget steps down to {low} W"),
            (WARMUP_S + 2 * third, high, f"budget steps back up to {high} W (at most {RAMP_W_PER_S} W/s)")]


def run(args: argparse.Namespace) -> int:
    config = LoopConfig(workdir=args.out / "run", nodes=args.nodes, gpus_per_node=8, tenants=(INFERENCE, TRAINING),
                        node_labels={RACK_LABEL: "r1"})
    print(f"starting: kube-apiserver, etcd, Prometheus, {args.nodes} simulated 8-GPU nodes in rack r1, "
          f"monitor, recommend, {args.nodes} tuners (logs in {config.workdir})", flush=True)
    readings: list[RackReading] = []
    live = LiveLine()
    plan = steps(args)
    with running(config) as env:
        for tenant in (INFERENCE, TRAINING):
            env.apply(policy(tenant, args.nodes))
        print(f"applied policies: {INFERENCE.name} (priority 100, guaranteed {GUARANTEE_PER_NODE * args.nodes} W), "
              f"{TRAINING.name} (priority 0); {WARMUP_S:.0f} s without a domain first", flush=True)
        twin, guards = UncappedTwin(env), GuardWatch(env)
        pending, budget = list(plan), None
        while (now := time.monotonic() - env.started) < WARMUP_S + args.duration:
            while pending and now >= pending[0][0]:
                _, budget, what = pending.pop(0)
                env.apply(domain(budget))
                live.event(f"t={now:6.1f}s  {what}")
            env.processes.check()  # type: ignore[union-attr]
            reading = read(env, twin, budget, now)
            readings.append(reading)
            for cut in guards.look(reading.t):
                live.event(str(cut))
            live.show(reading.t, line(reading))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - env.started - now)))
        live.end()
        codes = env.processes.stop()  # type: ignore[union-attr]
        restored = all(gpu.locked_clock_mhz is None and gpu.power_limit_w == gpu.default_power_limit_w
                       for node in env.node_names for gpu in env.gpus(node))
    guarantee = GUARANTEE_PER_NODE * args.nodes
    summary(figures(readings, guarantee), plan, guarantee=guarantee, codes=codes, restored=restored, cuts=guards.cuts)
    plot(readings, plan, guards.cuts, args.out / "climatik-demo-rack.png")
    return 0 if restored and all(code == 0 for code in codes.values()) else 1


def read(env: LoopEnv, twin: UncappedTwin, budget: int | None, t: float) -> RackReading:
    gpus = [gpu for node_gpus in env.all_gpus().values() for gpu in node_gpus]
    uncapped = twin.power()
    status = env.domain_status(DOMAIN) if budget is not None else {}
    shares = {str(p.get("name")): float(p.get("watts") or 0) for p in status.get("policies") or []}
    workloads = {}
    for tenant in (INFERENCE, TRAINING):
        mine = {uuid for uuids in env.tenant_gpus[tenant.name].values() for uuid in uuids}
        workloads[tenant.name] = Share(sum(g.power_w for g in gpus if g.uuid in mine),
                                       sum(uncapped[uuid] for uuid in mine),
                                       shares.get(f"{tenant.namespace}/{tenant.name}"))
    in_force = status.get("budget")
    if budget is not None and in_force is not None:
        in_force = min(float(budget), float(in_force))
    elif budget is not None:
        in_force = float(budget)
    return RackReading(t, sum(g.power_w for g in gpus), in_force, status.get("power"), workloads)


def line(r: RackReading) -> str:
    budget = "   none" if r.budget is None else f"{r.budget:5.0f} W"
    parts = [f"t={r.t:6.1f}s  rack {r.power:5.0f} W  budget {budget}"]
    for name, share in r.workloads.items():
        given = "" if share.share is None else f" of {share.share:4.0f}"
        parts.append(f"{name} {share.power:4.0f}{given} W (uncapped {share.demand:4.0f})")
    return "  |  ".join(parts)


@dataclass(frozen=True)
class RackFigures:
    """The run under the domain, added up: seconds, time and energy above the budget, and per workload the mean
    uncapped demand and the joules cut."""

    seconds: float
    over_s: float
    longest_over_s: float
    over_j: float
    budget_j: float
    demand: dict[str, float]
    cut_j: dict[str, float]
    short_of_guarantee_s: float


def figures(readings: list[RackReading], guarantee: float) -> RackFigures:
    spans = [(r, b.t - r.t, r.budget) for r, b in itertools.pairwise(readings) if r.budget is not None]
    longest = stretch = 0.0
    for r, dt, budget in spans:
        stretch = stretch + dt if r.power > budget else 0.0
        longest = max(longest, stretch)
    names = (INFERENCE.name, TRAINING.name)
    service = [(r.workloads[INFERENCE.name], dt) for r, dt, _ in spans]
    return RackFigures(
        seconds=sum(dt for _, dt, _ in spans),
        over_s=sum(dt for r, dt, budget in spans if r.power > budget),
        longest_over_s=longest,
        over_j=sum(max(0.0, r.power - budget) * dt for r, dt, budget in spans),
        budget_j=sum(budget * dt for _, dt, budget in spans),
        demand={n: statistics.fmean(r.workloads[n].demand for r, _, _ in spans) for n in names},
        cut_j={n: sum(max(0.0, r.workloads[n].demand - r.workloads[n].power) * dt for r, dt, _ in spans)
               for n in names},
        short_of_guarantee_s=sum(dt for s, dt in service if s.power < 0.95 * min(guarantee, s.demand)))


def summary(f: RackFigures, plan: list[tuple[float, int, str]], *, guarantee: float, codes: dict[str, int],
            restored: bool, cuts: list[GuardCut]) -> None:
    print("summary")
    print("  rack r1: budget " + ", then ".join(f"{b} W at t={t:.0f}s" for t, b, _ in plan))
    print(f"  uncapped demand under the domain: mean {sum(f.demand.values()):.0f} W ("
          + ", ".join(f"{name} {watts:.0f} W" for name, watts in f.demand.items()) + ")")
    print(f"  time above the domain budget: {f.over_s:.0f} s of {f.seconds:.0f} s (longest stretch "
          f"{f.longest_over_s:.0f} s), energy above it {f.over_j:.0f} J ({100 * f.over_j / max(f.budget_j, 1.0):.2f}% "
          f"of budget x time)")
    total = sum(f.cut_j.values())
    print(f"  watts cut (uncapped minus drawn), {total / max(f.seconds, 1.0):.0f} W on average: "
          f"{100 * f.cut_j[TRAINING.name] / max(total, 1.0):.0f}% from the low-priority {TRAINING.name}, "
          f"{100 * f.cut_j[INFERENCE.name] / max(total, 1.0):.0f}% from {INFERENCE.name}")
    print(f"  {INFERENCE.name} under 95% of the lower of its {guarantee:.0f} W guarantee and its uncapped demand: "
          f"{f.short_of_guarantee_s:.0f} s")
    print(f"  node guard cuts before the cluster loop saw the violation: {len(cuts)}"
          + (f" (first at t={cuts[0].t:.0f}s on {cuts[0].node}, {cuts[0].policy} with {cuts[0].lever})"
             if cuts else ""))
    print(f"  controllers' exit codes: {codes}")
    print(f"  default clocks and power limits restored on every GPU after the tuners stopped: "
          f"{'yes' if restored else 'NO'}")


def plot(readings: list[RackReading], plan: list[tuple[float, int, str]], cuts: list[GuardCut], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - optional dependency, only for the picture

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    t = [r.t for r in readings]
    nan = float("nan")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7.5), sharex=True)
    top.plot(t, [r.power for r in readings], label="rack GPU power (true, 1 s avg)", color="tab:red")
    top.plot(t, [sum(s.demand for s in r.workloads.values()) for r in readings], label="uncapped demand",
             color="tab:red", linestyle=":", alpha=0.6)
    top.step(t, [nan if r.budget is None else r.budget for r in readings], where="post", color="black",
             label=f"{DOMAIN} budget in force")
    top.plot(t, [nan if r.reported is None else r.reported for r in readings], color="tab:orange", linestyle="--",
             label="domain status power (tuners)")
    if cuts:
        top.plot([c.t for c in cuts], [max(r.power for r in readings) * 1.03] * len(cuts), "v", color="tab:purple",
                 linestyle="none", label="node guard cuts before the cluster loop saw it")
    for when, _, _ in plan:
        for axis in (top, bottom):
            axis.axvline(when, color="grey", linestyle="-.", linewidth=0.8)
    top.set_ylabel("W")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(f"Climatik demo: {DOMAIN}'s budget shared by priority (grey: domain applied, step down, step up)")
    colours = {INFERENCE.name: "tab:blue", TRAINING.name: "tab:green"}
    for name, colour in colours.items():
        label = f"{name} (priority {PRIORITY[name]})"
        bottom.plot(t, [r.workloads[name].power for r in readings], color=colour, label=f"{label}: drawn")
        bottom.plot(t, [nan if r.workloads[name].share is None else r.workloads[name].share for r in readings],
                    color=colour, linestyle="--", label=f"{label}: share of the domain")
        bottom.plot(t, [r.workloads[name].demand for r in readings], color=colour, linestyle=":", alpha=0.6,
                    label=f"{label}: uncapped")
    bottom.set_ylabel("W")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper right", fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"  plot: {path}")
