"""What a run leaves behind: per policy and per step, the true power, the cap, what Prometheus showed, clocks
and work done, from which the metrics and the plots are computed."""

from __future__ import annotations

from dataclasses import dataclass, field

from climatik.sim.loop.telemetry import Telemetry
from climatik.sim.loop.world import PlacedGpu, World


@dataclass
class PolicySeries:
    """Step-by-step series of one policy. Step i covers [end_s[i] - dt_s[i], end_s[i]].

    `power` is the true mean power of the step (energy drawn over the step divided by its length, so energy
    is exact whatever happens within the step), `cap` the cap in force during the step, `prom` the policy's
    power as Prometheus shows it at the step's end (NaN before the first scrape), `clock` the mean SM clock
    of its GPUs at the step's end, `work` the useful work done during the step: a GPU in a lockstep group
    counts only at the pace of the group's slowest member.
    """

    end_s: list[float] = field(default_factory=list)
    dt_s: list[float] = field(default_factory=list)
    power: list[float] = field(default_factory=list)
    cap: list[float] = field(default_factory=list)
    prom: list[float] = field(default_factory=list)
    clock: list[float] = field(default_factory=list)
    work: list[float] = field(default_factory=list)

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
