"""The monitor's cycle on simulated time: from Prometheus' latest samples to each policy's status, with the
production measurement (`climatik.monitor.measure`) and capping decision (`climatik.monitor.decide`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from climatik.api import PolicyStatus, format_time
from climatik.monitor.decision import decide
from climatik.monitor.measure import measure
from climatik.monitor.pods import SelectedPod
from climatik.prom.profiles import PodKey
from climatik.prom.snapshot import GpuReading, GpuSnapshot
from climatik.sim.loop.datapath import DataPath
from climatik.sim.loop.telemetry import Telemetry
from climatik.sim.loop.world import World


class SimMonitor:
    """Measures every policy from one Prometheus snapshot per cycle and hands each new status to `on_status`.

    The status is built as the monitor writes it: power (None when some GPU had no reading), the hysteresis
    decision, per-node and per-GPU power and SM clock, and lastUpdated = the sample time, in RFC 3339 whole
    seconds.
    """

    def __init__(self, world: World, telemetry: Telemetry, datapath: DataPath,
                 on_status: Callable[[str, float, PolicyStatus], None]) -> None:
        self._world = world
        self._telemetry = telemetry
        self._datapath = datapath
        self._on_status = on_status
        self._required: dict[str, bool] = {}

    def cycle(self, now_s: float) -> None:
        """One monitor cycle at simulated time `now_s`."""
        snapshot = self._snapshot(now_s)
        for policy in self._world.policies:
            pods = [SelectedPod(PodKey(p.pod.namespace, p.pod.pod), p.node.name)
                    for p in self._world.gpus_of(policy.name) if p.pod is not None]
            measurement = measure(pods, snapshot)
            power = measurement.power if measurement.complete else None
            decision = decide(policy.spec_at(now_s), power, self._required.get(policy.name, False))
            self._required[policy.name] = decision.required
            status = PolicyStatus(
                capping_action_required=decision.required,
                last_updated=format_time(datetime.fromtimestamp(measurement.sample_time, UTC)),
                current_power=power,
                gpu_count=measurement.gpu_count,
                pods_without_metrics=measurement.pods_without_metrics,
                nodes=measurement.nodes,
                truncated=measurement.truncated,
            )
            self._on_status(policy.name, now_s, status)

    def _snapshot(self, now_s: float) -> GpuSnapshot:
        readings: dict[str, GpuReading] = {}
        pod_gpus: dict[PodKey, frozenset[str]] = {}
        for uuid, sample in self._telemetry.samples().items():
            placed = self._world.gpu(uuid)
            pods = frozenset() if placed.pod is None else frozenset({PodKey(placed.pod.namespace, placed.pod.pod)})
            readings[uuid] = GpuReading(
                key=uuid, uuid=uuid, index=str(placed.gpu.index), model=placed.gpu.profile.model_name,
                hostname=placed.node.name, power_watts=sample.power_w, sm_clock_mhz=float(sample.sm_clock_mhz),
                timestamp=self._datapath.unix(sample.scraped_s), pods=pods)
            for pod in pods:
                pod_gpus[pod] = pod_gpus.get(pod, frozenset()) | {uuid}
        return GpuSnapshot(query_time=self._datapath.unix(now_s), gpus=readings, pod_gpus=pod_gpus)
