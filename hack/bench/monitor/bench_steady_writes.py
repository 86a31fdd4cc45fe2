"""API writes of a steady policy: status writes per policy per minute by the monitor and the recommender, and
NodeFrequencies writes, once the loop has settled, for both algorithms and for the resting points that used to
cost a write every cycle (inside the closed loop's deadband just above the threshold; the seed algorithm holding
caps below the release level). A steady loop should cost no writes beyond the heartbeat (60 s): at most one
monitor write a minute (an observation for the record) and the recommender's write of the state it persists on
that observation.

The controllers' own cores run in the simulated-time loop (climatik.sim.loop.production), on 8 H100s, with a 1 s
exporter, scrape and control period; the load is held constant, or jittered by 2 % per second as training does.
After `--settle` simulated seconds the writes of the next `--window` seconds are counted. Nothing sleeps.

Run with `make bench` or `python hack/bench/monitor/bench_steady_writes.py`.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass

from climatik.algorithms import default_registry
from climatik.api import AlgorithmRef
from climatik.cli import configure_logging
from climatik.sim.loop import CapChange, DataPath, GpuPlan, PolicyPlan, ProductionLoop, Scenario, run
from climatik.sim.loop.scenario import training_utilisation
from climatik.sim.physics import H100, Phase, PhaseMix
from climatik.sim.traces import Breakpoint, ScriptedParams, TrainingParams

CAP_W = 4000
GPUS = 8
TRAINING = PhaseMix.only(Phase.TRAINING)


@dataclass(frozen=True)
class Case:
    label: str
    algorithm: str
    #: Uncapped power as a share of the cap, before and after `step_s` (the same twice: constant).
    load: tuple[float, float]
    jitter: float = 0.0
    step_s: float = 60.0


CASES = [
    Case("under the threshold", "closed-loop", (0.6, 0.6)),
    Case("under the threshold", "dynamic-frequency-scaler", (0.6, 0.6)),
    Case("capped, over the cap", "closed-loop", (1.3, 1.3)),
    Case("capped, over the cap", "dynamic-frequency-scaler", (1.3, 1.3)),
    Case("resting just above the threshold", "closed-loop", (0.905, 0.905)),
    Case("holding caps under the release level", "dynamic-frequency-scaler", (1.3, 0.8)),
    Case("capped, jittered load", "closed-loop", (1.3, 1.3), jitter=0.02),
    Case("capped, jittered load", "dynamic-frequency-scaler", (1.3, 1.3), jitter=0.02),
]


def scenario(case: Case, duration_s: float) -> Scenario:
    gpus = []
    for index in range(GPUS):
        before, after = (training_utilisation(H100, share * CAP_W / GPUS) for share in case.load)
        if case.jitter:
            work = TrainingParams(utilisation=after, jitter=case.jitter)
            gpus.append(GpuPlan("node-a", index, work, group="train"))
            continue
        points = (Breakpoint(0.0, before, TRAINING), Breakpoint(case.step_s, after, TRAINING))
        gpus.append(GpuPlan("node-a", index, ScriptedParams(points), group="train"))
    policy = PolicyPlan("train", tuple(("node-a", i) for i in range(GPUS)), (CapChange(0.0, CAP_W),))
    return Scenario(name="steady", title=case.label, nodes={"node-a": GPUS}, gpus=tuple(gpus), policies=(policy,),
                    duration_s=duration_s)


def counts(case: Case, *, settle_s: float, window_s: float) -> tuple[Counter[tuple[str, str, str]], Counter[
        tuple[str, str, str]]]:
    """Writes up to the end of the settling time, and up to the end of the window."""
    ref = AlgorithmRef(case.algorithm)
    algorithm = default_registry(plugins=False).create(ref)
    settled = ProductionLoop(algorithm, ref=ref)
    run(scenario(case, settle_s), settled, datapath=DataPath())
    whole = ProductionLoop(algorithm, ref=ref)
    run(scenario(case, settle_s + window_s), whole, datapath=DataPath())
    return settled.writes, whole.writes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=180.0, help="simulated seconds before counting")
    parser.add_argument("--window", type=float, default=600.0, help="simulated seconds counted")
    args = parser.parse_args(argv)
    configure_logging("warning", json_lines=False, stream=sys.stderr)
    minutes = args.window / 60.0
    print(f"Steady-state API writes per policy per minute ({GPUS} H100s, cap {CAP_W} W, threshold 90 %, 1 s "
          f"telemetry and control period, counted over {args.window:.0f} s after {args.settle:.0f} s; heartbeat "
          f"60 s)")
    header = (f"{'resting point':38} {'algorithm':26} {'monitor':>8} {'recommender':>12} {'nf spec':>8} "
              f"{'nf status':>10} {'beyond heartbeat':>17}")
    print(header)
    print("-" * len(header))
    for case in CASES:
        before, after = counts(case, settle_s=args.settle, window_s=args.window)
        window = after - before
        monitor = window[("policy", "status", "monitor")] / minutes
        recommender = window[("policy", "status", "recommender")] / minutes
        spec = window[("node", "spec", "recommender")] / minutes
        status = window[("node", "status", "tuner")] / minutes
        beyond = max(0.0, monitor - 1.0) + max(0.0, recommender - 1.0) + spec + status
        label = case.label + (f" ({case.jitter:.0%} jitter)" if case.jitter else "")
        print(f"{label:38} {case.algorithm:26} {monitor:8.2f} {recommender:12.2f} {spec:8.2f} {status:10.2f} "
              f"{beyond:17.2f}")
    print("'beyond heartbeat': writes per minute above one monitor and one recommender write a minute.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
