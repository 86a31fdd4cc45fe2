"""What the control benchmark runs, one job at a time, and running a job.

A job is one controller on one scenario for one seed, plant and telemetry setting; it returns the metrics the
report needs (and the recording, when asked for plots). Jobs are plain, picklable descriptions, built into
scenarios and controllers inside the process that runs them, so that a pool of processes can share the matrix.

* Baselines (no capping, the oracle at the cap and at the threshold, a static per-GPU power limit at the
  threshold) do not measure anything, so they run once per scenario, seed, plant and threshold.
* Loop configurations run the shipped code through the production loop: each built-in algorithm with its
  default parameters and the policy's default spec, through the two-level path (node budgets kept by the
  tuner's guard) when the loop offers it and through the cluster loop alone; tuned configurations change the
  capping threshold.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from climatik.algorithms import AlgorithmRegistry, default_registry
from climatik.api import AlgorithmRef
from climatik.sim.loop import (
    Controller,
    DataPath,
    InfeasibleMetrics,
    NoCapping,
    Oracle,
    Plant,
    PolicySeries,
    ProductionLoop,
    Recording,
    Scenario,
    StaticPowerLimit,
    infeasible_metrics,
    policy_metrics,
    run,
)
from climatik.sim.loop import scenario as standard

#: The scenarios by name; `infeasible` has a cap that cannot be met for a while and is judged on its own terms.
SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "step": standard.step,
    "llm": standard.llm,
    "cap-drop": standard.cap_drop,
    "shared": standard.shared,
    "infeasible": standard.infeasible,
}
INFEASIBLE = "infeasible"
#: When the infeasible scenario's cap drops and is restored (see climatik.sim.loop.scenario.infeasible).
INFEASIBLE_DROP_S, INFEASIBLE_RESTORE_S = 30.0, 70.0

NO_CAPPING = "no capping"
ORACLE = "oracle"
ORACLE_AT_THRESHOLD = "oracle at threshold"
STATIC_AT_THRESHOLD = "static power limit at threshold"
BASELINES = (NO_CAPPING, ORACLE, ORACLE_AT_THRESHOLD, STATIC_AT_THRESHOLD)


@dataclass(frozen=True)
class TelemetrySetting:
    """How fresh the cluster loop's readings are: the exporter's collect interval, Prometheus' scrape interval and
    the control period (the monitor's interval)."""

    name: str
    collect_s: float
    scrape_s: float
    period_s: float

    def datapath(self) -> DataPath:
        return DataPath.telemetry(collect_s=self.collect_s, scrape_s=self.scrape_s, period_s=self.period_s)


#: 1 s everywhere (what the README asks for), 5 s, and dcgm-exporter's defaults (30 s collect, the chart's 15 s
#: scrape) with a control period of one scrape.
TELEMETRY = (
    TelemetrySetting("1s", 1.0, 1.0, 1.0),
    TelemetrySetting("5s", 5.0, 5.0, 5.0),
    TelemetrySetting("30s/15s", 30.0, 15.0, 15.0),
)


@dataclass(frozen=True)
class Config:
    """A loop configuration: an algorithm with parameters, a capping threshold (None: the default 90 %), and the
    path (two-level: the recommender's node budgets kept by the tuners' guards; else the cluster loop alone)."""

    label: str
    algorithm: str
    parameters: tuple[tuple[str, str], ...] = ()
    capping_threshold: int | None = None
    two_level: bool = False
    tuned: bool = False

    def ref(self) -> AlgorithmRef:
        return AlgorithmRef(self.algorithm, dict(self.parameters) or None)


def two_level_available() -> bool:
    """Whether the production loop can run the two-level path (ProductionLoop(..., node_budgets=True))."""
    return "node_budgets" in inspect.signature(ProductionLoop).parameters


def make_loop(config: Config, registry: AlgorithmRegistry) -> ProductionLoop:
    """The production loop of `config`; ValueError when it asks for a path the loop does not offer."""
    ref = config.ref()
    if not config.two_level:
        return ProductionLoop(registry.create(ref), ref=ref, label=config.label)
    if not two_level_available():
        raise ValueError("the production loop has no node_budgets argument: the two-level path is not available")
    # Called through a keyword dictionary so that this file type-checks whichever loop is installed.
    options: dict[str, object] = {"ref": ref, "label": config.label, "node_budgets": True}
    loop: ProductionLoop = ProductionLoop(registry.create(ref), **options)  # type: ignore[arg-type]
    return loop


@dataclass(frozen=True)
class Job:
    """One run: a baseline (`baseline`) or a loop configuration (`config`, at `telemetry`) on a scenario.

    `threshold` overrides every policy's capping threshold (a tuned configuration, or the baselines held at its
    threshold); `duration_s` shortens the scenario (smoke tests); `keep` returns the recording (plots).
    """

    scenario: str
    seed: int
    plant: Plant
    baseline: str | None = None
    config: Config | None = None
    telemetry: TelemetrySetting | None = None
    threshold: int | None = None
    duration_s: float | None = None
    keep: bool = False

    @property
    def label(self) -> str:
        if self.config is not None:
            return self.config.label
        assert self.baseline is not None, "a job runs a baseline or a loop configuration"
        return self.baseline

    def cost(self) -> float:
        """A rough relative cost, so that the long jobs start first and the pool's processes end together."""
        gpus = 16 if self.scenario == "shared" else 8
        duration = self.duration_s or {"llm": 300.0, "shared": 240.0, "infeasible": 130.0}.get(self.scenario, 150.0)
        weight = 1.0
        if self.config is not None and self.telemetry is not None:
            weight = 3.0 / self.telemetry.period_s ** 0.5 + (2.0 if self.config.two_level else 0.0)
        return gpus * duration * weight


@dataclass(frozen=True)
class PolicyOutcome:
    """What the report needs of one policy's run."""

    worst_span_s: float
    episodes: int
    energy_above_cap_j: float
    energy_share: float
    time_above_share: float
    work: float
    worst_after_shown_s: float | None
    worst_start_s: float | None
    worst_shown_s: float | None
    infeasible: InfeasibleMetrics | None = None


@dataclass
class Outcome:
    """A job's result; `error` says why a job could not run (its policies are then empty)."""

    job: Job
    policies: dict[str, PolicyOutcome]
    seconds: float
    applies: int = 0
    recording: Recording | None = field(default=None, repr=False)
    error: str | None = None


def configs(algorithms: list[str], tuned: list[Config]) -> list[Config]:
    """The loop rows: every algorithm as shipped, through the two-level path when the loop offers it (the default
    path) and through the cluster loop alone; then the tuned configurations on the default path."""
    two_level = two_level_available()
    rows: list[Config] = []
    for name in algorithms:
        if two_level:
            rows.append(Config(f"{name}, two-level", name, two_level=True))
        rows.append(Config(f"{name}, cluster loop", name))
    rows += [replace(config, two_level=two_level, tuned=True) for config in tuned]
    return rows


def matrix(*, scenarios: list[str], seeds: list[int], plants: list[Plant], telemetry: list[TelemetrySetting],
           rows: list[Config], grid: bool = False, duration_s: float | None = None,
           plot_seed: int | None = None) -> list[Job]:
    """Every job of the benchmark: the shipped rows on every plant, the tuned rows on the first (default) plant
    only; on the first plant at every telemetry setting, on the others at the first setting only unless `grid`
    asks for every pair; the baselines once per scenario, seed, plant and threshold in use. `plot_seed`'s runs
    on the first plant and the first telemetry setting keep their recordings."""
    jobs: list[Job] = []
    for plant_index, plant in enumerate(plants):
        used = [row for row in rows if plant_index == 0 or not row.tuned]
        settings = telemetry if grid or plant_index == 0 else telemetry[:1]
        thresholds = sorted({row.capping_threshold for row in used if row.capping_threshold is not None})
        for name in scenarios:
            for seed in seeds:
                keep = plant_index == 0 and seed == plot_seed
                base = Job(name, seed, plant, duration_s=duration_s)
                jobs += [replace(base, baseline=b, keep=keep) for b in BASELINES]
                jobs += [replace(base, baseline=b, threshold=t)
                         for t in thresholds for b in (ORACLE_AT_THRESHOLD, STATIC_AT_THRESHOLD)]
                jobs += [replace(base, config=row, telemetry=setting, threshold=row.capping_threshold,
                                 keep=keep and setting == telemetry[0]) for row in used for setting in settings]
    # Seed by seed, so that a stopped matrix has whole seeds; the long jobs of a seed first, so that the pool's
    # processes finish it together.
    return sorted(jobs, key=lambda job: (job.seed, -job.cost()))


def run_safely(job: Job) -> Outcome:
    """`run_job`, with a job that fails reported rather than raised (a half-done loop must not sink the matrix)."""
    try:
        return run_job(job)
    except Exception as error:  # any failure of one run is reported with the run
        return Outcome(job, {}, 0.0, error=f"{type(error).__name__}: {error}")


def scenario_of(job: Job) -> Scenario:
    """The scenario a job runs: the named one with its seed, plant, threshold and duration."""
    scenario = replace(SCENARIOS[job.scenario](seed=job.seed), plant=job.plant)
    if job.threshold is not None:
        scenario = replace(scenario, policies=tuple(replace(p, capping_threshold=job.threshold)
                                                    for p in scenario.policies))
    if job.duration_s is not None:
        scenario = replace(scenario, duration_s=job.duration_s)
    return scenario


def baseline(name: str) -> Controller:
    if name == NO_CAPPING:
        return NoCapping()
    if name == ORACLE:
        return Oracle()
    if name == ORACLE_AT_THRESHOLD:
        return Oracle(at_threshold=True)
    if name == STATIC_AT_THRESHOLD:
        return StaticPowerLimit(at_threshold=True)
    raise ValueError(f"no baseline {name!r}")


class _Registry:
    """One algorithm registry per process, built on first use (entry points are not loaded)."""

    built: AlgorithmRegistry | None = None

    @classmethod
    def get(cls) -> AlgorithmRegistry:
        if cls.built is None:
            cls.built = default_registry(plugins=False)
        return cls.built


def run_job(job: Job) -> Outcome:
    """Run one job and measure it."""
    started = time.monotonic()
    scenario = scenario_of(job)
    applies = 0
    if job.config is not None:
        assert job.telemetry is not None, "a loop runs at a telemetry setting"
        loop = make_loop(job.config, _Registry.get())
        recording = run(scenario, loop, datapath=job.telemetry.datapath())
        applies = loop.applies
    else:
        assert job.baseline is not None
        recording = run(scenario, baseline(job.baseline))
    uncapped = _uncapped(job) if job.scenario == INFEASIBLE else None
    policies = {name: _measure(series, scenario, None if uncapped is None else uncapped.policies[name])
                for name, series in recording.policies.items()}
    return Outcome(job, policies, time.monotonic() - started, applies, recording if job.keep else None)


#: The uncapped runs of the infeasible scenario a process has made, by (seed, plant, duration).
_UNCAPPED: dict[tuple[int, Plant, float | None], Recording] = {}


def _uncapped(job: Job) -> Recording:
    key = (job.seed, job.plant, job.duration_s)
    if key not in _UNCAPPED:
        _UNCAPPED[key] = run(scenario_of(replace(job, config=None, baseline=NO_CAPPING, threshold=None)), NoCapping())
    return _UNCAPPED[key]


def _measure(series: PolicySeries, scenario: Scenario, uncapped: PolicySeries | None) -> PolicyOutcome:
    m = policy_metrics(series)
    worst = m.worst_episode
    infeasible = None
    if uncapped is not None:
        profile = scenario.profile
        infeasible = infeasible_metrics(series, uncapped, drop_s=INFEASIBLE_DROP_S, restore_s=INFEASIBLE_RESTORE_S,
                                        floor_mhz=profile.min_sm_mhz, step_mhz=profile.step_mhz)
    return PolicyOutcome(
        worst_span_s=m.worst_span_s, episodes=len(m.episodes), energy_above_cap_j=m.energy_above_cap_j,
        energy_share=m.energy_above_cap_share, time_above_share=m.time_above_cap_share, work=m.work,
        worst_after_shown_s=m.worst_time_to_under_s, worst_start_s=None if worst is None else worst.start_s,
        worst_shown_s=None if worst is None else worst.visible_s, infeasible=infeasible)
