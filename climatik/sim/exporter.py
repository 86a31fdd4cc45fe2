"""Renders node readings in dcgm-exporter's Prometheus text format, with its metric and label names.

Label shapes: DIRECT is what Prometheus stores with `honor_labels: true` (the workload's `pod`,
`namespace`, `container`); EXPORTED is what it stores without it, where the scrape target's own labels
win and the workload's move to `exported_*`. GPUs not allocated to a pod carry empty workload labels.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from climatik.sim.node import GpuState, PodRef, device_name


class LabelShape(enum.Enum):
    """Where the workload's pod labels appear."""

    DIRECT = "direct"
    EXPORTED = "exported"


@dataclass(frozen=True)
class ExporterOptions:
    """How a node's exporter renders: label shape, driver version, optional non-default fields."""

    label_shape: LabelShape = LabelShape.DIRECT
    driver_version: str = "550.90.07"
    include_instant_power: bool = False  # DCGM_FI_DEV_POWER_USAGE_INSTANT (field 157, 50 ms), custom counters only
    include_power_limit: bool = False  # DCGM_FI_DEV_POWER_MGMT_LIMIT and DCGM_FI_DEV_ENFORCED_POWER_LIMIT
    exporter_namespace: str = "gpu-operator"
    exporter_container: str = "nvidia-dcgm-exporter"


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str
    help: str
    value: Callable[[GpuState], str]


def _watts(value: float) -> str:
    return f"{value:.3f}"


_DEFAULT_FIELDS = (
    _Field("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", lambda r: str(r.sm_clock_mhz)),
    _Field("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", lambda r: str(r.mem_clock_mhz)),
    _Field("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", lambda r: str(round(r.utilisation * 100))),
    _Field("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", lambda r: _watts(r.power_w)),
    _Field(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "counter",
        "Total energy consumption since boot (in mJ).",
        lambda r: str(r.energy_mj),
    ),
)
_INSTANT_POWER = _Field(
    "DCGM_FI_DEV_POWER_USAGE_INSTANT", "gauge", "Current power draw (in W).", lambda r: _watts(r.instant_power_w)
)
_POWER_LIMIT = _Field(
    "DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", "Power management limit (in W).", lambda r: _watts(r.power_limit_w)
)
# The simulated board has no other limiter (no out-of-band SMBPBI limit), so the enforced limit is the set one.
_ENFORCED_LIMIT = _Field(
    "DCGM_FI_DEV_ENFORCED_POWER_LIMIT", "gauge", "Effective power limit that the driver enforces (in W).",
    lambda r: _watts(r.power_limit_w),
)


def render_metrics(hostname: str, readings: Sequence[GpuState], options: ExporterOptions) -> str:
    """The body of GET /metrics for one node."""
    fields = list(_DEFAULT_FIELDS)
    if options.include_instant_power:
        fields.append(_INSTANT_POWER)
    if options.include_power_limit:
        fields += [_POWER_LIMIT, _ENFORCED_LIMIT]
    lines: list[str] = []
    for field in fields:
        lines.append(f"# HELP {field.name} {field.help}")
        lines.append(f"# TYPE {field.name} {field.kind}")
        for reading in readings:
            value = field.value(reading)
            for labels in series_labels(hostname, reading, options):
                lines.append(f"{field.name}{{{_format_labels(labels)}}} {value}")
    return "\n".join(lines) + "\n"


def series_labels(hostname: str, reading: GpuState, options: ExporterOptions) -> list[dict[str, str]]:
    """The label sets of one GPU's series: one per pod it is allocated to, or one with empty pod labels."""
    base = {
        "gpu": str(reading.index),
        "UUID": reading.uuid,
        "device": device_name(reading.index),
        "modelName": reading.profile.model_name,
        "Hostname": hostname,
        "DCGM_FI_DRIVER_VERSION": options.driver_version,
    }
    pods = reading.pods or (PodRef(namespace="", pod="", container=""),)
    return [{**base, **_workload_labels(hostname, pod, options)} for pod in pods]


def _workload_labels(hostname: str, pod: PodRef, options: ExporterOptions) -> dict[str, str]:
    workload = {"container": pod.container, "namespace": pod.namespace, "pod": pod.pod}
    if options.label_shape is LabelShape.DIRECT:
        return workload
    target = {
        "container": options.exporter_container,
        "namespace": options.exporter_namespace,
        "pod": f"nvidia-dcgm-exporter-{hostname}",
    }
    return {**{f"exported_{name}": value for name, value in workload.items()}, **target}


def _format_labels(labels: dict[str, str]) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
