"""One run: a scenario, a controller and the data path, stepped on simulated time without sleeping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from climatik.sim.loop.datapath import DataPath
from climatik.sim.loop.recording import Recorder, Recording
from climatik.sim.loop.scenario import Scenario
from climatik.sim.loop.schedule import Schedule
from climatik.sim.loop.telemetry import Telemetry
from climatik.sim.loop.world import World
from climatik.sim.runner import SimulatedTimeDriver

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
