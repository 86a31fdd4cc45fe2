"""One run on simulated time: the data path's delays, the event schedule, what the exporter and Prometheus
hold, what a run records, and the harness that steps a scenario with a controller, without sleeping.

The delays between a GPU's power and the clock the controllers set in answer are parameters (`DataPath`):

    GPU power --1 s average--> DCGM exporter (collect every exporter_interval_s, at exporter_phase_s)
      --scrape every scrape_interval_s, at scrape_phase_s--> Prometheus
      --monitor cycle every monitor_interval_s (the control period), at monitor_phase_s--> policy status
      --monitor_latency_s (query, status write, watch event)--> recommender runs the algorithm
      --recommend_latency_s (NodeFrequencies write, watch event)--> tuner
      --apply_latency_s (NVML calls)--> locked clock requested --gpu_lag_s--> clock changed

Phases are offsets within each interval, so that the stages are not artificially aligned. The policy status
carries the sample time as lastUpdated, RFC 3339 with milliseconds, as the monitor writes it. Simulated time 0
is UNIX time `epoch_s`.

The physics advances in fixed steps; an action due inside a step runs at the end of that step but is told its
own nominal time, so that timestamps (scrape times, observation times) stay exact. Actions due at the same
moment run by `order` (collect before scrape before monitor ...) and then in the order they were scheduled.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from climatik.sim.cluster import SimulatedTimeDriver
from climatik.sim.loop.scenario import PlacedGpu, Scenario, World


@dataclass(frozen=True)
class DataPath:
    """Measurement and actuation delays of the production data path (seconds)."""

    exporter_interval_s: float = 1.0
    exporter_phase_s: float = 0.0
    scrape_interval_s: float = 1.0
    scrape_phase_s: float = 0.3
    monitor_interval_s: float = 1.0
    monitor_phase_s: float = 0.6
    monitor_latency_s: float = 0.05
    recommend_latency_s: float = 0.05
    apply_latency_s: float = 0.2
    gpu_lag_s: float = 0.03
    epoch_s: float = 1_700_000_000.0

    def __post_init__(self) -> None:
        for name in ("exporter_interval_s", "scrape_interval_s", "monitor_interval_s"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be positive")
        for name in ("exporter_phase_s", "scrape_phase_s", "monitor_phase_s", "monitor_latency_s",
                     "recommend_latency_s", "apply_latency_s", "gpu_lag_s"):
            if getattr(self, name) < 0.0:
                raise ValueError(f"{name} must be >= 0")

    @classmethod
    def telemetry(cls, *, collect_s: float, scrape_s: float, period_s: float) -> DataPath:
        """A path with the exporter collecting every `collect_s`, Prometheus scraping every `scrape_s` and the
        monitor running every `period_s`; the phases keep their shares of each interval (scrape 30 % into its
        interval, the monitor 60 % into its), so that the stages are not aligned."""
        return cls(exporter_interval_s=collect_s, scrape_interval_s=scrape_s, scrape_phase_s=0.3 * scrape_s,
                   monitor_interval_s=period_s, monitor_phase_s=0.6 * period_s)

    def with_period(self, monitor_interval_s: float) -> DataPath:
        """The same path with another control period (the monitor's phase kept within it)."""
        return replace(self, monitor_interval_s=monitor_interval_s,
                       monitor_phase_s=min(self.monitor_phase_s, monitor_interval_s))

    def unix(self, sim_s: float) -> float:
        """UNIX time of simulated time `sim_s`."""
        return self.epoch_s + sim_s

    def describe(self) -> str:
        """One line naming every delay, for benchmark output."""
        return (f"exporter collect {self.exporter_interval_s:g} s (phase {self.exporter_phase_s:g} s), "
                f"scrape {self.scrape_interval_s:g} s (phase {self.scrape_phase_s:g} s), "
                f"monitor period {self.monitor_interval_s:g} s (phase {self.monitor_phase_s:g} s), "
                f"monitor->recommender {self.monitor_latency_s:g} s, "
                f"recommender->tuner {self.recommend_latency_s:g} s, tuner apply {self.apply_latency_s:g} s, "
                f"GPU clock lag {self.gpu_lag_s:g} s; power is the 1 s average as the board measures it")


#: How close to a step's end an action must be due to run in that step (float noise in summed step sizes).
_EPSILON_S = 1e-6

Action = Callable[[float], None]


@dataclass(order=True)
class _Entry:
    when_s: float
    order: int
    seq: int
    action: Action = field(compare=False)


class Schedule:
    """A time-ordered queue of actions on simulated seconds."""

    def __init__(self) -> None:
        self._queue: list[_Entry] = []
        self._seq = itertools.count()

    def at(self, when_s: float, action: Action, *, order: int = 0) -> None:
        """Run `action(when_s)` once the simulation reaches `when_s`."""
        if not math.isfinite(when_s):
            raise ValueError(f"event time must be finite, got {when_s}")
        heapq.heappush(self._queue, _Entry(when_s, order, next(self._seq), action))

    def every(self, interval_s: float, action: Action, *, phase_s: float = 0.0, order: int = 0) -> None:
        """Run `action(t)` at `phase_s`, `phase_s + interval_s`, ... for as long as the simulation runs."""
        if interval_s <= 0.0 or phase_s < 0.0:
            raise ValueError(f"need a positive interval and a phase >= 0, got {interval_s} and {phase_s}")
        counter = itertools.count()

        def tick(now_s: float) -> None:
            action(now_s)
            self.at(phase_s + next(counter) * interval_s, tick, order=order)

        # Times are phase + k * interval, never a running sum, so long runs do not drift.
        next(counter)
        self.at(phase_s, tick, order=order)

    def run_due(self, now_s: float) -> int:
        """Run every action due at or before `now_s`, in time order (new ones included); returns how many ran."""
        ran = 0
        while self._queue and self._queue[0].when_s <= now_s + _EPSILON_S:
            entry = heapq.heappop(self._queue)
            entry.action(entry.when_s)
            ran += 1
        return ran


#: Same-moment ordering of actions: measurement first, then the controllers that read it, then actuation.
ORDER_COLLECT = 0
ORDER_SCRAPE = 1
ORDER_MONITOR = 2
ORDER_RECOMMEND = 3
ORDER_TUNE = 4


@dataclass(frozen=True)
class Sample:
    """One GPU's values as Prometheus holds them: the exporter's last collect, stamped with the scrape time."""

    power_w: float
    sm_clock_mhz: int
    collected_s: float
    scraped_s: float


class Telemetry:
    """Exporter and Prometheus for every GPU of the world.

    At each collect the exporter publishes every GPU's 1 s average power and its current SM clock; at each
    scrape Prometheus stores what the exporter publishes, stamped with the scrape time. An instant query sees
    the latest scraped sample.
    """

    def __init__(self, world: World, datapath: DataPath, schedule: Schedule) -> None:
        self._world = world
        self._published: dict[str, tuple[float, int, float]] = {}
        self._stored: dict[str, Sample] = {}
        schedule.every(datapath.exporter_interval_s, self._collect, phase_s=datapath.exporter_phase_s,
                       order=ORDER_COLLECT)
        schedule.every(datapath.scrape_interval_s, self._scrape, phase_s=datapath.scrape_phase_s,
                       order=ORDER_SCRAPE)

    def latest(self, uuid: str) -> Sample | None:
        """What an instant query returns for the GPU now (None before its first scrape)."""
        return self._stored.get(uuid)

    def samples(self) -> dict[str, Sample]:
        """The latest sample of every GPU scraped so far."""
        return dict(self._stored)

    def policy_power(self, policy: str) -> float | None:
        """The policy's power as Prometheus shows it: the sum of its GPUs' latest samples (None: some missing)."""
        total = 0.0
        for placed in self._world.gpus_of(policy):
            sample = self._stored.get(placed.uuid)
            if sample is None:
                return None
            total += sample.power_w
        return total

    def _collect(self, now_s: float) -> None:
        for placed in self._world.all_gpus():
            self._published[placed.uuid] = (placed.gpu.average_power_w, placed.gpu.sm_clock_mhz, now_s)

    def _scrape(self, now_s: float) -> None:
        for uuid, (power, clock, collected) in self._published.items():
            self._stored[uuid] = Sample(power, clock, collected, now_s)


@dataclass
class PolicySeries:
    """Step-by-step series of one policy. Step i covers [end_s[i] - dt_s[i], end_s[i]].

    `power` is the true mean power of the step (energy drawn over the step divided by its length, so energy
    is exact whatever happens within the step), `cap` the cap in force during the step, `prom` the policy's
    power as Prometheus shows it at the step's end (NaN before the first scrape), `clock` the mean SM clock
    of its GPUs at the step's end, `work` the useful work done during the step: a GPU in a lockstep group
    counts only at the pace of the group's slowest member. `target` is the mean clock the GPUs are told to run
    (their locked bounds once the lag has passed, the maximum when unlocked) and `limit` the sum of their board
    power limits, both at the step's end: what the controllers command, as opposed to what the GPUs do.
    """

    end_s: list[float] = field(default_factory=list)
    dt_s: list[float] = field(default_factory=list)
    power: list[float] = field(default_factory=list)
    cap: list[float] = field(default_factory=list)
    prom: list[float] = field(default_factory=list)
    clock: list[float] = field(default_factory=list)
    work: list[float] = field(default_factory=list)
    target: list[float] = field(default_factory=list)
    limit: list[float] = field(default_factory=list)

    @property
    def total_work(self) -> float:
        return sum(self.work)


@dataclass
class Recording:
    """Every policy's series for one run of one controller on one scenario."""

    scenario: str
    controller: str
    policies: dict[str, PolicySeries]


class Recorder:
    """Reads the world after every step."""

    def __init__(self, world: World, telemetry: Telemetry, *, scenario: str, controller: str) -> None:
        self._world = world
        self._telemetry = telemetry
        self._last_s = min((node.now_s for node in world.nodes), default=0.0)
        self._energy = {p.uuid: p.gpu.energy_j for p in world.all_gpus()}
        self._work = {p.uuid: p.gpu.work_done for p in world.all_gpus()}
        self.recording = Recording(scenario, controller, {p.name: PolicySeries() for p in world.policies})

    def record(self, now_s: float) -> None:
        """Account the step that ended at `now_s`."""
        dt = now_s - self._last_s
        start = self._last_s
        self._last_s = now_s
        if dt <= 0.0:
            return
        for policy in self._world.policies:
            series = self.recording.policies[policy.name]
            placed = self._world.gpus_of(policy.name)
            energy = sum(p.gpu.energy_j - self._energy[p.uuid] for p in placed)
            work = useful_work(placed, {p.uuid: p.gpu.work_done - self._work[p.uuid] for p in placed}, dt)
            prom = self._telemetry.policy_power(policy.name)
            series.end_s.append(now_s)
            series.dt_s.append(dt)
            series.power.append(energy / dt)
            series.cap.append(float(policy.cap_at(start)))
            series.prom.append(float("nan") if prom is None else prom)
            series.clock.append(sum(p.gpu.sm_clock_mhz for p in placed) / len(placed))
            series.work.append(work)
            series.target.append(sum(p.gpu.target_mhz for p in placed) / len(placed))
            series.limit.append(sum(p.gpu.power_limit_w for p in placed))
        for p in self._world.all_gpus():
            self._energy[p.uuid] = p.gpu.energy_j
            self._work[p.uuid] = p.gpu.work_done


def useful_work(placed: list[PlacedGpu], done: dict[str, float], dt_s: float) -> float:
    """The work `placed` got done in a step of `dt_s`, given what each GPU did (`done`, by UUID).

    A GPU outside any group counts in full. A lockstep group is as fast as its slowest busy member: each
    member's busy time counts at that member's rate.
    """
    total = 0.0
    groups: dict[str, list[PlacedGpu]] = {}
    for gpu in placed:
        if gpu.group:
            groups.setdefault(gpu.group, []).append(gpu)
        else:
            total += done[gpu.uuid]
    for members in groups.values():
        busy = {gpu.uuid: gpu.gpu.load.utilisation * dt_s for gpu in members}
        rates = [done[uuid] / seconds for uuid, seconds in busy.items() if seconds > 0.0]
        if rates:
            total += min(rates) * sum(busy.values())
    return total


#: The default step: fine enough for 0.05 s latencies, the GPU clock lag is resolved inside SimGpu.
DEFAULT_DT_S = 0.05


@dataclass(frozen=True)
class RunContext:
    """What a controller may use: the world, the event schedule, Prometheus' view and the delays."""

    world: World
    schedule: Schedule
    telemetry: Telemetry
    datapath: DataPath


class Controller(Protocol):
    """Something that sets clocks or power limits during a run.

    `instant` controllers (the oracle, static settings) act without the GPU clock lag: the world is built
    with a lag of 0 for them. `before_step(now_s)` is called before each step, after the events due by then.
    """

    label: str
    instant: bool

    def start(self, ctx: RunContext) -> None:
        """Prepare before the first step: set static settings, register events on `ctx.schedule`."""
        ...

    def before_step(self, now_s: float) -> None:
        """Act just before the step that starts at simulated time `now_s`."""
        ...


def run(scenario: Scenario, controller: Controller, *, datapath: DataPath | None = None,
        dt_s: float = DEFAULT_DT_S) -> Recording:
    """Run `controller` on `scenario` for the scenario's duration; deterministic for a given scenario seed."""
    datapath = datapath or DataPath()
    world = World(scenario, dt_s=dt_s, gpu_lag_s=0.0 if controller.instant else datapath.gpu_lag_s)
    schedule = Schedule()
    telemetry = Telemetry(world, datapath, schedule)
    recorder = Recorder(world, telemetry, scenario=scenario.name, controller=controller.label)
    controller.start(RunContext(world, schedule, telemetry, datapath))
    schedule.run_due(0.0)
    controller.before_step(0.0)

    def on_step(now_s: float) -> None:
        schedule.run_due(now_s)
        recorder.record(now_s)
        controller.before_step(now_s)

    SimulatedTimeDriver(world.nodes).run(scenario.duration_s, dt_s=dt_s, on_step=on_step)
    return recorder.recording
