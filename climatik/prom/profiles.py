"""Metric profiles: which series carry GPU power, SM clock and CPU power, and under which label names.

A profile is plain configuration. GPU power always comes from dcgm-exporter's per-GPU gauges, because only they
name the GPU (its UUID) that a tuner can cap; the `kepler` profile adds each pod's CPU power from Kepler. Kepler's
own per-pod GPU power names no GPU, so Climatik cannot cap from it; when only Kepler is there, the sampler says
so (climatik.prom.sampler).

Every label name can be configured, because exporters and scrape set-ups disagree:

* The owning pod is found through an ordered list of (pod label, namespace label) pairs; the first pair whose two
  labels are both non-empty wins. The default list first tries `exported_pod` / `exported_namespace` (what a
  workload's labels become when Prometheus scrapes without `honor_labels`, because the exporter pod's own target
  labels take `pod` and `namespace`), then `pod` / `namespace`, then `pod_name` / `pod_namespace` (dcgm-exporter's
  `--use-old-namespace`). Where Prometheus scrapes without `honor_labels`, an unallocated GPU carries the
  exporter's own pod in `pod`; list only the exported pair there so that such a GPU is not attributed to it.
* The GPU's UUID is the first of `uuid_labels` present (`UUID`, or `uuid` under `--use-old-namespace`), the node
  the first of `hostname_labels` (`Hostname`, renamed `hostname` in newer dcgm-exporter releases; the monitor
  takes a pod's node from the pod itself and uses this only for unallocated GPUs).
* A MIG instance's series carries the parent GPU's UUID and `GPU_I_ID` (`gpu_instance_label`).
* `*_matchers` are extra PromQL label matchers, e.g. `job="dcgm-exporter"`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
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
        name = labels.get(self.pod)
        if not name:
            return None
        namespace = labels.get(self.namespace)
        return PodKey(namespace, name) if namespace else None

    @classmethod
    def parse(cls, text: str) -> tuple[PodLabels, ...]:
        """Pairs written as `pod:namespace,pod2:namespace2` (a command-line option or a ConfigMap key)."""
        pairs = []
        for item in (part.strip() for part in text.split(",")):
            pod, sep, namespace = item.partition(":")
            if not sep or not pod.strip() or not namespace.strip():
                raise ValueError(f"{item!r} is not a pod:namespace label pair")
            pairs.append(cls(pod.strip(), namespace.strip()))
        return tuple(pairs)


DCGM_POD_LABELS = (PodLabels("exported_pod", "exported_namespace"), PodLabels("pod", "namespace"),
                   PodLabels("pod_name", "pod_namespace"))
KEPLER_POD_LABELS = (PodLabels("pod_name", "pod_namespace"),)
#: Kepler's CPU package zones (its core and uncore zones are part of the package: summing them would count power
#: twice), without the series Kepler keeps for terminated pods (the last power of a pod that restarted).
KEPLER_CPU_MATCHERS = 'zone=~"package.*",state!="terminated"'


@dataclass(frozen=True)
class MetricProfile:
    """Metric and label names to read GPU (and optionally CPU) power from.

    A GPU shared by several pods appears once per pod (time-slicing) and is counted once per UUID (and MIG
    instance). Empty metric names switch a reading off.
    """

    name: str
    power_metric: str
    power_matchers: str = ""
    sm_clock_metric: str = ""
    sm_clock_matchers: str = ""
    uuid_labels: tuple[str, ...] = ("UUID", "uuid")
    index_label: str = "gpu"
    model_label: str = "modelName"
    hostname_labels: tuple[str, ...] = ("Hostname", "hostname")
    gpu_instance_label: str = "GPU_I_ID"
    gpu_instance_profile_label: str = "GPU_I_PROFILE"
    instance_label: str = "instance"
    pod_labels: tuple[PodLabels, ...] = DCGM_POD_LABELS
    cpu_power_metric: str = ""
    cpu_power_matchers: str = ""
    cpu_pod_labels: tuple[PodLabels, ...] = KEPLER_POD_LABELS

    def __post_init__(self) -> None:
        _check_metric("power_metric", self.power_metric, required=True)
        _check_metric("sm_clock_metric", self.sm_clock_metric, required=False)
        _check_metric("cpu_power_metric", self.cpu_power_metric, required=False)
        for field in ("uuid_labels", "hostname_labels"):
            names: tuple[str, ...] = getattr(self, field)
            if not names:
                raise ValueError(f"{field} must name at least one label")
            for name in names:
                _check_label(field, name, required=True)
        for field in ("index_label", "model_label", "gpu_instance_label", "gpu_instance_profile_label",
                      "instance_label"):
            _check_label(field, getattr(self, field), required=False)
        for field in ("pod_labels", "cpu_pod_labels"):
            pairs: tuple[PodLabels, ...] = getattr(self, field)
            if not pairs:
                raise ValueError(f"{field} must list at least one (pod, namespace) label pair")
            for pair in pairs:
                _check_label(field, pair.pod, required=True)
                _check_label(field, pair.namespace, required=True)

    def uuid_of(self, labels: Mapping[str, str]) -> str:
        """The GPU's UUID (the parent GPU's, for a MIG instance); "" when no UUID label is set."""
        return _first(self.uuid_labels, labels)

    def hostname_of(self, labels: Mapping[str, str]) -> str:
        return _first(self.hostname_labels, labels)

    def pod_of(self, labels: Mapping[str, str]) -> PodKey | None:
        """The pod a GPU power or SM clock series belongs to; None for a GPU no pod is allocated."""
        return _first_pod(self.pod_labels, labels)

    def cpu_pod_of(self, labels: Mapping[str, str]) -> PodKey | None:
        """The pod a CPU power series belongs to."""
        return _first_pod(self.cpu_pod_labels, labels)

    def with_cpu_power(self, metric: str = "kepler_pod_cpu_watts", *, matchers: str = KEPLER_CPU_MATCHERS,
                       pod_labels: tuple[PodLabels, ...] = KEPLER_POD_LABELS) -> MetricProfile:
        """This profile, also reading per-pod CPU power (Kepler's by default)."""
        return dataclasses.replace(self, cpu_power_metric=metric, cpu_power_matchers=matchers,
                                   cpu_pod_labels=pod_labels)


def dcgm_profile(**overrides: Any) -> MetricProfile:
    """dcgm-exporter's `DCGM_FI_DEV_POWER_USAGE` (W) and `DCGM_FI_DEV_SM_CLOCK` (MHz), counted once per GPU."""
    fields: dict[str, Any] = {
        "name": "dcgm",
        "power_metric": "DCGM_FI_DEV_POWER_USAGE",
        "sm_clock_metric": "DCGM_FI_DEV_SM_CLOCK",
    }
    return MetricProfile(**(fields | overrides))


def kepler_profile(**overrides: Any) -> MetricProfile:
    """GPU power from dcgm-exporter, plus each pod's CPU power from Kepler's `kepler_pod_cpu_watts`."""
    return dcgm_profile(**({"name": "kepler"} | overrides)).with_cpu_power()


PROFILE_NAMES = ("dcgm", "kepler")


def profile_named(name: str, **overrides: Any) -> MetricProfile:
    """The built-in profile called `name` (one of `PROFILE_NAMES`), with some fields overridden."""
    if name == "dcgm":
        return dcgm_profile(**overrides)
    if name == "kepler":
        return kepler_profile(**overrides)
    raise ValueError(f"unknown metric profile {name!r}; known: {', '.join(PROFILE_NAMES)}")


def label_list(text: str) -> tuple[str, ...]:
    """Label names written as `UUID,uuid` (a command-line option or a ConfigMap key)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _first(names: Sequence[str], labels: Mapping[str, str]) -> str:
    for name in names:
        value = labels.get(name)
        if value:
            return value
    return ""


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
