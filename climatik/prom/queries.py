"""PromQL built from a metric profile, and the one trick that gives instant samples their scrape time.

An instant query stamps every sample with the evaluation time, however old the scrape behind it is
(Prometheus carries a sample forward for up to its lookback delta, five minutes by default). To judge
staleness the scrape time is needed, and `timestamp(x)` gives it. `with_sample_times` asks for the values
and their timestamps in one query, each half marked by a label, and `split_sample_times` joins them back.
"""

from __future__ import annotations

from collections.abc import Sequence

from climatik.prom.answer import Sample
from climatik.prom.errors import PromResponseError
from climatik.prom.profiles import MetricProfile

FIELD_LABEL = "climatik_field"
_VALUE = "value"
_TIMESTAMP = "timestamp"


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


def with_sample_times(expr: str) -> str:
    """One query answering each series of `expr` twice: with its value (marked `climatik_field="value"`)
    and with its scrape time (marked `climatik_field="timestamp"`). The marks keep `or` from merging the
    two halves, which have the same labels once `timestamp()` drops the metric name."""
    values = f'label_replace({expr}, "{FIELD_LABEL}", "{_VALUE}", "", "")'
    times = f'label_replace(timestamp({expr}), "{FIELD_LABEL}", "{_TIMESTAMP}", "", "")'
    return f"{values} or {times}"


def split_sample_times(samples: Sequence[Sample], query: str) -> tuple[Sample, ...]:
    """The value samples of a `with_sample_times` answer, each carrying its scrape time as timestamp."""
    values: dict[frozenset[tuple[str, str]], Sample] = {}
    times: dict[frozenset[tuple[str, str]], float] = {}
    for sample in samples:
        field = sample.labels.get(FIELD_LABEL)
        labels = {k: v for k, v in sample.labels.items() if k != FIELD_LABEL}
        key = frozenset((k, v) for k, v in labels.items() if k != "__name__")
        if field == _VALUE:
            values[key] = Sample(labels=labels, value=sample.value, timestamp=sample.timestamp)
        elif field == _TIMESTAMP:
            times[key] = sample.value
        else:
            raise PromResponseError(f"series without a {FIELD_LABEL} mark: {sample.labels}", query=query)
    joined = []
    for key, sample in values.items():
        if key not in times:
            raise PromResponseError(f"series has a value but no timestamp: {sample.labels}", query=query)
        joined.append(Sample(labels=sample.labels, value=sample.value, timestamp=times[key]))
    return tuple(joined)
