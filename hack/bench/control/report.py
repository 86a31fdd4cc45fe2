"""The control benchmark's printed output: the results table and where each algorithm lands on the targets."""

from __future__ import annotations

import math
from collections.abc import Iterable

from cases import Case, ScenarioResult

from climatik.sim.loop import PolicyMetrics

#: The issue's targets: under the cap within 2 control periods of Prometheus showing the violation; energy above
#: the cap at most 1 % of cap x duration over the LLM trace; throughput at least 97 % of the oracle's and above
#: the static power-limit baseline's.
TTU_PERIODS = 2.0
LLM_ENERGY_SHARE = 0.01
THROUGHPUT_SHARE = 0.97
LLM_SCENARIO = "llm"

_HEADER = (f"{'scenario/policy':<16} {'controller':<34} {'period':>6} {'to under':>9} {'worst/T':>7} "
           f"{'seen':>5} {'E>cap J':>9} {'E>cap':>7} {'t>cap':>6} {'thruput':>8}")


def table(results: Iterable[ScenarioResult]) -> list[str]:
    """One row per case and policy: worst time to under (s and control periods), visible violation episodes,
    energy above the cap (J and share of cap x duration), share of time above the cap, throughput vs the oracle."""
    lines = [_HEADER, "-" * len(_HEADER)]
    for result in results:
        oracle = result.case("oracle")
        for policy in result.scenario.policies:
            where = f"{result.scenario.name}/{policy.name}"
            for case in result.cases:
                lines.append(_row(where, case, case.metrics[policy.name], oracle.metrics[policy.name]))
            lines.append("")
    return lines


def _row(where: str, case: Case, m: PolicyMetrics, oracle: PolicyMetrics) -> str:
    period = f"{case.period_s:g} s" if case.period_s is not None else "-"
    worst = m.worst_time_to_under_s
    in_periods = "-" if worst is None or case.period_s is None else _fmt(worst / case.period_s, "{:.1f}")
    label = case.label if case.kind != "variant" else f"({case.label})"
    return (f"{where:<16} {label:<34} {period:>6} {_fmt(worst, '{:.2f} s'):>9} {in_periods:>7} "
            f"{len(m.times_to_under_s):>5} {m.energy_above_cap_j:>9.0f} {m.energy_above_cap_share:>7.2%} "
            f"{m.time_above_cap_share:>6.1%} {m.work / oracle.work:>8.1%}")


def _fmt(value: float | None, pattern: str) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "never"
    return pattern.format(value)


def targets(results: list[ScenarioResult], algorithms: list[str], periods: list[float]) -> list[str]:
    """Per algorithm and control period, each target per scenario and policy: its value and PASS or MISS."""
    lines: list[str] = []
    for name in algorithms:
        for period in periods:
            lines.append(f"{name} at a {period:g} s control period:")
            for result in results:
                case = result.case(name, period)
                static = result.case("static power limit")
                oracle = result.case("oracle")
                for policy in result.scenario.policies:
                    m = case.metrics[policy.name]
                    checks = [_ttu(m, period), _throughput(m, oracle.metrics[policy.name],
                                                           static.metrics[policy.name])]
                    if result.scenario.name == LLM_SCENARIO:
                        checks.insert(1, _energy(m))
                    lines.append(f"  {result.scenario.name + '/' + policy.name:<16} " + "; ".join(checks))
    return lines


def _ttu(m: PolicyMetrics, period: float) -> str:
    worst = m.worst_time_to_under_s
    if worst is None:
        return "under the cap: no violation showed"
    verdict = "PASS" if worst <= TTU_PERIODS * period else "MISS"
    return f"under the cap within {_fmt(worst, '{:.2f} s')} <= {TTU_PERIODS * period:g} s {verdict}"


def _energy(m: PolicyMetrics) -> str:
    verdict = "PASS" if m.energy_above_cap_share <= LLM_ENERGY_SHARE else "MISS"
    return f"energy above cap {m.energy_above_cap_share:.2%} <= {LLM_ENERGY_SHARE:.0%} {verdict}"


def _throughput(m: PolicyMetrics, oracle: PolicyMetrics, static: PolicyMetrics) -> str:
    share, static_share = m.work / oracle.work, static.work / oracle.work
    first = "PASS" if share >= THROUGHPUT_SHARE else "MISS"
    second = "PASS" if share > static_share else "MISS"
    return (f"throughput {share:.1%} >= {THROUGHPUT_SHARE:.0%} {first}, "
            f"> static power limit {static_share:.1%} {second}")


def anatomy(results: list[ScenarioResult]) -> list[str]:
    """For each loop case, its worst violation: when it started, when Prometheus showed it, when it ended, so
    that measurement delay (start to shown) and reaction (shown to under) can be told apart."""
    lines = []
    for result in results:
        for case in result.cases:
            if case.period_s is None:
                continue
            for policy in result.scenario.policies:
                episodes = [e for e in case.metrics[policy.name].episodes if e.time_to_under_s is not None]
                if not episodes:
                    continue
                worst = max(episodes, key=lambda e: e.time_to_under_s or 0.0)
                shown = worst.visible_s or worst.start_s
                end = "never" if worst.end_s is None else f"{worst.end_s:.2f} s (+{worst.end_s - shown:.2f} s)"
                lines.append(f"  {result.scenario.name + '/' + policy.name:<16} {case.label:<34} "
                             f"{case.period_s:g} s: over from {worst.start_s:.2f} s, shown at {shown:.2f} s "
                             f"(+{shown - worst.start_s:.2f} s), under at {end}")
    return lines
