"""Control-quality benchmark: the production algorithms in a closed loop on simulated time, against baselines and
the oracle, over seeds, telemetry settings and plants the algorithms' model does not match.

The full matrix (the default; `make bench`) runs seeds 0-15, every plant and every telemetry setting, and takes
tens of minutes on two cores; `--quick` runs two seeds on the default plant with 1 s telemetry and the shipped
configurations only, for a look in about two minutes. Prints mean and worst over seeds, and every target with
PASS or MISS; writes plots of one seed to out/bench/control/. Deterministic for given seeds; nothing sleeps.
"""

from __future__ import annotations

import argparse
import multiprocessing
import pickle
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from cases import (
    BASELINES,
    INFEASIBLE,
    ORACLE,
    SCENARIOS,
    TELEMETRY,
    Config,
    Job,
    Outcome,
    TelemetrySetting,
    configs,
    matrix,
    run_safely,
    scenario_of,
    two_level_available,
)
from plots import plot_scenario
from report import LEGEND, Results, anatomy, baseline_table, infeasible_table, loop_table, targets

from climatik.algorithms import builtin_factories
from climatik.cli import configure_logging
from climatik.sim.loop import Plant, plants

REPO = Path(__file__).resolve().parents[3]

#: The tuned configurations: what changes the most for throughput without touching the algorithms' code.
TUNED = [
    Config("closed-loop, cappingThreshold=98", "closed-loop", capping_threshold=98),
    Config("dynamic-frequency-scaler, cappingThreshold=100", "dynamic-frequency-scaler", capping_threshold=100),
]
PLANT_KEYS = ("default", "alpha2", "alpha3.5", "boards", "noise")
QUICK_SEEDS = [0, 1]


@dataclass(frozen=True)
class Plan:
    """What a benchmark run covers."""

    seeds: list[int]
    plants: list[Plant]
    telemetry: list[TelemetrySetting]
    rows: list[Config]
    scenarios: list[str]

    def covers(self, job: Job) -> bool:
        """Whether `job` belongs to this plan (to select part of a saved matrix)."""
        thresholds = {None} | {row.capping_threshold for row in self.rows}
        return (job.seed in self.seeds and job.plant in self.plants and job.scenario in self.scenarios
                and job.threshold in thresholds
                and (job.config is None or (job.config in self.rows and job.telemetry in self.telemetry)))

    @property
    def feasible(self) -> list[tuple[str, str]]:
        """Every (scenario, policy) whose caps can be met."""
        return [pair for group in self.grouped for pair in group]

    @property
    def grouped(self) -> list[list[tuple[str, str]]]:
        return [[(name, policy.name) for policy in SCENARIOS[name]().policies]
                for name in self.scenarios if name != INFEASIBLE]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # The tuners in the loop log every change at info; the benchmark prints tables.
    configure_logging("warning", json_lines=False, stream=sys.stderr)
    started = time.monotonic()
    every_plant = dict(zip(PLANT_KEYS, plants(), strict=True))
    chosen = [every_plant[key] for key in args.plants]
    if args.firmware_tau is not None:
        chosen = [replace(plant, firmware_tau_s=args.firmware_tau) for plant in chosen]
    plan = Plan(seeds=args.seeds, plants=chosen, scenarios=args.scenarios,
                telemetry=[setting for setting in TELEMETRY if setting.name in args.telemetry],
                rows=configs(sorted(builtin_factories()), TUNED if args.tuned else []))
    plot_seed = None if args.no_plots else args.seeds[0]
    jobs = matrix(scenarios=plan.scenarios, seeds=plan.seeds, plants=plan.plants, telemetry=plan.telemetry,
                  rows=plan.rows, grid=args.grid, duration_s=args.duration, plot_seed=plot_seed)
    outcomes = _outcomes(args, jobs, plan)
    _header(args, plan)
    _report(Results(outcomes), plan)
    if plot_seed is not None:
        _plots(outcomes, plan.telemetry[0], args.out)
    cpu = sum(outcome.seconds for outcome in outcomes)
    if args.load is not None:
        print(f"Printed {len(outcomes)} saved runs of {len(jobs)} planned ({cpu:.0f} s of simulation when they ran)")
    else:
        print(f"Ran {len(jobs)} runs in {time.monotonic() - started:.0f} s on {args.jobs} process(es) "
              f"({cpu:.0f} s of simulation)")
    return 0


def _outcomes(args: argparse.Namespace, jobs: list[Job], plan: Plan) -> list[Outcome]:
    if args.load is not None:
        # Print a saved matrix again (report changes without a re-run), or the part of it the arguments select.
        outcomes: list[Outcome] = []
        for path in args.load:
            with path.open("rb") as saved:
                outcomes += [outcome for outcome in pickle.load(saved) if plan.covers(outcome.job)]
        return outcomes
    outcomes = []
    for outcome in _run_all(jobs, args.jobs):
        outcomes.append(outcome)
        # A long matrix saves as it goes, so that what finished can be printed if it is stopped.
        if args.save is not None and (len(outcomes) % 100 == 0 or len(outcomes) == len(jobs)):
            _save(args.save, outcomes)
    return outcomes


def _save(path: Path, outcomes: list[Outcome]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        pickle.dump(outcomes, out)
    partial.replace(path)


def _header(args: argparse.Namespace, plan: Plan) -> None:
    mode = "quick" if args.quick else "full"
    print(f"Control-quality benchmark ({mode}: seeds {','.join(map(str, plan.seeds))}; {len(plan.plants)} plant(s); "
          f"{len(plan.telemetry)} telemetry setting(s); GPUs: {SCENARIOS[plan.scenarios[0]]().profile.model_name}; "
          "step 0.05 s)")
    for setting in plan.telemetry:
        print(f"Telemetry {setting.name}: {setting.datapath().describe()}")
    for name in plan.scenarios:
        scenario = SCENARIOS[name]()
        caps = ", ".join(f"{p.name} cap " + " -> ".join(f"{c.watts} W" for c in p.caps) for p in scenario.policies)
        print(f"  {name}: {scenario.title}; {caps}")
    print("Plants: " + "; ".join(_plant(plant) for plant in plan.plants))
    print("The first plant runs at every telemetry setting, the others at the first one"
          + (" as well as at every other (--grid)" if args.grid else " (--grid for every pair)")
          + "; tuned configurations run on the first plant only.")
    if not two_level_available():
        print("Two-level loop: not available (ProductionLoop has no node_budgets argument yet); its rows are "
              "missing and the cluster loop is the default path.")
    print()


def _report(results: Results, plan: Plan) -> None:
    tuned = sorted({row.capping_threshold for row in plan.rows if row.capping_threshold is not None})
    thresholds: list[int | None] = [None, *tuned]
    for plant in plan.plants:
        print("\n".join(baseline_table(results, scenarios=plan.grouped, plant=plant, thresholds=thresholds,
                                       seeds=plan.seeds)))
    for setting in plan.telemetry:
        for plant in plan.plants:
            if results.ran(setting, plant):
                print("\n".join(loop_table(results, scenarios=plan.grouped, rows=plan.rows, telemetry=setting,
                                           plant=plant, seeds=plan.seeds)))
    print(LEGEND)
    print()
    if INFEASIBLE in plan.scenarios:
        for plant in plan.plants:
            print("\n".join(infeasible_table(results, rows=plan.rows, telemetry=plan.telemetry, plant=plant,
                                             seeds=plan.seeds)))
            print()
    default = plan.plants[0]
    print(f"Longest violation of each loop (plant: {default.name}; start -> shown in Prometheus -> span):")
    print("\n".join(anatomy(results, rows=plan.rows, telemetry=plan.telemetry, plant=default,
                            feasible=plan.feasible)))
    print()
    print("Targets (worst over seeds and scenarios; PASS or MISS):")
    print("\n".join(targets(results, rows=plan.rows, telemetry=plan.telemetry, plants=plan.plants,
                            feasible=plan.feasible)))
    for failed in results.errors:
        print(f"ERROR {failed.job.label} on {failed.job.scenario} seed {failed.job.seed} "
              f"({failed.job.plant.name}): {failed.error}")


def _run_all(jobs: list[Job], processes: int) -> Iterator[Outcome]:
    """Every job's outcome, in the order they finish; progress goes to stderr every tenth of the matrix."""
    started, step = time.monotonic(), max(1, len(jobs) // 10)
    if processes <= 1:
        done: Iterator[Outcome] = map(run_safely, jobs)
        yield from _progress(done, len(jobs), step, started)
        return
    # Fork: the workers inherit the loaded modules and the logging set-up; each job builds its own world.
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        yield from _progress(pool.imap_unordered(run_safely, jobs, chunksize=1), len(jobs), step, started)


def _progress(outcomes: Iterator[Outcome], total: int, step: int, started: float) -> Iterator[Outcome]:
    for count, outcome in enumerate(outcomes, start=1):
        if count % step == 0 and count < total:
            print(f"{count}/{total} runs in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        yield outcome


def _plant(plant: Plant) -> str:
    changes = [f"power exponent {plant.alpha:g}" if plant.alpha is not None else "",
               f"boards +-{100 * plant.p_max_spread:g} % in above-idle power" if plant.p_max_spread else "",
               f"readings with {100 * plant.noise:g} % noise (sigma)" if plant.noise else ""]
    described = ", ".join(c for c in changes if c) or "the profile, read exactly"
    return f"{plant.name} ({described}; firmware power-limit response {1000 * plant.firmware_tau_s:g} ms)"


def _plots(outcomes: list[Outcome], setting: TelemetrySetting, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    kept = [o for o in outcomes if o.recording is not None]
    written: list[Path] = []
    for name in sorted({o.job.scenario for o in kept}):
        mine = [o for o in kept if o.job.scenario == name]
        oracle = next((o for o in mine if o.job.baseline == ORACLE), None)
        if oracle is None or oracle.recording is None:
            continue
        order = {label: index for index, label in enumerate(BASELINES)}
        mine.sort(key=lambda o: (o.job.config is not None, order.get(o.job.label, 0), o.job.label))
        rows = [(o.job.label if o.job.config is None else f"{o.job.label} ({setting.name} telemetry)", o.recording)
                for o in mine if o.recording is not None]
        written += plot_scenario(scenario_of(oracle.job), rows, oracle.recording, out)
    shown = [str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for p in written]
    print(f"Plots: {', '.join(shown)}")


def _seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
    return seeds


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"seeds {','.join(map(str, QUICK_SEEDS))}, the default plant, 1 s telemetry")
    parser.add_argument("--seeds", type=_seeds, help="seeds, e.g. 0-15 or 0,3 (default 0-15)")
    parser.add_argument("--plants", type=lambda text: text.split(","),
                        help=f"plants, comma-separated, of {','.join(PLANT_KEYS)} (default all)")
    parser.add_argument("--telemetry", type=lambda text: text.split(","),
                        help=f"telemetry settings of {','.join(s.name for s in TELEMETRY)} (default all)")
    parser.add_argument("--scenarios", type=lambda text: text.split(","), default=list(SCENARIOS),
                        help=f"scenarios of {','.join(SCENARIOS)} (default all)")
    parser.add_argument("--grid", action="store_true",
                        help="run every plant at every telemetry setting (default: the other plants at the first)")
    parser.add_argument("--firmware-tau", type=float,
                        help="the boards' power-limit response time constant in s (default 0.05, an assumption)")
    parser.add_argument("--jobs", type=int, default=2, help="processes to run the matrix on (default 2)")
    parser.add_argument("--tuned", action=argparse.BooleanOptionalAction, default=None,
                        help="run the tuned configurations too (default: in the full matrix, not with --quick)")
    parser.add_argument("--duration", type=float, help="shorten every scenario to this many seconds (smoke tests)")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "control", help="where plots go")
    parser.add_argument("--save", type=Path, help="write the runs' results to this file (pickle)")
    parser.add_argument("--load", type=Path, nargs="+",
                        help="print the results saved by --save (one file or several, e.g. of seed ranges) instead "
                             "of running")
    parser.add_argument("--no-plots", action="store_true", help="print the tables only")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or (QUICK_SEEDS if args.quick else list(range(16)))
    args.plants = args.plants or (["default"] if args.quick else list(PLANT_KEYS))
    args.telemetry = args.telemetry or ([TELEMETRY[0].name] if args.quick else [s.name for s in TELEMETRY])
    args.tuned = not args.quick if args.tuned is None else args.tuned
    for name in args.telemetry:
        if name not in {setting.name for setting in TELEMETRY}:
            parser.error(f"unknown telemetry setting {name!r}; known: {', '.join(s.name for s in TELEMETRY)}")
    for key in args.plants:
        if key not in PLANT_KEYS:
            parser.error(f"unknown plant {key!r}; known: {', '.join(PLANT_KEYS)}")
    for name in args.scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return args


if __name__ == "__main__":
    sys.exit(main())
