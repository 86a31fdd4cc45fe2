"""A policy's power from one cycle's snapshot: distinct GPUs of its pods, per node and per GPU, bounded in size."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from climatik.api import GpuObservation, NodeObservation
from climatik.monitor.pods import SelectedPod
from climatik.prom.snapshot import GpuReading, GpuSnapshot, PowerTotal

MAX_NODES = 512
MAX_GPUS_PER_NODE = 64
MAX_PODS_PER_GPU = 16
MAX_PODS_WITHOUT_METRICS = 64


@dataclass(frozen=True)
class Measurement:
    """What the monitor learned about one policy in one cycle.

    `power` is the sum over the distinct GPUs (plus CPU power where configured). `complete` is False when some
    GPU or pod the policy uses had no valid reading, so that `power` understates the truth.
    """

    power: float
    complete: bool
    gpu_count: int
    nodes: list[NodeObservation]
    pods_without_metrics: list[str]
    missing_gpus: list[str]
    truncated: bool
    sample_time: float


def measure(pods: Sequence[SelectedPod], snapshot: GpuSnapshot) -> Measurement:
    """Sum the power of the GPUs `pods` use; GPUs shared by several pods (time-slicing) count once."""
    keys = [pod.key for pod in pods]
    total: PowerTotal = snapshot.total_for(keys)
    without = sorted(str(pod.key) for pod in pods if not snapshot.pod_gpus.get(pod.key))
    node_of_pod = {str(pod.key): pod.node for pod in pods}
    selected = {str(key) for key in keys}
    by_node: dict[str, list[GpuReading]] = {}
    for key in sorted(total.gpus):
        reading = snapshot.gpus[key]
        pod_nodes = sorted(node_of_pod[str(p)] for p in reading.pods if str(p) in selected)
        by_node.setdefault(pod_nodes[0] if pod_nodes else reading.hostname, []).append(reading)
    nodes, truncated = _observations(by_node, selected)
    times = [snapshot.gpus[key].timestamp for key in total.gpus]
    return Measurement(
        power=round(total.watts, 3),
        complete=total.complete and not without,
        gpu_count=len(total.gpus | total.missing_gpus),
        nodes=nodes,
        pods_without_metrics=without[:MAX_PODS_WITHOUT_METRICS],
        missing_gpus=sorted(total.missing_gpus),
        truncated=truncated or len(without) > MAX_PODS_WITHOUT_METRICS,
        sample_time=min(times) if times else snapshot.query_time,
    )


def _observations(by_node: dict[str, list[GpuReading]], selected: set[str]) -> tuple[list[NodeObservation], bool]:
    truncated = len(by_node) > MAX_NODES
    nodes = []
    for name in sorted(by_node)[:MAX_NODES]:
        readings = by_node[name]
        truncated |= len(readings) > MAX_GPUS_PER_NODE
        gpus = [_gpu(reading, selected) for reading in readings[:MAX_GPUS_PER_NODE]]
        truncated |= any(len(reading.pods) > MAX_PODS_PER_GPU for reading in readings)
        nodes.append(NodeObservation(name=name, power=round(sum(r.power_watts for r in readings), 3), gpus=gpus))
    return nodes, truncated


def _gpu(reading: GpuReading, selected: set[str]) -> GpuObservation:
    pods = sorted(str(p) for p in reading.pods if str(p) in selected)[:MAX_PODS_PER_GPU]
    clock = reading.sm_clock_mhz
    return GpuObservation(
        uuid=reading.uuid or reading.key,
        index=int(reading.index) if reading.index.isdigit() else None,
        model=reading.model or None,
        power=round(reading.power_watts, 3),
        sm_clock=round(clock) if clock is not None and math.isfinite(clock) else None,
        pods=pods,
    )
