"""One cycle's worth of GPU power readings: the few PromQL queries built from a metric profile, which serve
every policy at once, and the sampler that runs them and maps the answers into a `GpuSnapshot`.
"""

from __future__ import annotations

from climatik.prom.client import PromClient, QueryResult
from climatik.prom.errors import PromError, PromNoDataError
from climatik.prom.profiles import MetricProfile
from climatik.prom.snapshot import GpuSnapshot, Judge, Series, build_snapshot


def selector(metric: str, matchers: str = "") -> str:
    """An instant vector selector: `metric{matchers}`, or the bare metric name without matchers."""
    matchers = matchers.strip().strip(",")
    return f"{metric}{{{matchers}}}" if matchers else metric


def power_query(profile: MetricProfile) -> str:
    """Every GPU power series, allocated or not: unallocated GPUs are kept out of pod attribution later,
    in Python, because which label names the pod depends on how Prometheus scraped the exporter."""
    return selector(profile.power_metric, profile.power_matchers)


def sm_clock_query(profile: MetricProfile) -> str | None:
    """Every SM clock series, or None when the profile reads no clock."""
    if not profile.sm_clock_metric:
        return None
    return selector(profile.sm_clock_metric, profile.sm_clock_matchers)


def cpu_power_query(profile: MetricProfile) -> str | None:
    """Every per-pod CPU power series, or None when the profile adds no CPU power."""
    if not profile.cpu_power_metric:
        return None
    return selector(profile.cpu_power_metric, profile.cpu_power_matchers)


#: What Kepler exports instead of dcgm-exporter's GPU power: per-pod GPU power from 0.11.4 with its experimental
#: GPU flag, per-container GPU energy in 0.7; and 0.7's per-container CPU energy.
KEPLER_POD_GPU = "kepler_pod_gpu_watts"
KEPLER_07_GPU = "kepler_container_gpu_joules_total"
KEPLER_07_CPU = "kepler_container_package_joules_total"


class GpuSampler:
    """Reads all GPU power (and SM clock, and optionally per-pod CPU power) series in one query each, never
    one query per pod, and maps them into a `GpuSnapshot` shared by all policies of the cycle.

    A sample older than `max_sample_age_s` at the query time is stale. The default allows for
    dcgm-exporter's 30 s collect interval plus a scrape interval.
    """

    def __init__(self, client: PromClient, profile: MetricProfile, *, max_sample_age_s: float = 60.0) -> None:
        if max_sample_age_s <= 0:
            raise ValueError("max_sample_age_s must be positive")
        self._client = client
        self._profile = profile
        self._max_age = max_sample_age_s

    @property
    def profile(self) -> MetricProfile:
        return self._profile

    def fetch_gpu_samples(self, now: float | None = None) -> GpuSnapshot:
        """The snapshot at unix time `now` (Prometheus' own time when None).

        Raises `PromError` when any query fails, and `PromNoDataError` when no power series exists at all, which
        means the exporter is not scraped or the profile names the wrong metric.
        """
        profile = self._profile
        power = self._query(power_query(profile), now, "gpu_power")
        if not power.samples:
            raise PromNoDataError(f"no {profile.power_metric} series in Prometheus{self._gpu_hint(now)}",
                                  query=power.query)
        # The clock and CPU queries are pinned to the power query's time so that all readings agree.
        at = now if now is not None else power.eval_time
        if at is None:
            raise PromNoDataError("Prometheus gave no evaluation time", query=power.query)
        results = {"gpu_power": power}
        sm_query = sm_clock_query(profile)
        if sm_query is not None:
            results["sm_clock"] = self._query(sm_query, at, "sm_clock")
        cpu_query = cpu_power_query(profile)
        if cpu_query is not None:
            results["cpu_power"] = self._query(cpu_query, at, "cpu_power")
        warnings = tuple(w for r in results.values() for w in r.warnings)
        cpu = results.get("cpu_power")
        if cpu is not None and not cpu.samples:
            warnings += (f"no {profile.cpu_power_metric} series in Prometheus{self._cpu_hint(at)}",)
        return build_snapshot(
            profile,
            Judge(query_time=at, max_age_s=self._max_age),
            power=Series(profile.power_metric, power.samples),
            sm_clock=_series(profile.sm_clock_metric, results.get("sm_clock")),
            cpu_power=_series(profile.cpu_power_metric, results.get("cpu_power")),
            durations={name: r.duration_s for name, r in results.items()},
            warnings=warnings,
        )

    def _query(self, expr: str, at: float | None, name: str) -> QueryResult:
        return self._client.query_with_sample_times(expr, at=at, name=name)

    def _gpu_hint(self, at: float | None) -> str:
        """Why there may be no GPU power, when Prometheus holds Kepler's GPU series instead (asked only then)."""
        if self._present(KEPLER_POD_GPU, at) or self._present(KEPLER_07_GPU, at):
            return (": Prometheus has Kepler's per-pod GPU power, which names no GPU, so no GPU can be capped "
                    "from it; run NVIDIA's dcgm-exporter on the GPU nodes (Kepler may stay, for CPU power)")
        return ": is dcgm-exporter running and scraped, and are the metric and label names right?"

    def _cpu_hint(self, at: float | None) -> str:
        """Why there may be no per-pod CPU power, when Prometheus holds an older Kepler's counters instead."""
        if self._present(KEPLER_07_CPU, at):
            return (f": this Kepler exports {KEPLER_07_CPU} (Kepler 0.7); per-pod CPU power needs "
                    "kepler_pod_cpu_watts (Kepler 0.10 or later)")
        return ": is Kepler running and scraped?"

    def _present(self, metric: str, at: float | None) -> bool:
        try:
            return bool(self._client.query(f"count({metric})", at=at, name="hint").samples)
        except PromError:
            return False


def _series(metric: str, result: QueryResult | None) -> Series | None:
    return None if result is None else Series(metric, result.samples)
