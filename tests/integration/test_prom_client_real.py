"""The Prometheus client and the DCGM mapping against a real Prometheus scraping a DCGM-format exporter.

Prometheus scrapes the same exporter twice: once with `honor_labels` (workload labels stay `pod` and
`namespace`) and once without, with the exporter's own target labels, so that the workload's move to
`exported_pod` and `exported_namespace` as it does under Kubernetes service discovery.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
import requests
import yaml

from climatik.prom import (
    GpuSampler,
    PodKey,
    PodLabels,
    ProblemKind,
    PromClient,
    PromQueryError,
    PromSettings,
    PromUnavailableError,
    dcgm_profile,
    kepler_profile,
    make_session,
)
from climatik.prom.sampler import (
    clock_labels,
    power_labels,
    scrape_times_query,
    series_times_query,
    values_query,
)
from climatik.prom.scope import EVERYTHING, Scope, selector_groups

pytestmark = pytest.mark.integration

W1, W2, W3 = PodKey("team", "w1"), PodKey("team", "w2"), PodKey("team", "w3")
STUCK_FOR_S = 90


def _exposition(started: float) -> bytes:
    """What dcgm-exporter (plus Kepler's CPU metric) would serve: GPU-a time-sliced by w1 and w2, GPU-b
    unallocated, GPU-c reporting NaN, GPU-d stuck on a sample stamped 90 s before the server started."""
    common = 'modelName="NVIDIA H100 80GB HBM3",Hostname="node-a"'
    stuck_ms = int((started - STUCK_FOR_S) * 1000)
    lines = []
    for metric, a, b, c in (("DCGM_FI_DEV_POWER_USAGE", 412.5, 61.0, "NaN"), ("DCGM_FI_DEV_SM_CLOCK", 1980, 345, 1980)):
        lines += [
            f'{metric}{{gpu="0",UUID="GPU-a",{common},pod="w1",namespace="team",container="c"}} {a}',
            f'{metric}{{gpu="0",UUID="GPU-a",{common},pod="w2",namespace="team",container="c"}} {a}',
            f'{metric}{{gpu="1",UUID="GPU-b",{common},pod="",namespace="",container=""}} {b}',
            f'{metric}{{gpu="2",UUID="GPU-c",{common},pod="w3",namespace="team",container="c"}} {c}',
            f'{metric}{{gpu="3",UUID="GPU-d",{common},pod="w3",namespace="team",container="c"}} 100 {stuck_ms}',
        ]
    lines += [
        'kepler_pod_cpu_watts{pod_name="w1",pod_namespace="team",zone="package-0"} 30',
        'kepler_pod_cpu_watts{pod_name="w1",pod_namespace="team",zone="package-1"} 25',
        'kepler_pod_cpu_watts{pod_name="w1",pod_namespace="team",zone="core"} 20',
    ]
    return ("\n".join(lines) + "\n").encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (hack/ensure-prometheus.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass(frozen=True)
class RealPrometheus:
    url: str


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    body = _exposition(time.time())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def prometheus(exporter: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealPrometheus]:
    binary = _binary("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": "dcgm-honor", "honor_labels": True, "static_configs": [{"targets": [exporter]}]},
            {
                "job_name": "dcgm-plain",
                "static_configs": [
                    {"targets": [exporter], "labels": {"pod": "dcgm-exporter-x7", "namespace": "gpu-operator"}}
                ],
            },
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with (workdir / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for_samples(url, proc, workdir / "prometheus.log")
        yield RealPrometheus(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait_for_samples(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until both jobs have been scraped twice (so that every series has a sample), or fail with the log."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            query = 'count(count_over_time(DCGM_FI_DEV_SM_CLOCK{UUID="GPU-a"}[1m]) >= 2)'
            body = requests.get(f"{url}/api/v1/query", params={"query": query}, timeout=2).json()
            if body["data"]["result"] and body["data"]["result"][0]["value"][1] == "4":
                return
        except (requests.RequestException, ValueError, KeyError):
            pass
        time.sleep(0.2)
    pytest.fail(f"prometheus did not scrape the exporter within 30 s:\n{log.read_text()[-2000:]}")


@pytest.fixture
def client(prometheus: RealPrometheus) -> Iterator[PromClient]:
    c = PromClient(PromSettings(url=prometheus.url))
    try:
        yield c
    finally:
        c.close()


def test_every_query_the_profiles_build_is_valid_promql(tmp_path):
    promtool = _binary("promtool")
    profiles = [dcgm_profile(power_matchers='job="dcgm"').with_cpu_power(), kepler_profile().with_cpu_power()]
    scopes = [EVERYTHING, Scope({"ml": frozenset({"train-0", "a.b"}), "web": None})]
    exprs = []
    for p in profiles:
        for metric, matchers, pairs, by in ((p.power_metric, p.power_matchers, p.pod_labels, power_labels(p)),
                                            (p.sm_clock_metric, p.sm_clock_matchers, p.pod_labels, clock_labels(p)),
                                            (p.cpu_power_metric, p.cpu_power_matchers, p.cpu_pod_labels, None)):
            for scope in scopes:
                for group in selector_groups(metric, matchers, pairs, scope):
                    exprs += [values_query(group.selectors(), by), scrape_times_query(group.selectors(), "instance"),
                              series_times_query(group.selectors('instance=~"10\\\\.0\\\\.0\\\\.1:9400"'), by)]
    rules = [{"alert": f"Check{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "climatik-queries", "rules": rules}]}))

    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], check=False, capture_output=True, text=True, timeout=60
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout


def test_honor_labels_shape_counts_a_shared_gpu_once_and_reports_bad_ones(client):
    sampler = GpuSampler(client, dcgm_profile(power_matchers='job="dcgm-honor"', sm_clock_matchers='job="dcgm-honor"'))
    now = time.time()

    snap = sampler.fetch_gpu_samples(now)

    assert snap.pod_gpus == {W1: {"GPU-a"}, W2: {"GPU-a"}, W3: {"GPU-c", "GPU-d"}}
    a = snap.gpus["GPU-a"]
    assert (a.power_watts, a.sm_clock_mhz, a.gpu_index, a.hostname) == (412.5, 1980.0, "0", "node-a")
    # The sample's own scrape time, not the evaluation time.
    assert now - 3 < a.timestamp < now
    assert snap.gpus["GPU-b"].pods == frozenset()
    assert snap.total_for([W1, W2]).watts == 412.5
    w3 = snap.total_for([W3])
    assert (w3.watts, w3.missing_gpus, w3.complete) == (0.0, {"GPU-c", "GPU-d"}, False)
    found = {(p.kind, p.key) for p in snap.problems if p.metric == "DCGM_FI_DEV_POWER_USAGE"}
    assert found == {(ProblemKind.NAN, "GPU-c"), (ProblemKind.STALE, "GPU-d")}


def test_prometheus_gzips_its_answers_only_when_asked_and_they_read_the_same(prometheus):
    profile = dcgm_profile(power_matchers='job="dcgm-honor"', sm_clock_matchers='job="dcgm-honor"')
    now = time.time()
    encodings: dict[bool, set[str | None]] = {}
    snapshots = {}
    for compress in (False, True):
        settings = PromSettings(url=prometheus.url, compress=compress)
        session = make_session(settings)
        seen = encodings.setdefault(compress, set())
        session.hooks["response"].append(lambda r, *_, seen=seen, **__: seen.add(r.headers.get("Content-Encoding")))
        client = PromClient(settings, session=session)
        try:
            snapshots[compress] = GpuSampler(client, profile).fetch_gpu_samples(now)
        finally:
            client.close()

    assert encodings == {False: {None}, True: {"gzip"}}
    assert snapshots[False].gpus == snapshots[True].gpus and snapshots[False].gpus


def test_prometheus_names_the_namespaces_a_metrics_series_carry_from_its_index(client):
    now = time.time()

    def namespaces(label: str, job: str) -> frozenset[str]:
        return client.label_values(label, [f'DCGM_FI_DEV_POWER_USAGE{{job="{job}"}}'], start=now - 300, end=now)

    assert (namespaces("namespace", "dcgm-honor"), namespaces("exported_namespace", "dcgm-honor")) == ({"team"}, set())
    assert (namespaces("namespace", "dcgm-plain"), namespaces("exported_namespace", "dcgm-plain")) == (
        {"gpu-operator"}, {"team"})
    assert namespaces("namespace", "nobody") == frozenset()


class WithoutLabelLookups(PromClient):
    """A client whose label lookups fail, so that the sampler asks every pod label pair."""

    def label_values(self, label: str, selectors: Any, *, start: float, end: float,
                     name: str = "labels") -> frozenset[str]:
        raise PromUnavailableError("label lookups refused here", query="labels")


def test_a_narrowed_read_asks_only_the_pod_labels_in_use_and_reads_what_every_pair_reads(prometheus):
    profile = dcgm_profile(power_matchers='job="dcgm-honor"', sm_clock_matchers='job="dcgm-honor"')
    scope = Scope({"team": None})
    now = time.time()
    asked: list[str] = []
    settings = PromSettings(url=prometheus.url)
    session = make_session(settings)
    session.hooks["response"].append(lambda r, *_, **__: asked.append(r.request.url or ""))
    client, every_pair = PromClient(settings, session=session), WithoutLabelLookups(settings)
    try:
        narrowed = GpuSampler(client, profile).fetch_gpu_samples(now, scope)
        wide = GpuSampler(every_pair, profile).fetch_gpu_samples(now, scope)
    finally:
        client.close()
        every_pair.close()

    queries = [unquote_plus(url) for url in asked if "/api/v1/query" in url]
    # (six queries: the stuck GPU-d, stamped by its exporter, gets its target a closer look per metric)
    assert len(queries) == 6 and all("exported_namespace=" not in q and "pod_namespace=" not in q for q in queries)
    assert narrowed.gpus == wide.gpus and narrowed.pod_gpus == wide.pod_gpus == {
        W1: {"GPU-a"}, W2: {"GPU-a"}, W3: {"GPU-c", "GPU-d"}}
    assert {(p.kind, p.key) for p in narrowed.problems} == {(p.kind, p.key) for p in wide.problems}


def test_without_honor_labels_the_workload_is_found_in_exported_labels(client):
    matchers = 'job="dcgm-plain"'
    exported_only = (PodLabels("exported_pod", "exported_namespace"),)
    profile = dcgm_profile(power_matchers=matchers, sm_clock_matchers=matchers, pod_labels=exported_only)

    snap = GpuSampler(client, profile).fetch_gpu_samples(time.time())

    assert snap.pod_gpus == {W1: {"GPU-a"}, W2: {"GPU-a"}, W3: {"GPU-c", "GPU-d"}}
    assert snap.gpus["GPU-b"].pods == frozenset()


def test_samples_older_than_the_maximum_age_are_stale(client):
    sampler = GpuSampler(client, dcgm_profile(power_matchers='job="dcgm-honor"'), max_sample_age_s=5)

    # Ten seconds on, Prometheus still carries the last samples forward; their scrape time gives them away.
    snap = sampler.fetch_gpu_samples(time.time() + 10)

    assert snap.gpus == {}
    assert {p.kind for p in snap.problems if p.metric == "DCGM_FI_DEV_POWER_USAGE"} >= {ProblemKind.STALE}


def test_cpu_power_sums_package_zones_of_a_pod(client):
    profile = dcgm_profile(power_matchers='job="dcgm-honor"', sm_clock_metric="").with_cpu_power(
        matchers='job="dcgm-honor",zone=~"package.*"'
    )

    snap = GpuSampler(client, profile).fetch_gpu_samples(time.time())

    assert snap.cpu_watts == {W1: 55.0}
    assert snap.total_for([W1, W2]).watts == 412.5 + 55.0


def test_a_query_prometheus_cannot_parse_is_rejected_with_its_error(client):
    with pytest.raises(PromQueryError) as caught:
        client.query("DCGM_FI_DEV_POWER_USAGE{")

    assert caught.value.status == 400
    assert caught.value.error_type == "bad_data"
