"""Turning raw series into a `GpuSnapshot`: validating samples, deduplicating GPUs, attributing them to pods.

Rules, in the order they apply:
* Per-GPU metrics (DCGM) are grouped by GPU UUID. The same GPU shows up once per pod under time-slicing and
  once per exporter while a DaemonSet rolls; the freshest series gives the reading (ties go to the larger
  finite value, the safe side for a power cap) and every series contributes its pod.
* Per-pod metrics (Kepler) are grouped by pod, then by scrape target; the freshest target's series are summed.
* A value that is NaN, infinite, negative, or older than the maximum age is never summed: it becomes a
  `SampleProblem`, and the GPU stays attributed to its pods so that their totals show it as missing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from climatik.prom.answer import Sample
from climatik.prom.profiles import MetricProfile, PodKey
from climatik.prom.snapshot import GpuReading, GpuSnapshot, ProblemKind, SampleProblem


@dataclass(frozen=True)
class Judge:
    """Decides whether a sample may be used: finite, not negative, and no older than `max_age_s` at
    `query_time` (unix s)."""

    query_time: float
    max_age_s: float

    def fault(self, sample: Sample) -> tuple[ProblemKind, str] | None:
        value = sample.value
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
) -> GpuSnapshot:
    """The snapshot for one cycle from the answers of its power, SM clock and CPU power queries."""
    problems: list[SampleProblem] = []
    if profile.per_pod_power:
        gpus, pod_gpus = _per_pod_gpus(profile, judge, power, problems)
    else:
        clocks = _sm_clocks(profile, judge, sm_clock, problems) if sm_clock is not None else {}
        gpus, pod_gpus = _per_uuid_gpus(profile, judge, power, clocks, problems)
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
    )


def _per_uuid_gpus(
    profile: MetricProfile,
    judge: Judge,
    power: Series,
    clocks: Mapping[str, float],
    problems: list[SampleProblem],
) -> tuple[dict[str, GpuReading], dict[PodKey, frozenset[str]]]:
    by_uuid, pod_gpus = _group_by_uuid(profile, power, problems)
    gpus: dict[str, GpuReading] = {}
    for uuid, series in by_uuid.items():
        pods = frozenset(p for p in (profile.pod_of(s.labels) for s in series) if p is not None)
        for pod in pods:
            pod_gpus[pod].add(uuid)
        latest = _freshest(series)
        if _rejected(judge, power.metric, latest, problems, key=uuid):
            continue
        labels = latest.labels
        gpus[uuid] = GpuReading(
            key=uuid,
            uuid=uuid,
            index=labels.get(profile.index_label, ""),
            model=labels.get(profile.model_label, ""),
            hostname=labels.get(profile.hostname_label, ""),
            power_watts=latest.value,
            sm_clock_mhz=clocks.get(uuid),
            timestamp=latest.timestamp,
            pods=pods,
        )
    return gpus, {pod: frozenset(keys) for pod, keys in pod_gpus.items()}


def _sm_clocks(
    profile: MetricProfile, judge: Judge, sm_clock: Series, problems: list[SampleProblem]
) -> dict[str, float]:
    _report_empty(sm_clock, problems)
    clocks: dict[str, float] = {}
    by_uuid, _ = _group_by_uuid(profile, sm_clock, problems)
    for uuid, series in by_uuid.items():
        latest = _freshest(series)
        if not _rejected(judge, sm_clock.metric, latest, problems, key=uuid):
            clocks[uuid] = latest.value
    return clocks


def _group_by_uuid(
    profile: MetricProfile, series: Series, problems: list[SampleProblem]
) -> tuple[dict[str, list[Sample]], dict[PodKey, set[str]]]:
    """Series by GPU UUID. One without a UUID cannot be counted once, so it is reported and never read;
    when it names a pod, the pod gets a placeholder key (second result) so that its total shows a GPU
    missing instead of silently omitting it."""
    by_uuid: dict[str, list[Sample]] = defaultdict(list)
    unidentified: dict[PodKey, set[str]] = defaultdict(set)
    for sample in series.samples:
        uuid = sample.labels.get(profile.uuid_label, "")
        if uuid:
            by_uuid[uuid].append(sample)
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
                message=f"series has no {profile.uuid_label} label",
                labels=sample.labels,
                value=sample.value,
                timestamp=sample.timestamp,
                key=key,
                pod=pod,
            )
        )
    return by_uuid, unidentified


def _per_pod_gpus(
    profile: MetricProfile, judge: Judge, power: Series, problems: list[SampleProblem]
) -> tuple[dict[str, GpuReading], dict[PodKey, frozenset[str]]]:
    pod_gpus = {
        pod: frozenset({_pod_key(pod)}) for pod in (profile.pod_of(s.labels) for s in power.samples) if pod is not None
    }
    gpus: dict[str, GpuReading] = {}
    for pod, group in _per_pod_sums(profile.pod_of, profile.instance_label, judge, power, problems).items():
        key = _pod_key(pod)
        gpus[key] = GpuReading(
            key=key,
            uuid="",
            index="",
            model="",
            hostname=group[0].labels.get(profile.hostname_label, "") if profile.hostname_label else "",
            power_watts=sum(s.value for s in group),
            sm_clock_mhz=None,
            timestamp=min(s.timestamp for s in group),
            pods=frozenset({pod}),
        )
    return gpus, pod_gpus


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


def _pod_key(pod: PodKey) -> str:
    return f"pod:{pod.namespace}/{pod.name}"
