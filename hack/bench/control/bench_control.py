"""Control-quality benchmark: the production algorithms in a closed loop on simulated time, against baselines and
the oracle, on the standard scenarios (load step, LLM bursts, cap drop, two policies on shared nodes).

Prints a table and where each algorithm lands on the targets, and writes plots to out/bench/control/.
Deterministic for a given --seed; nothing sleeps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cases import ScenarioResult, Variant, run_scenario
from plots import plot_scenario
from report import anatomy, table, targets

from climatik.algorithms import builtin_factories, default_registry
from climatik.api.constants import DEFAULT_ALGORITHM
from climatik.cli import configure_logging
from climatik.sim.loop import DEFAULT_DT_S, DataPath
from climatik.sim.loop import scenario as standard

REPO = Path(__file__).resolve().parents[3]

VARIANTS = [
    Variant("closed-loop, settle-seconds=2", DEFAULT_ALGORITHM, {"settle-seconds": "2"}),
    Variant("closed-loop, cappingThreshold=100", DEFAULT_ALGORITHM, capping_threshold=100),
    Variant("closed-loop, both", DEFAULT_ALGORITHM, {"settle-seconds": "2"}, capping_threshold=100),
    Variant("closed-loop, cappingThreshold=98", DEFAULT_ALGORITHM, capping_threshold=98),
    Variant("DFS, cappingThreshold=100", "dynamic-frequency-scaler", capping_threshold=100),
]

LEGEND = """\
Columns: 'to under' = worst time, over the violation episodes Prometheus showed ('seen'), from the first
Prometheus sample above the cap to the true power being back at or under cap + 2 % (for at least 1 s);
'worst/T' = the same in control periods; 'E>cap' = energy above the cap, in J and as a share of
cap x duration; 't>cap' = share of time above the cap; 'thruput' = work done relative to the oracle.
Power is the GPUs' true power per simulation step, not a measurement. Oracle: the highest uniform clock that
keeps each policy at or under its cap at every step, known in advance and applied without delay. Static
power limit: cap / GPU count per GPU, enforced by the GPU firmware (re-set when the cap changes). Best static
clock: the lowest clock the oracle needed, locked for the whole run. Algorithms run with default parameters
and the default policy spec (cappingThreshold 90 %); rows in parentheses change one thing, at the shortest
period."""


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # The tuners in the loop log every change at info; the benchmark prints tables.
    configure_logging("warning", json_lines=False, stream=sys.stderr)
    started = time.monotonic()
    registry = default_registry(plugins=False)
    algorithms = sorted(builtin_factories())
    datapath = DataPath()
    results: list[ScenarioResult] = []
    for scenario in standard.standard(seed=args.seed):
        results.append(run_scenario(scenario, registry, algorithms=algorithms, periods=args.periods,
                                    variants=[] if args.no_variants else VARIANTS, datapath=datapath,
                                    dt_s=args.dt))
    print(f"Control-quality benchmark (seed {args.seed}, step {args.dt:g} s, GPUs: "
          f"{results[0].scenario.profile.model_name})")
    for period in args.periods:
        print(f"Delays assumed, control period {period:g} s: {datapath.with_period(period).describe()}")
    for result in results:
        caps = ", ".join(f"{p.name} cap " + " -> ".join(f"{c.watts} W" for c in p.caps)
                         for p in result.scenario.policies)
        clocks = ", ".join(f"{name} {mhz} MHz" for name, mhz in result.static_clocks.items())
        print(f"  {result.scenario.name}: {result.scenario.title}; {caps}; best static clock {clocks}")
    print()
    print("\n".join(table(results)))
    print(LEGEND)
    print()
    print("Worst violation of each loop (start -> shown in Prometheus -> back under cap + 2 %):")
    print("\n".join(anatomy(results)))
    print()
    print("Targets (1 s exporter and scrape intervals):")
    print("\n".join(targets(results, algorithms, args.periods)))
    if not args.no_plots:
        args.out.mkdir(parents=True, exist_ok=True)
        written = [path for result in results for path in plot_scenario(result, args.out)]
        print(f"\nPlots: {', '.join(str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p) for p in written)}")
    print(f"Ran in {time.monotonic() - started:.0f} s")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of every workload trace")
    parser.add_argument("--periods", type=lambda text: [float(p) for p in text.split(",")], default=[1.0, 5.0],
                        help="control periods (monitor intervals) in seconds, comma-separated; default 1,5")
    parser.add_argument("--dt", type=float, default=DEFAULT_DT_S, help="simulation step in seconds")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "control", help="where plots go")
    parser.add_argument("--no-plots", action="store_true", help="print the table only")
    parser.add_argument("--no-variants", action="store_true", help="skip the diagnostic variants")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
