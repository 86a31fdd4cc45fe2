"""One cycle's worth of GPU power readings: the few PromQL queries built from a metric profile and a scope, which
serve every policy at once, and the sampler that runs them and maps the answers into a `GpuSnapshot`.

A cycle first asks Prometheus its time (`vector(time())`, unless the caller gives one), and evaluates every
other query at that time. The metrics (GPU power, SM clock, CPU power) are then read side by side, one thread
each: Prometheus evaluates concurrent queries on several cores, and the cycle waits for the slowest read
instead of for their sum. The SM clock may be read over a scope of its own (only the pods whose clocks the
caller needs; none at all), and `add_clocks` reads more of them later at the snapshot's own evaluation time, so
that they are what the first read would have given. What it asks, per metric and per chunk of the scope
(climatik.prom.scope):

* the values, aggregated by Prometheus onto the labels the profile reads (`max by (UUID, pod, ...)`): one series
  per GPU, pod and scrape target, without the labels nothing here reads (driver version, PCI bus, container,
  job, service discovery's labels), which are most of the bytes of an answer;
* the scrape times, one per scrape target: `count_values by (instance) (..., timestamp(...))`. Every series of
  one scrape carries the scrape's time, so a target normally answers with a single time. A target whose series
  disagree (explicit timestamps, a deduplicated HA pair) gets one more query for the time of each of its series,
  aggregated onto the same labels as the values.

A profile lists every (pod label, namespace label) pair an exporter and a scrape set-up may put the workload in, and
a scope's selectors are one per pair, joined with `or`; but a Prometheus normally holds one of them. Before a
metric's reads, the sampler asks which namespaces each pair's namespace label names on the metric's series (an
index lookup over the last `LABELS_LOOKBACK_S`, no samples read, a few milliseconds) and leaves out the pairs that
name none of the scope's: each selector of an `or` costs Prometheus a pass over the series it joins (at 8,000 GPU
series, three pairs instead of one took 0.19 against 0.15 s per values query and 0.23 against 0.18 s per
scrape-time query). When a lookup fails, or no pair names a scope namespace, every pair is asked, as without it.

Each value then carries the time it was scraped, exactly as `timestamp()` gives it, without asking for every
series twice; the snapshot's rules judge it (climatik.prom.snapshot). An instant query stamps every sample with
the evaluation time, however old the scrape behind it is (Prometheus carries a sample forward for up to its
lookback delta, five minutes by default), so the scrape time is what tells a fresh reading from a stuck one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial

from climatik.prom.client import PromClient, QueryResult, Sample
from climatik.prom.errors import PromError, PromNoDataError, PromResponseError
from climatik.prom.profiles import MetricProfile, PodLabels
from climatik.prom.scope import EVERYTHING, Scope, SelectorGroup, match, selector, selector_groups
from climatik.prom.snapshot import GpuSnapshot, Judge, Series, build_snapshot, with_clocks

#: The label `count_values` puts each distinct scrape time in.
SCRAPE_TIME_LABEL = "climatik_scrape_time"
#: Asks Prometheus its time (one sample, whose value is the evaluation time).
EVAL_TIME_QUERY = "vector(time())"
#: How far back the lookup of the namespaces a metric's series name looks: Prometheus' default lookback delta, the
#: oldest a sample can be and still answer an instant query.
LABELS_LOOKBACK_S = 300.0


def power_query(profile: MetricProfile) -> str:
    """Every GPU power series, allocated or not."""
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


def power_labels(profile: MetricProfile) -> tuple[str, ...]:
    """Every label the snapshot reads on a GPU power series: the GPU, its MIG instance, its node, its pods, and
    the scrape target (which tells two exporters of one GPU apart)."""
    names = [*profile.uuid_labels, profile.gpu_instance_label, profile.gpu_instance_profile_label,
             profile.index_label, profile.model_label, *profile.hostname_labels, profile.instance_label]
    names += [label for pair in profile.pod_labels for label in (pair.pod, pair.namespace)]
    return tuple(dict.fromkeys(name for name in names if name))


def clock_labels(profile: MetricProfile) -> tuple[str, ...]:
    """Every label the snapshot reads on an SM clock series: the clock is kept per GPU."""
    names = [*profile.uuid_labels, profile.gpu_instance_label, profile.instance_label]
    return tuple(dict.fromkeys(name for name in names if name))


def values_query(selectors: Sequence[str], by: Sequence[str] | None) -> str:
    """The values of the series `selectors` read, aggregated onto the labels `by` (None: every label kept)."""
    union = " or ".join(selectors)
    return union if by is None else f"max by ({', '.join(by)}) ({union})"


def scrape_times_query(selectors: Sequence[str], instance_label: str) -> str:
    """The distinct scrape times of each scrape target's series (one series per target and time)."""
    by = f"by ({instance_label}) " if instance_label else ""
    return f'count_values {by}("{SCRAPE_TIME_LABEL}", {_times(selectors)})'


def series_times_query(selectors: Sequence[str], by: Sequence[str] | None) -> str:
    """The scrape time of each series, aggregated as `values_query` aggregates the values (the freshest wins)."""
    return _times(selectors) if by is None else f"max by ({', '.join(by)}) ({_times(selectors)})"


def _times(selectors: Sequence[str]) -> str:
    # timestamp() gives a sample's own time only when its argument is a selector, hence one call per selector.
    return " or ".join(f"timestamp({s})" for s in selectors)


@dataclass(frozen=True)
class _Metric:
    """One metric a cycle reads: its name and matchers, the label pairs naming its pods, the labels its values
    are aggregated onto (None: none dropped) and the name its queries are timed under."""

    name: str
    metric: str
    matchers: str
    pairs: tuple[PodLabels, ...]
    by: tuple[str, ...] | None


@dataclass(frozen=True)
class _Read:
    samples: tuple[Sample, ...]
    duration_s: float
    warnings: tuple[str, ...]


#: What Kepler exports instead of dcgm-exporter's GPU power: per-pod GPU power from 0.11.4 with its experimental
#: GPU flag, per-container GPU energy in 0.7; and 0.7's per-container CPU energy.
KEPLER_POD_GPU = "kepler_pod_gpu_watts"
KEPLER_07_GPU = "kepler_container_gpu_joules_total"
KEPLER_07_CPU = "kepler_container_package_joules_total"


class GpuSampler:
    """Reads the GPU power (and SM clock, and optionally per-pod CPU power) of a scope's pods in a few queries,
    never one per pod or per policy, and maps them into a `GpuSnapshot` shared by all policies of the cycle.

    A sample older than `max_sample_age_s` at the query time is stale. The default allows for
    dcgm-exporter's 30 s collect interval plus a scrape interval. `wall` gives the time of a snapshot that asked
    nothing (an empty scope).
    """

    def __init__(self, client: PromClient, profile: MetricProfile, *, max_sample_age_s: float = 60.0,
                 wall: Callable[[], float] = time.time) -> None:
        if max_sample_age_s <= 0:
            raise ValueError("max_sample_age_s must be positive")
        self._client = client
        self._profile = profile
        self._max_age = max_sample_age_s
        self._wall = wall

    @property
    def profile(self) -> MetricProfile:
        return self._profile

    def fetch_gpu_samples(self, now: float | None = None, scope: Scope = EVERYTHING,
                          clock_scope: Scope | None = None) -> GpuSnapshot:
        """The snapshot of `scope`'s pods at unix time `now` (Prometheus' own time when None), with the SM clocks
        of `clock_scope`'s pods only (None: of `scope`'s; an empty scope reads no clock at all).

        Raises `PromError` when any query fails, and `PromNoDataError` when no power series exists at all, which
        means the exporter is not scraped or the profile names the wrong metric.
        """
        profile = self._profile
        if scope.empty:
            return GpuSnapshot(query_time=now if now is not None else self._wall(), gpus={}, pod_gpus={},
                               cpu_queried=bool(profile.cpu_power_metric), scope=scope)
        at = now if now is not None else self._eval_time()
        clocks = scope if clock_scope is None else clock_scope
        metrics = {"gpu_power": (_Metric("gpu_power", profile.power_metric, profile.power_matchers,
                                         profile.pod_labels, power_labels(profile)), scope)}
        if profile.sm_clock_metric and not clocks.empty:
            metrics["sm_clock"] = (self._clock_metric(), clocks)
        if profile.cpu_power_metric:
            metrics["cpu_power"] = (_Metric("cpu_power", profile.cpu_power_metric, profile.cpu_power_matchers,
                                            profile.cpu_pod_labels, None), scope)
        # The metrics are read side by side, all at the one evaluation time: Prometheus evaluates concurrent
        # queries on several cores, and the cycle waits for the slowest read instead of for their sum. Each read
        # has a second worker for its scrape-time queries.
        with ThreadPoolExecutor(max_workers=2 * len(metrics), thread_name_prefix="prom-read") as pool:
            alone = len(metrics) == 1
            futures = {name: pool.submit(self._read, metric, at, read_scope, pool, alone)
                       for name, (metric, read_scope) in metrics.items()}
            wait(futures.values())  # before the pool shuts down: the reads still hand it their scrape-time queries
        power = futures["gpu_power"].result()
        warnings: tuple[str, ...] = ()
        if not power.samples:
            # Narrowed to pods that have no series (yet): say so, unless the metric is missing altogether, which
            # is the error to tell whatever the other reads met.
            warnings += (self._no_power(at, scope),)
        reads = {name: future.result() for name, future in futures.items()}
        warnings += tuple(w for r in reads.values() for w in r.warnings)
        cpu = reads.get("cpu_power")
        if cpu is not None and not cpu.samples:
            warnings += (f"no {profile.cpu_power_metric} series in Prometheus{self._cpu_hint(at)}",)
        return build_snapshot(
            profile,
            Judge(query_time=at, max_age_s=self._max_age),
            power=Series(profile.power_metric, power.samples),
            sm_clock=_series(profile.sm_clock_metric, reads.get("sm_clock")),
            cpu_power=_series(profile.cpu_power_metric, reads.get("cpu_power")),
            durations={name: r.duration_s for name, r in reads.items()},
            warnings=warnings,
            scope=scope,
        )

    def add_clocks(self, snapshot: GpuSnapshot, scope: Scope) -> GpuSnapshot:
        """`snapshot` with the SM clocks of `scope`'s pods read too, at the snapshot's own evaluation time: what
        they would have been had they been read with it. Raises `PromError` when a query fails."""
        profile = self._profile
        if not profile.sm_clock_metric or scope.empty:
            return snapshot
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prom-read") as pool:
            read = self._read(self._clock_metric(), snapshot.query_time, scope, pool, True)
        return with_clocks(profile, Judge(query_time=snapshot.query_time, max_age_s=self._max_age), snapshot,
                           Series(profile.sm_clock_metric, read.samples), duration_s=read.duration_s,
                           warnings=read.warnings)

    def _clock_metric(self) -> _Metric:
        profile = self._profile
        return _Metric("sm_clock", profile.sm_clock_metric, profile.sm_clock_matchers, profile.pod_labels,
                       clock_labels(profile))

    def _eval_time(self) -> float:
        """Prometheus' own time now: the evaluation time of every query of the cycle, so that a clock that differs
        between the monitor and Prometheus neither ages nor rejuvenates a reading."""
        result = self._query(EVAL_TIME_QUERY, None, "time")
        if not result.samples:
            raise PromNoDataError("Prometheus gave no evaluation time", query=EVAL_TIME_QUERY)
        return result.samples[0].value

    def _read(self, metric: _Metric, at: float, scope: Scope, pool: Executor, alone: bool) -> _Read:
        """Every series of `metric` in `scope` at `at`, each stamped with its scrape time.

        Read `alone` (no other metric's read beside it), a chunk's scrape times are asked (on `pool`) with its
        values: two queries, which Prometheus evaluates side by side (power alone over 7,200 of 24,000 GPU
        series: 0.33 s a sample against 0.45 s with the times asked after the values, mean of 12 each). Beside
        another metric's read, they are asked as soon as Prometheus starts answering the values, so that it
        evaluates the times while the monitor reads and decodes the values. Not before: four queries at once
        share a loaded Prometheus' cores and all answer late (with every query of a sample at once, a
        1,000-node cycle took 0.14-0.18 s longer, measured side by side)."""
        samples: list[Sample] = []
        duration = 0.0
        warnings: tuple[str, ...] = ()
        pairs = metric.pairs if scope.everything else self._pairs_in_use(metric, at, scope)
        instance = self._profile.instance_label
        for group in selector_groups(metric.metric, metric.matchers, pairs, scope):
            selectors = group.selectors()
            times: list[Future[QueryResult]] = []
            ask_times = partial(self._ask, pool, times, scrape_times_query(selectors, instance), at, metric.name)
            if alone:
                ask_times()
            values = self._query(values_query(selectors, metric.by), at, metric.name,
                                 on_answer=None if alone else ask_times)
            duration += values.duration_s
            warnings += values.warnings
            if not values.samples:
                continue
            stamped, took = self._stamp(metric, group, values, times[0].result(), at)
            samples += stamped
            duration += took
        return _Read(tuple(samples), duration, warnings)

    def _ask(self, pool: Executor, into: list[Future[QueryResult]], expr: str, at: float, name: str) -> None:
        """Ask `expr` on `pool`; its answer to come in `into`."""
        into.append(pool.submit(self._query, expr, at, name))

    def _pairs_in_use(self, metric: _Metric, at: float, scope: Scope) -> tuple[PodLabels, ...]:
        """The pod label pairs of `metric` whose namespace label names one of `scope`'s namespaces on some series,
        or every pair when none does or Prometheus could not say."""
        if len(metric.pairs) < 2:
            return metric.pairs
        wanted = set(scope.namespaces)
        found: dict[str, bool] = {}
        try:
            for label in dict.fromkeys(pair.namespace for pair in metric.pairs):
                values = self._client.label_values(label, [selector(metric.metric, metric.matchers)],
                                                   start=at - LABELS_LOOKBACK_S, end=at, name=f"{metric.name}_labels")
                found[label] = not wanted.isdisjoint(values)
        except PromError:
            return metric.pairs  # counted in the query metrics under its outcome; the reads go on with every pair
        return tuple(pair for pair in metric.pairs if found[pair.namespace]) or metric.pairs

    def _stamp(self, metric: _Metric, group: SelectorGroup, values: QueryResult, times: QueryResult,
               at: float) -> tuple[list[Sample], float]:
        """The values, each with its scrape time from `times` (the scrape times per target) or, for a target whose
        series disagree, from one more query; and the time the scrape-time queries took."""
        instance = self._profile.instance_label
        per_target: dict[str, set[float]] = {}
        for sample in times.samples:
            per_target.setdefault(sample.labels.get(instance, ""), set()).add(_scrape_time(sample, times.query))
        took = times.duration_s
        mixed = sorted(target for target, found in per_target.items() if len(found) > 1)
        exact: dict[frozenset[tuple[str, str]], float] = {}
        if mixed:
            extra = match(instance, mixed) if instance else ""
            series = self._query(series_times_query(group.selectors(extra), metric.by), at, metric.name)
            exact = {_identity(s.labels): s.value for s in series.samples}
            took += series.duration_s
        single = {target: next(iter(found)) for target, found in per_target.items() if len(found) == 1}
        stamped = []
        for sample in values.samples:
            scraped = single.get(sample.labels.get(instance, ""))
            if scraped is None:
                scraped = exact.get(_identity(sample.labels))
            if scraped is None:
                raise PromResponseError(f"series has a value but no scrape time: {sample.labels}", query=values.query)
            stamped.append(Sample(labels=sample.labels, value=sample.value, timestamp=scraped))
        return stamped, took

    def _query(self, expr: str, at: float | None, name: str,
               on_answer: Callable[[], None] | None = None) -> QueryResult:
        return self._client.query(expr, at=at, name=name, on_answer=on_answer)

    def _no_power(self, at: float, scope: Scope) -> str:
        """The warning when the scope's pods have no power series; raises `PromNoDataError` when Prometheus has no
        power series at all."""
        profile = self._profile
        present = None if scope.everything else self._count(power_query(profile), at)
        if present is None or not present.samples:
            raise PromNoDataError(f"no {profile.power_metric} series in Prometheus{self._gpu_hint(at)}",
                                  query=power_query(profile))
        return (f"no {profile.power_metric} series in Prometheus names the selected pods: do the series "
                "carry the workload's pod and namespace (the exporter's pod labels, honor_labels)?")

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
        result = self._count(metric, at)
        return result is not None and bool(result.samples)

    def _count(self, expr: str, at: float | None) -> QueryResult | None:
        try:
            return self._client.query(f"count({expr})", at=at, name="hint")
        except PromError:
            return None


def _scrape_time(sample: Sample, query: str) -> float:
    try:
        return float(sample.labels[SCRAPE_TIME_LABEL])
    except (KeyError, ValueError):
        raise PromResponseError(f"scrape time series without a readable {SCRAPE_TIME_LABEL}: {sample.labels}",
                                query=query) from None


def _identity(labels: dict[str, str]) -> frozenset[tuple[str, str]]:
    """A series' labels without its metric name, which timestamp() drops."""
    return frozenset((k, v) for k, v in labels.items() if k != "__name__")


def _series(metric: str, read: _Read | None) -> Series | None:
    return None if read is None else Series(metric, read.samples)
