"""Metric profiles: which series carry GPU power, SM clock and CPU power, and under which label names.

A profile is plain configuration. The DCGM profile reads dcgm-exporter's per-GPU gauges; the Kepler profile
reads Kepler's per-pod GPU power, which is already apportioned between pods. Either can add per-pod CPU
power from a further metric (usually Kepler's `kepler_pod_cpu_watts`).

The owning pod is found through an ordered list of (pod label, namespace label) pairs; the first pair whose
two labels are both non-empty wins. dcgm-exporter's default list first tries `exported_pod` /
`exported_namespace` (what a workload's labels become when Prometheus scrapes without `honor_labels`, because
the exporter pod's own target labels take `pod` and `namespace`), then `pod` / `namespace`. Where Prometheus
scrapes without `honor_labels`, an unallocated GPU carries the exporter's own pod in `pod`; list only the
exported pair there so that such a GPU is not attributed to the exporter.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class PodKey(NamedTuple):
    """A pod by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class PodLabels:
    """One way a series names its pod: the label holding the pod's name and the one holding its namespace."""

    pod: str
    namespace: str

    def pod_of(self, labels: Mapping[str, str]) -> PodKey | None:
        """The pod these labels name, or None when either label is missing or empty."""
        name = labels.get(self.pod, "")
        namespace = labels.get(self.namespace, "")
        return PodKey(namespace, name) if name and namespace else None


DCGM_POD_LABELS = (PodLabels("exported_pod", "exported_namespace"), PodLabels("pod", "namespace"))
KEPLER_POD_LABELS = (PodLabels("pod_name", "pod_namespace"),)


@dataclass(frozen=True)
class MetricProfile:
    """Metric and label names to read GPU (and optionally CPU) power from.

    `per_pod_power` says the power metric is already attributed to pods (Kepler): each pod's series are then
    summed as they are, instead of being counted once per GPU UUID (DCGM, where a GPU shared by several
    pods appears once per pod). Empty metric names switch a reading off. `*_matchers` are extra PromQL
    label matchers added to the selector, e.g. `job="dcgm-exporter"` or `zone=~"package.*"`.
    """

    name: str
    power_metric: str
    power_matchers: str = ""
    per_pod_power: bool = False
    sm_clock_metric: str = ""
    sm_clock_matchers: str = ""
    uuid_label: str = "UUID"
    index_label: str = "gpu"
    model_label: str = "modelName"
    hostname_label: str = "Hostname"
    instance_label: str = "instance"
    pod_labels: tuple[PodLabels, ...] = DCGM_POD_LABELS
    cpu_power_metric: str = ""
    cpu_power_matchers: str = ""
    cpu_pod_labels: tuple[PodLabels, ...] = KEPLER_POD_LABELS

    def __post_init__(self) -> None:
        _check_metric("power_metric", self.power_metric, required=True)
        _check_metric("sm_clock_metric", self.sm_clock_metric, required=False)
        _check_metric("cpu_power_metric", self.cpu_power_metric, required=False)
        for field in ("uuid_label", "index_label", "model_label", "hostname_label", "instance_label"):
            _check_label(field, getattr(self, field), required=field == "uuid_label" and not self.per_pod_power)
        for field in ("pod_labels", "cpu_pod_labels"):
            pairs: tuple[PodLabels, ...] = getattr(self, field)
            if not pairs:
                raise ValueError(f"{field} must list at least one (pod, namespace) label pair")
            for pair in pairs:
                _check_label(field, pair.pod, required=True)
                _check_label(field, pair.namespace, required=True)

    def pod_of(self, labels: Mapping[str, str]) -> PodKey | None:
        """The pod a GPU power or SM clock series belongs to; None for a GPU no pod is allocated."""
        return _first_pod(self.pod_labels, labels)

    def cpu_pod_of(self, labels: Mapping[str, str]) -> PodKey | None:
        """The pod a CPU power series belongs to."""
        return _first_pod(self.cpu_pod_labels, labels)

    def with_cpu_power(
        self,
        metric: str = "kepler_pod_cpu_watts",
        *,
        matchers: str = 'zone=~"package.*"',
        pod_labels: tuple[PodLabels, ...] = KEPLER_POD_LABELS,
    ) -> MetricProfile:
        """This profile, also reading per-pod CPU power. Kepler's default keeps only the package zones, since
        its core and uncore zones are part of the package and summing them would count power twice."""
        return dataclasses.replace(
            self, cpu_power_metric=metric, cpu_power_matchers=matchers, cpu_pod_labels=pod_labels
        )


def dcgm_profile(**overrides: Any) -> MetricProfile:
    """dcgm-exporter's `DCGM_FI_DEV_POWER_USAGE` (W) and `DCGM_FI_DEV_SM_CLOCK` (MHz), counted once per GPU."""
    fields: dict[str, Any] = {
        "name": "dcgm",
        "power_metric": "DCGM_FI_DEV_POWER_USAGE",
        "sm_clock_metric": "DCGM_FI_DEV_SM_CLOCK",
    }
    return MetricProfile(**(fields | overrides))


def kepler_profile(**overrides: Any) -> MetricProfile:
    """Kepler's `kepler_pod_gpu_watts`, already attributed per pod (`pod_name`, `pod_namespace`). Kepler
    reports no SM clock and no GPU identity for pods, so readings are per pod."""
    fields: dict[str, Any] = {
        "name": "kepler",
        "power_metric": "kepler_pod_gpu_watts",
        "per_pod_power": True,
        "uuid_label": "",
        "index_label": "",
        "model_label": "",
        "hostname_label": "node_name",
        "pod_labels": KEPLER_POD_LABELS,
    }
    return MetricProfile(**(fields | overrides))


PROFILE_NAMES = ("dcgm", "kepler")


def profile_named(name: str, **overrides: Any) -> MetricProfile:
    """The built-in profile called `name` (one of `PROFILE_NAMES`), with some fields overridden."""
    if name == "dcgm":
        return dcgm_profile(**overrides)
    if name == "kepler":
        return kepler_profile(**overrides)
    raise ValueError(f"unknown metric profile {name!r}; known: {', '.join(PROFILE_NAMES)}")


def _first_pod(pairs: tuple[PodLabels, ...], labels: Mapping[str, str]) -> PodKey | None:
    for pair in pairs:
        pod = pair.pod_of(labels)
        if pod is not None:
            return pod
    return None


def _check_metric(field: str, value: str, *, required: bool) -> None:
    if (value or required) and not _METRIC_NAME.fullmatch(value):
        raise ValueError(f"{field}: {value!r} is not a valid Prometheus metric name")


def _check_label(field: str, value: str, *, required: bool) -> None:
    if (value or required) and not _LABEL_NAME.fullmatch(value):
        raise ValueError(f"{field}: {value!r} is not a valid Prometheus label name")
