"""The measurement half of the data path: DCGM exporter collects and Prometheus scrapes, on simulated time."""

from __future__ import annotations

from dataclasses import dataclass

from climatik.sim.loop.datapath import DataPath
from climatik.sim.loop.schedule import Schedule
from climatik.sim.loop.world import World

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
