"""What the monitor benchmark reads: the monitor's own /metrics, the kube-apiserver's request counter, and the
monitor process's memory and CPU time from /proc."""

from __future__ import annotations

import re
import ssl
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "APPLY", "DELETECOLLECTION"})
_REQUEST_TOTAL = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class MonitorCounters:
    """One look at the monitor's runtime metrics (cumulative since it started)."""

    at: float
    samples: float = 0.0
    sample_seconds: float = 0.0
    reconciles: float = 0.0
    reconcile_seconds: float = 0.0
    query_seconds: dict[str, float] = field(default_factory=dict)
    query_count: dict[str, float] = field(default_factory=dict)


#: The samples the benchmark reads from the monitor, asked by name (`/metrics?name[]=...`): a few lines instead of
#: every per-policy series, whose rendering costs a monitor of hundreds of policies tens of milliseconds a look.
COUNTER_SAMPLES = ("climatik_controller_reconcile_total", "climatik_controller_reconcile_duration_seconds_sum",
                   "climatik_prom_query_duration_seconds_sum", "climatik_prom_query_duration_seconds_count")


def counters_url(metrics_url: str) -> str:
    """`metrics_url` asking for the benchmark's samples only."""
    return metrics_url + "?" + "&".join(f"name[]={name}" for name in COUNTER_SAMPLES)


def served_whole(text: str) -> bool:
    """Whether a /metrics answer holds samples not asked for (a tree that serves no `name[]` filter)."""
    return any(line and not line.startswith("#") and not line.startswith(COUNTER_SAMPLES)
               for line in text.splitlines())


#: The runtime metrics' controller label -> (count field, seconds field) of MonitorCounters.
_CONTROLLERS = {"monitor-sampler": ("samples", "sample_seconds"), "monitor": ("reconciles", "reconcile_seconds")}


def fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def parse_monitor(text: str, at: float) -> MonitorCounters:
    values = dict.fromkeys(("samples", "sample_seconds", "reconciles", "reconcile_seconds"), 0.0)
    query_seconds: dict[str, float] = {}
    query_count: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names = _CONTROLLERS.get(sample.labels.get("controller", ""))
            if names and sample.name == "climatik_controller_reconcile_total":
                values[names[0]] += sample.value
            elif names and sample.name == "climatik_controller_reconcile_duration_seconds_sum":
                values[names[1]] += sample.value
            elif family.name == "climatik_prom_query_duration_seconds":
                query = f"{sample.labels.get('query')}/{sample.labels.get('outcome')}"
                if sample.name.endswith("_sum"):
                    query_seconds[query] = sample.value
                elif sample.name.endswith("_count"):
                    query_count[query] = sample.value
    return MonitorCounters(at=at, query_seconds=query_seconds, query_count=query_count, **values)


def apiserver_writes(server: str, token: str, ca_file: Path) -> Counter[str]:
    """Write requests the kube-apiserver has served since it started, by resource[/subresource]."""
    context = ssl.create_default_context(cafile=str(ca_file))
    request = urllib.request.Request(f"{server}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        text = response.read().decode()
    writes: Counter[str] = Counter()
    for line in text.splitlines():
        match = _REQUEST_TOTAL.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        if labels.get("verb") in WRITE_VERBS:
            resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
            writes[resource] += int(float(match["value"]))
    return writes
