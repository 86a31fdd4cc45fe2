"""What one monitoring cycle learned from Prometheus: per-GPU readings, which pods use which GPUs, per-pod
CPU power, and every series that had to be set aside, with why.

A snapshot is built once per cycle and shared by all policies; `total_for` sums it over one policy's pods.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from climatik.prom.profiles import PodKey


class ProblemKind(enum.StrEnum):
    """Why a series was set aside."""

    NAN = "NaN"
    INFINITE = "Infinite"
    NEGATIVE = "Negative"
    STALE = "Stale"
    MISSING_LABEL = "MissingLabel"
    EMPTY = "Empty"


@dataclass(frozen=True)
class SampleProblem:
    """A series that was not used, with the labels and value that gave it away.

    `key` is the GPU key (UUID) or pod the series was about, where known, so that a caller can tell which
    policies it concerns; `metric` is the metric queried. For `EMPTY` the whole query returned nothing.
    """

    kind: ProblemKind
    metric: str
    message: str
    labels: Mapping[str, str] = field(default_factory=dict)
    value: float | None = None
    timestamp: float | None = None
    key: str = ""
    pod: PodKey | None = None


@dataclass(frozen=True)
class GpuReading:
    """The latest valid power reading of one GPU (or, for per-pod profiles, of one pod's GPU share).

    `key` identifies what must be counted once: the GPU UUID for per-GPU metrics, `pod:<ns>/<name>` for
    per-pod ones (then `uuid`, `index` and `model` are empty). `timestamp` is the scrape time (unix s);
    `sm_clock_mhz` is None when no valid clock reading came with it. `pods` are the pods using the GPU.
    """

    key: str
    uuid: str
    index: str
    model: str
    hostname: str
    power_watts: float
    sm_clock_mhz: float | None
    timestamp: float
    pods: frozenset[PodKey]


@dataclass(frozen=True)
class PowerTotal:
    """The power of a set of pods: each GPU counted once however many of the pods share it.

    `missing_gpus` are GPUs the pods use that had no valid reading, `missing_cpu_pods` pods without a
    valid CPU reading where CPU power was asked for. A total with something missing understates the truth
    and must not be used to raise clocks.
    """

    gpu_watts: float
    cpu_watts: float
    gpus: frozenset[str]
    missing_gpus: frozenset[str]
    missing_cpu_pods: frozenset[PodKey]

    @property
    def watts(self) -> float:
        return self.gpu_watts + self.cpu_watts

    @property
    def complete(self) -> bool:
        return not self.missing_gpus and not self.missing_cpu_pods


@dataclass(frozen=True)
class GpuSnapshot:
    """All GPU (and optional CPU) power readings at `query_time` (unix s).

    `gpus` holds valid readings by key. `pod_gpus` maps each pod to the keys of every GPU seen attributed
    to it, valid reading or not, so that a GPU whose reading was set aside still shows up as missing rather
    than vanishing from a policy's total. `cpu_watts` is per pod; `cpu_queried` says whether CPU power was
    asked for at all. `durations` are per-query latencies in seconds.
    """

    query_time: float
    gpus: Mapping[str, GpuReading]
    pod_gpus: Mapping[PodKey, frozenset[str]]
    cpu_watts: Mapping[PodKey, float] = field(default_factory=dict)
    cpu_queried: bool = False
    problems: tuple[SampleProblem, ...] = ()
    durations: Mapping[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def gpus_of(self, pods: Iterable[PodKey]) -> frozenset[str]:
        """The keys of every GPU any of `pods` uses (each once)."""
        keys: set[str] = set()
        for pod in pods:
            keys |= self.pod_gpus.get(pod, frozenset())
        return frozenset(keys)

    def total_for(self, pods: Iterable[PodKey]) -> PowerTotal:
        """The power drawn by `pods`: distinct GPUs once each, plus their CPU power when it was queried."""
        pods = frozenset(pods)
        keys = self.gpus_of(pods)
        present = frozenset(k for k in keys if k in self.gpus)
        gpu_watts = sum(self.gpus[k].power_watts for k in sorted(present))
        cpu_watts = 0.0
        missing_cpu: frozenset[PodKey] = frozenset()
        if self.cpu_queried:
            cpu_watts = sum(self.cpu_watts[p] for p in sorted(pods) if p in self.cpu_watts)
            missing_cpu = frozenset(p for p in pods if p not in self.cpu_watts)
        return PowerTotal(gpu_watts, cpu_watts, present, keys - present, missing_cpu)

    def problems_for(self, pods: Iterable[PodKey]) -> tuple[SampleProblem, ...]:
        """The problems that concern `pods`: about one of their GPUs, or about one of them directly."""
        pods = frozenset(pods)
        keys = self.gpus_of(pods)
        return tuple(p for p in self.problems if (p.key and p.key in keys) or (p.pod is not None and p.pod in pods))
