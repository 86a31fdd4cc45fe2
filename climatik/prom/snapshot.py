"""What one monitoring cycle learned from Prometheus: per-GPU readings, which pods use which GPUs, per-pod
CPU power, and every series that had to be set aside, with why.

A snapshot is built once per cycle and shared by all policies; `total_for` sums it over one policy's pods.

Turning raw series into a `GpuSnapshot`: validating samples, deduplicating GPUs, attributing them to pods.

Rules, in the order they apply:
* GPU series are grouped by GPU UUID (and MIG instance). The same GPU shows up once per pod under time-slicing
  and once per exporter while a DaemonSet rolls; the freshest series gives the reading (ties go to the larger
  finite value, the safe side for a power cap) and every series contributes its pod.
* A MIG instance's series carry the whole GPU's power (DCGM measures power per GPU, not per instance): each
  instance is charged its share of the GPU's compute slices among the instances seen on that GPU (from
  `GPU_I_PROFILE`, e.g. 3 for "3g.40gb"), so that tenants are not each charged the whole GPU; slices no
  instance holds are charged to the instances present, the safe side for a cap.
* Per-pod CPU series (Kepler) are grouped by pod, then by scrape target; the freshest target's series are summed.
* A value that is NaN, infinite, negative, or older than the maximum age is never summed: it becomes a
  `SampleProblem`, and the GPU stays attributed to its pods so that their totals show it as missing.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from climatik.prom.client import Sample
from climatik.prom.profiles import MetricProfile, PodKey
from climatik.prom.scope import EVERYTHING, Scope


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


class GpuReading(NamedTuple):
    """The latest valid power reading of one GPU, or of one MIG instance of it.

    `key` identifies what must be counted once: the GPU UUID, or `<UUID>/<GPU instance ID>` for a MIG instance
    (then `mig_instance` is the instance ID and `power_watts` the instance's share of the GPU's power).
    `timestamp` is the scrape time (unix s); `sm_clock_mhz` is None when no valid clock reading came with it.
    `pods` are the pods using the GPU. A named tuple: a cycle makes one per GPU read, and a tuple is built in
    half the time of a frozen dataclass.
    """

    key: str
    uuid: str
    gpu_index: str
    model: str
    hostname: str
    power_watts: float
    sm_clock_mhz: float | None
    timestamp: float
    pods: frozenset[PodKey]
    mig_instance: int | None = None


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
    asked for at all. `durations` are per-query latencies in seconds. `scope` is what was read: a pod outside it
    had no chance to show up.
    """

    query_time: float
    gpus: Mapping[str, GpuReading]
    pod_gpus: Mapping[PodKey, frozenset[str]]
    cpu_watts: Mapping[PodKey, float] = field(default_factory=dict)
    cpu_queried: bool = False
    problems: tuple[SampleProblem, ...] = ()
    durations: Mapping[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    scope: Scope = EVERYTHING
    #: Totals summed so far, by pod set: the sample checks each policy's power and the policy's reconcile then
    #: sums the same pods of the same snapshot, so the second asks for what the first summed.
    _totals: dict[frozenset[PodKey], PowerTotal] = field(default_factory=dict, init=False, repr=False,
                                                         compare=False)

    def gpus_of(self, pods: Iterable[PodKey]) -> frozenset[str]:
        """The keys of every GPU any of `pods` uses (each once)."""
        keys: set[str] = set()
        for pod in pods:
            keys |= self.pod_gpus.get(pod, frozenset())
        return frozenset(keys)

    def total_for(self, pods: Iterable[PodKey]) -> PowerTotal:
        """The power drawn by `pods`: distinct GPUs once each, plus their CPU power when it was queried. Summed once
        per snapshot and pod set (a race sums twice, to the same total)."""
        pods = frozenset(pods)
        found = self._totals.get(pods)
        if found is not None:
            return found
        keys = self.gpus_of(pods)
        present = frozenset(k for k in keys if k in self.gpus)
        gpu_watts = sum(self.gpus[k].power_watts for k in sorted(present))
        cpu_watts = 0.0
        missing_cpu: frozenset[PodKey] = frozenset()
        if self.cpu_queried:
            cpu_watts = sum(self.cpu_watts[p] for p in sorted(pods) if p in self.cpu_watts)
            missing_cpu = frozenset(p for p in pods if p not in self.cpu_watts)
        total = self._totals[pods] = PowerTotal(gpu_watts, cpu_watts, present, keys - present, missing_cpu)
        return total

    def problems_for(self, pods: Iterable[PodKey]) -> tuple[SampleProblem, ...]:
        """The problems that concern `pods`: about one of their GPUs, or about one of them directly."""
        pods = frozenset(pods)
        keys = self.gpus_of(pods)
        return tuple(p for p in self.problems if (p.key and p.key in keys) or (p.pod is not None and p.pod in pods))


@dataclass(frozen=True)
class Judge:
    """Decides whether a sample may be used: finite, not negative, and no older than `max_age_s` at
    `query_time` (unix s)."""

    query_time: float
    max_age_s: float

    def fault(self, sample: Sample) -> tuple[ProblemKind, str] | None:
        value = sample.value
        if 0.0 <= value < math.inf and self.query_time - sample.timestamp <= self.max_age_s:
            return None  # the common case, in one test (NaN fails it)
        if math.isnan(value):
            return ProblemKind.NAN, "value is NaN"
        if math.isinf(value):
            return ProblemKind.INFINITE, f"value is {value}"
        if value < 0:
            return ProblemKind.NEGATIVE, f"value {value} is negative"
        age = self.query_time - sample.timestamp
        if age > self.max_age_s:
            return ProblemKind.STALE, f"sample is {age:.1f}s old, older than {self.max_age_s:g}s"
        return None


@dataclass(frozen=True)
class Series:
    """The samples of one query, with the metric name they were asked for."""

    metric: str
    samples: Sequence[Sample]


def build_snapshot(
    profile: MetricProfile,
    judge: Judge,
    *,
    power: Series,
    sm_clock: Series | None = None,
    cpu_power: Series | None = None,
    durations: Mapping[str, float] | None = None,
    warnings: tuple[str, ...] = (),
    scope: Scope = EVERYTHING,
) -> GpuSnapshot:
    """The snapshot for one cycle from the answers of its power, SM clock and CPU power queries over `scope`."""
    problems: list[SampleProblem] = []
    clocks = _sm_clocks(profile, judge, sm_clock, problems) if sm_clock is not None else {}
    gpus, pod_gpus = _gpus(profile, judge, power, clocks, problems)
    cpu_watts: dict[PodKey, float] = {}
    if cpu_power is not None:
        _report_empty(cpu_power, problems)
        totals = _per_pod_sums(profile.cpu_pod_of, profile.instance_label, judge, cpu_power, problems)
        cpu_watts = {pod: sum(s.value for s in group) for pod, group in totals.items()}
    return GpuSnapshot(
        query_time=judge.query_time,
        gpus=gpus,
        pod_gpus=pod_gpus,
        cpu_watts=cpu_watts,
        cpu_queried=cpu_power is not None,
        problems=tuple(problems),
        durations=dict(durations or {}),
        warnings=warnings,
        scope=scope,
    )


def with_clocks(profile: MetricProfile, judge: Judge, snapshot: GpuSnapshot, sm_clock: Series, *,
                duration_s: float = 0.0, warnings: tuple[str, ...] = ()) -> GpuSnapshot:
    """`snapshot` with the SM clocks of a second read (at the snapshot's evaluation time) set on the readings that
    have none, judged as `build_snapshot` judges them."""
    problems: list[SampleProblem] = []
    clocks = _sm_clocks(profile, judge, sm_clock, problems)
    gpus = {key: reading._replace(sm_clock_mhz=clocks[reading.uuid])
            if reading.sm_clock_mhz is None and reading.uuid in clocks else reading
            for key, reading in snapshot.gpus.items()}
    durations = dict(snapshot.durations)
    durations["sm_clock"] = durations.get("sm_clock", 0.0) + duration_s
    return dataclasses.replace(snapshot, gpus=gpus, problems=snapshot.problems + tuple(problems),
                               durations=durations, warnings=snapshot.warnings + warnings)


def _gpus(
    profile: MetricProfile,
    judge: Judge,
    power: Series,
    clocks: Mapping[str, float],
    problems: list[SampleProblem],
) -> tuple[dict[str, GpuReading], dict[PodKey, frozenset[str]]]:
    grouped = _group_by_gpu(profile, power, problems)
    pod_gpus = grouped.unidentified
    pod_of, index_label, model_label = profile.pod_of, profile.index_label, profile.model_label
    gpus: dict[str, GpuReading] = {}
    # A cycle reads one series per GPU, thousands of them: the loop reads each label once and builds the reading
    # from positions, and the judge passes a sound sample on its first test.
    for key, series in grouped.by_key.items():
        if len(series) == 1:  # the common case, without time-slicing or a second exporter
            latest = series[0]
            pod = pod_of(latest.labels)
            pods = frozenset() if pod is None else frozenset((pod,))
        else:
            latest = _freshest(series)
            pods = frozenset(p for p in (pod_of(s.labels) for s in series) if p is not None)
        for pod in pods:
            pod_gpus[pod].add(key)
        if _rejected(judge, power.metric, latest, problems, key=key):
            continue
        labels = latest.labels
        uuid, mig_instance = grouped.ids[key]
        gpus[key] = GpuReading(key, uuid, labels.get(index_label, ""), labels.get(model_label, ""),
                               profile.hostname_of(labels), latest.value, clocks.get(uuid), latest.timestamp,
                               pods, mig_instance)
    _share_mig_power(profile, gpus, grouped.by_key)
    return gpus, {pod: frozenset(keys) for pod, keys in pod_gpus.items()}


def _share_mig_power(profile: MetricProfile, gpus: dict[str, GpuReading], by_key: Mapping[str, list[Sample]]) -> None:
    """Charge each MIG instance its share of the GPU's compute slices instead of the whole GPU's power."""
    slices: dict[str, dict[str, int]] = defaultdict(dict)
    for key, reading in gpus.items():
        if reading.mig_instance is not None:
            profile_name = _freshest(by_key[key]).labels.get(profile.gpu_instance_profile_label, "")
            slices[reading.uuid][key] = _compute_slices(profile_name)
    for instances in slices.values():
        total = sum(instances.values())
        for key, count in instances.items():
            gpus[key] = gpus[key]._replace(power_watts=gpus[key].power_watts * count / total)


def _compute_slices(profile_name: str) -> int:
    """The compute slices of a MIG profile ("3g.40gb" -> 3; "1c.3g.40gb", a compute instance, -> 1); 1 if
    unreadable, so that an unknown profile is still charged a share rather than nothing."""
    parts = profile_name.split(".")
    for part in parts:
        if part[:-1].isdigit() and part[-1:] in ("g", "c") and int(part[:-1]) > 0:
            return int(part[:-1])
    return 1


def _instance(profile: MetricProfile, labels: Mapping[str, str]) -> int | None:
    text = labels.get(profile.gpu_instance_label, "") if profile.gpu_instance_label else ""
    return int(text) if text.isdigit() else None


def _sm_clocks(
    profile: MetricProfile, judge: Judge, sm_clock: Series, problems: list[SampleProblem]
) -> dict[str, float]:
    _report_empty(sm_clock, problems)
    clocks: dict[str, float] = {}
    grouped = _group_by_gpu(profile, sm_clock, problems)
    for key, series in grouped.by_key.items():
        latest = series[0] if len(series) == 1 else _freshest(series)
        # A MIG instance runs at its GPU's clock: the clock is kept per GPU.
        if not _rejected(judge, sm_clock.metric, latest, problems, key=key):
            clocks[grouped.ids[key][0]] = latest.value
    return clocks


class _Grouped(NamedTuple):
    """Series by GPU key, the UUID and MIG instance each key stands for, and the placeholder keys of pods whose
    series name no GPU."""

    by_key: dict[str, list[Sample]]
    ids: dict[str, tuple[str, int | None]]
    unidentified: defaultdict[PodKey, set[str]]


def _group_by_gpu(profile: MetricProfile, series: Series, problems: list[SampleProblem]) -> _Grouped:
    """Series by GPU key (UUID, or UUID/instance for a MIG instance). One without a UUID cannot be counted once,
    so it is reported and never read; when it names a pod, the pod gets a placeholder key so that its total
    shows a GPU missing instead of silently omitting it."""
    by_key: dict[str, list[Sample]] = {}
    ids: dict[str, tuple[str, int | None]] = {}
    unidentified: defaultdict[PodKey, set[str]] = defaultdict(set)
    uuid_of = profile.uuid_of
    for sample in series.samples:
        uuid = uuid_of(sample.labels)
        if uuid:
            instance = _instance(profile, sample.labels)
            key = uuid if instance is None else f"{uuid}/{instance}"
            group = by_key.get(key)
            if group is None:
                by_key[key] = [sample]
                ids[key] = (uuid, instance)
            else:
                group.append(sample)
            continue
        pod = profile.pod_of(sample.labels)
        key = ""
        if pod is not None:
            key = "unidentified:" + ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "__name__")
            unidentified[pod].add(key)
        problems.append(
            SampleProblem(
                kind=ProblemKind.MISSING_LABEL,
                metric=series.metric,
                message=f"series has none of the labels {', '.join(profile.uuid_labels)} naming its GPU",
                labels=sample.labels,
                value=sample.value,
                timestamp=sample.timestamp,
                key=key,
                pod=pod,
            )
        )
    return _Grouped(by_key, ids, unidentified)


def _per_pod_sums(
    pod_of: Callable[[Mapping[str, str]], PodKey | None],
    instance_label: str,
    judge: Judge,
    series: Series,
    problems: list[SampleProblem],
) -> dict[PodKey, list[Sample]]:
    """For each pod, the samples to sum: those of the scrape target that reported it most recently, all
    valid. A pod with any invalid sample there gets no total at all, since a partial sum would understate."""
    by_pod: dict[PodKey, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for sample in series.samples:
        pod = pod_of(sample.labels)
        if pod is None:
            problems.append(
                SampleProblem(
                    kind=ProblemKind.MISSING_LABEL,
                    metric=series.metric,
                    message="series names no pod",
                    labels=sample.labels,
                    value=sample.value,
                    timestamp=sample.timestamp,
                )
            )
            continue
        by_pod[pod][sample.labels.get(instance_label, "")].append(sample)
    sums: dict[PodKey, list[Sample]] = {}
    for pod, by_instance in by_pod.items():
        group = max(by_instance.values(), key=lambda g: (max(s.timestamp for s in g), _finite_sum(g)))
        rejected = [s for s in group if _rejected(judge, series.metric, s, problems, pod=pod)]
        if not rejected:
            sums[pod] = group
    return sums


def _rejected(
    judge: Judge,
    metric: str,
    sample: Sample,
    problems: list[SampleProblem],
    *,
    key: str = "",
    pod: PodKey | None = None,
) -> bool:
    fault = judge.fault(sample)
    if fault is None:
        return False
    kind, message = fault
    problems.append(
        SampleProblem(
            kind=kind,
            metric=metric,
            message=message,
            labels=sample.labels,
            value=sample.value,
            timestamp=sample.timestamp,
            key=key,
            pod=pod,
        )
    )
    return True


def _report_empty(series: Series, problems: list[SampleProblem]) -> None:
    if not series.samples:
        problems.append(SampleProblem(kind=ProblemKind.EMPTY, metric=series.metric, message="query returned no series"))


def _freshest(samples: Sequence[Sample]) -> Sample:
    return max(samples, key=lambda s: (s.timestamp, s.value if math.isfinite(s.value) else -math.inf))


def _finite_sum(samples: Sequence[Sample]) -> float:
    return sum(s.value for s in samples if math.isfinite(s.value))

