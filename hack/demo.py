"""`make demo`: the whole Climatik loop on this machine, with a live line, a summary and a plot.

A real kube-apiserver and etcd, a real Prometheus scraping simulated 8-GPU nodes every second, Node and Pod objects,
and the three controllers as real `climatik` processes. Two scenarios:

* `service` (the default): a small LLM inference service under the sample policy
  (manifests/samples/powercappingpolicy.yaml). The service runs a bursty inference trace, then its load falls, so
  both capping and the release of the clocks show.
* `rack` (hack/demo_rack.py): a rack's PowerDomain shared by a prioritised inference service with a guarantee and
  a low-priority training job, its budget stepped down and back up.

Both print a line whenever a node guard cuts before the cluster loop has seen the violation. Everything started is
stopped at the end, and the tuners' restore of the default clocks is checked.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import sys
import time
from pathlib import Path

import demo_rack
from demoview import GuardCut, GuardWatch, LiveLine
from loopenv import REPO_SAMPLE, LoopConfig, Reading, load_policy, running

from climatik.cli import configure_logging
from climatik.sim.traces import InferenceParams

OUT = Path(__file__).resolve().parent.parent / "out" / "demo"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=("service", "rack"), default="service")
    parser.add_argument("--duration", type=float, default=None,
                        help="service: seconds of busy service (default 150); rack: seconds under the domain "
                             "(default 180; the budget is stepped down at a third, back up at two thirds)")
    parser.add_argument("--quiet-tail", type=float, default=60.0, help="service: seconds of low load afterwards")
    parser.add_argument("--policy", type=Path, default=REPO_SAMPLE, help="the PowerCappingPolicy to apply")
    parser.add_argument("--algorithm", default=None,
                        help="use this algorithm instead of the policy's (closed-loop: the built-in default)")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--budget", type=int, default=None,
                        help="rack: the domain's budget in watts (default 3500 per node, about 70%% of the demand)")
    parser.add_argument("--budget-low", type=int, default=None,
                        help="rack: the budget during the step down (default 2500 per node)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 150.0 if args.scenario == "service" else 180.0
    return args


def policy_from(args: argparse.Namespace) -> dict[str, object]:
    policy = load_policy(args.policy)
    spec = dict(policy["spec"])
    if args.algorithm == "closed-loop":
        spec.pop("customAlgorithms", None)
    elif args.algorithm:
        spec["customAlgorithms"] = [{"name": args.algorithm}]
    return {**policy, "spec": spec}


def line(reading: Reading, cap: float, threshold: float) -> str:
    capped = [c for c in reading.caps if c is not None]
    caps = f"{min(capped)}-{max(capped)}" if capped else "none"
    reported = "   -  " if reading.reported_power is None else f"{reading.reported_power:6.0f}"
    capping = {True: "CAPPING", False: "ok     ", None: "-      "}[reading.capping]
    return (f"t={reading.t:6.1f}s  power {reading.power:6.0f} W (status {reported} W)  cap {cap:.0f} W "
            f"(threshold {threshold:.0f})  {capping}  SM clocks {min(reading.clocks)}-{max(reading.clocks)} MHz  "
            f"caps {caps}")


def run(args: argparse.Namespace) -> int:
    # A fresh run: the previous one's etcd data and tuner state files would be taken for this one's.
    shutil.rmtree(args.out / "run", ignore_errors=True)
    if args.scenario == "rack":
        return demo_rack.run(args)
    policy = policy_from(args)
    name = policy["metadata"]["name"]  # type: ignore[index]
    spec = policy["spec"]
    cap = float(spec["powerCapLimit"])  # type: ignore[index]
    threshold = cap * float(spec.get("cappingThreshold", 90)) / 100  # type: ignore[union-attr]
    config = LoopConfig(workdir=args.out / "run", nodes=args.nodes,
                        service_workload=InferenceParams(base_rps=3, burst_rps=10, mean_burst_gap_s=40,
                                                         mean_burst_s=15))
    print(f"starting: kube-apiserver, etcd, Prometheus, {args.nodes} simulated 8-GPU nodes, "
          f"monitor, recommend, {args.nodes} tuners (logs in {config.workdir})", flush=True)
    readings: list[Reading] = []
    live = LiveLine()
    with running(config) as env:
        env.apply_policy(policy)
        print(f"applied policy {name}: cap {cap:.0f} W, algorithm "
              f"{(spec.get('customAlgorithms') or [{'name': 'closed-loop'}])[0]['name']}", flush=True)  # type: ignore[union-attr]
        guards = GuardWatch(env)
        total = args.duration + args.quiet_tail
        low_load = False
        while (now := time.monotonic() - env.started) < total:
            if not low_load and now >= args.duration:
                env.set_service_load(0.15, {"decode": 1.0})
                low_load = True
                live.event("load falls: the service goes quiet")
            env.processes.check()  # type: ignore[union-attr]
            reading = env.read(name)
            readings.append(reading)
            for cut in guards.look(reading.t):
                live.event(str(cut))
            live.show(reading.t, line(reading, cap, threshold))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - env.started - reading.t)))
        live.end()
        codes = env.processes.stop()  # type: ignore[union-attr]
        restored = all(gpu.locked_clock_mhz is None and gpu.power_limit_w == gpu.default_power_limit_w
                       for node in env.node_names for gpu in env.gpus(node))
    summary(readings, cap, args.duration, codes, restored, cuts=guards.cuts)
    plot(readings, cap, threshold, args.out / "climatik-demo.png", args.duration, cuts=guards.cuts)
    return 0 if restored and all(code == 0 for code in codes.values()) else 1


def summary(readings: list[Reading], cap: float, busy: float, codes: dict[str, int], restored: bool, *,
            cuts: list[GuardCut]) -> None:
    dt = [b.t - a.t for a, b in itertools.pairwise(readings)]
    over = [(r.power - cap) * d for r, d in zip(readings, dt, strict=False) if r.power > cap]
    busy_readings = [r for r in readings if r.t < busy]
    quiet = [r for r in readings if r.t >= busy + 20]
    print("summary")
    print(f"  busy phase: mean power {statistics.fmean(r.power for r in busy_readings):.0f} W, "
          f"peak {max(r.power for r in busy_readings):.0f} W, cap {cap:.0f} W")
    print(f"  time above the cap: {100 * len(over) / max(1, len(dt)):.1f}% of samples, "
          f"energy above the cap {sum(over):.0f} J")
    print(f"  mean SM clock while busy: {statistics.fmean(statistics.fmean(r.clocks) for r in busy_readings):.0f} MHz")
    if quiet:
        print(f"  after the load fell: SM clocks {min(min(r.clocks) for r in quiet)}-"
              f"{max(max(r.clocks) for r in quiet)} MHz, caps left: "
              f"{sorted({c for r in quiet[-5:] for c in r.caps if c is not None}) or 'none'}")
    print(f"  node guard cuts before the cluster loop saw the violation: {len(cuts)}"
          + (f" (first at t={cuts[0].t:.0f}s on {cuts[0].node}, with {cuts[0].lever})" if cuts else ""))
    print(f"  controllers' exit codes: {codes}")
    print(f"  default clocks and power limits restored on every GPU after the tuners stopped: "
          f"{'yes' if restored else 'NO'}")


def plot(readings: list[Reading], cap: float, threshold: float, path: Path, busy: float, *,
         cuts: list[GuardCut]) -> None:
    import matplotlib  # noqa: PLC0415 - optional dependency, only for the picture

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    t = [r.t for r in readings]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    top.plot(t, [r.power for r in readings], label="service GPU power (true, 1 s avg)", color="tab:red")
    top.plot(t, [r.reported_power for r in readings], label="policy status currentPower", color="tab:orange",
             linestyle=":")
    top.axhline(cap, color="black", label="powerCapLimit")
    top.axhline(threshold, color="grey", linestyle="--", label="cappingThreshold")
    top.axvline(busy, color="tab:blue", linestyle="-.", label="load falls")
    if cuts:
        top.plot([c.t for c in cuts], [cap * 1.02] * len(cuts), "v", color="tab:purple", linestyle="none",
                 label="node guard cuts before the cluster loop saw it")
    top.set_ylabel("W")
    top.legend(loc="upper right", fontsize=8)
    top.set_title("Climatik demo: power of the llm-inference service against its cap")
    bottom.plot(t, [statistics.fmean(r.clocks) for r in readings], label="mean SM clock", color="tab:green")
    bottom.plot(t, [min((c for c in r.caps if c is not None), default=None) or float("nan") for r in readings],
                label="locked clock cap", color="tab:purple", linestyle="--")
    bottom.set_ylabel("MHz")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"  plot: {path}")


def main() -> int:
    # The simulated nodes log every request at debug level; the demo's own lines are what matter here.
    configure_logging("warning", json_lines=False, stream=sys.stderr)
    return run(parse_args(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())

