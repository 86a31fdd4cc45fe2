"""`climatik monitor` as a real process: real Prometheus scraping simulated DCGM exporters, real API server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from climatik_procs import ClimatikProcess, wait_for
from promenv import PrometheusServer
from simworld import create_node, create_pods

from climatik.clock import SystemClock
from climatik.kube.client import connect
from climatik.sim.cluster import ClusterConfig, GpuConfig, NodeConfig, SimCluster, start_cluster
from climatik.sim.node import PodRef
from climatik.sim.physics import Phase, PhaseMix
from climatik.sim.server import SimControlClient
from climatik.sim.traces import ConstantParams

pytestmark = pytest.mark.integration

NS = "monitor-it"
INTERVAL = 2.0
DECODE = ConstantParams(utilisation=0.6, mix=PhaseMix.only(Phase.DECODE))
LAYOUT = {  # node -> gpu index -> pods using it (two pods time-slice one GPU)
    "mon-a": {0: ["inf-0"], 1: ["inf-1", "inf-2"]},
    "mon-b": {0: ["train-0"], 1: ["inf-3"]},
}


def app_of(pod: str) -> str:
    return "inference" if pod.startswith("inf") else "training"


@pytest.fixture(scope="module")
def sim() -> Iterator[SimCluster]:
    nodes = tuple(
        NodeConfig(name=node, gpu_count=2, workload=DECODE,
                   gpus={i: GpuConfig(pods=tuple(PodRef(NS, p, "main") for p in pods)) for i, pods in gpus.items()})
        for node, gpus in LAYOUT.items())
    with start_cluster(ClusterConfig(nodes=nodes), clock=SystemClock()) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def prometheus(sim: SimCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    with PrometheusServer.scraping(tmp_path_factory.mktemp("prometheus"),
                                   [url.removeprefix("http://") for url in sim.urls.values()],
                                   series="DCGM_FI_DEV_POWER_USAGE", count=4) as server:
        yield server


@pytest.fixture(scope="module")
def world(control_plane, sim: SimCluster) -> None:  # type: ignore[no-untyped-def]
    client = connect(control_plane.kubeconfig)
    for node in LAYOUT:
        create_node(client, node, 2)
    create_pods(client, [(NS, pod, node, {"app": app_of(pod)})
                         for node, gpus in LAYOUT.items() for pods in gpus.values() for pod in pods])
    client.close()


@pytest.fixture(scope="module")
def monitor(control_plane, prometheus: PrometheusServer, world: None,  # type: ignore[no-untyped-def]
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClimatikProcess]:
    proc = ClimatikProcess(
        ["monitor", f"--kubeconfig={control_plane.kubeconfig}", f"--prometheus-url={prometheus.url}",
         f"--interval={INTERVAL}s", "--metrics-port=0", "--heartbeat=30s"],
        tmp_path_factory.mktemp("monitor") / "monitor.log").start()
    try:
        yield proc
    finally:
        proc.stop_quietly()


def create_policy(kubectl, name: str, app: str, limit: int) -> None:  # type: ignore[no-untyped-def]
    body = {"apiVersion": "climatik.io/v1alpha1", "kind": "PowerCappingPolicy",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"powerCapLimit": limit, "selector": {"matchLabels": {"app": app}}}}
    result = kubectl("apply", "-f", "-", stdin=json.dumps(body))
    assert result.returncode == 0, result.stderr


def status(kubectl, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    result = kubectl("get", "pcp", "-n", NS, name, "-o", "json")
    return json.loads(result.stdout).get("status", {}) if result.returncode == 0 else {}


def condition(st: dict[str, Any], type: str) -> str | None:
    return next((c["status"] for c in st.get("conditions", []) if c["type"] == type), None)


def sim_power(sim: SimCluster, gpus: list[tuple[str, int]]) -> float:
    total = 0.0
    for node, index in gpus:
        info = SimControlClient(sim.urls[node], session=requests.Session()).gpus()
        total += next(g.power_w for g in info if g.index == index)
    return total


INFERENCE_GPUS = [("mon-a", 0), ("mon-a", 1), ("mon-b", 1)]
TRAINING_GPUS = [("mon-b", 0)]


def test_two_policies_get_the_sums_of_their_distinct_gpus(kubectl, monitor: ClimatikProcess,  # type: ignore[no-untyped-def]
                                                          sim: SimCluster) -> None:
    create_policy(kubectl, "inference", "inference", 3000)
    create_policy(kubectl, "training", "training", 3000)
    inference = wait_for(lambda: (s := status(kubectl, "inference")).get("gpuCount") == 3 and s, timeout=60,
                         what="inference measured", diagnostics=monitor.output)
    training = wait_for(lambda: (s := status(kubectl, "training")).get("gpuCount") == 1 and s, timeout=60,
                        what="training measured", diagnostics=monitor.output)
    assert inference["currentPower"] == pytest.approx(sim_power(sim, INFERENCE_GPUS), abs=3.0)
    assert training["currentPower"] == pytest.approx(sim_power(sim, TRAINING_GPUS), abs=3.0)
    assert condition(inference, "MetricsAvailable") == "True"
    assert inference["cappingActionRequired"] is False
    shared = next(g for n in inference["nodes"] if n["name"] == "mon-a" for g in n["gpus"] if g["index"] == 1)
    assert shared["pods"] == [f"{NS}/inf-1", f"{NS}/inf-2"]


def test_power_over_the_threshold_flips_status_within_two_intervals(  # type: ignore[no-untyped-def]
    kubectl, monitor: ClimatikProcess, sim: SimCluster, prometheus: PrometheusServer
) -> None:
    create_policy(kubectl, "training", "training", 3000)
    wait_for(lambda: status(kubectl, "training").get("gpuCount") == 1, timeout=60, what="training measured")
    create_policy(kubectl, "training", "training", 600)  # 90% threshold: 540 W
    uuid = next(g.uuid for g in SimControlClient(sim.urls["mon-b"], session=requests.Session()).gpus()
                if g.index == 0)
    SimControlClient(sim.urls["mon-b"], session=requests.Session()).set_load(1.0, {"training": 1.0}, uuid=uuid)
    query = f'DCGM_FI_DEV_POWER_USAGE{{UUID="{uuid}"}} > 540'
    wait_for(lambda: prometheus.query(query), timeout=30, interval=0.1, what="Prometheus has the high sample")
    seen = time.monotonic()
    onset = wait_for(lambda: (s := status(kubectl, "training")).get("cappingActionRequired") is True and s,
                     timeout=30, interval=0.1, what="capping required", diagnostics=monitor.output)
    assert time.monotonic() - seen <= 2 * INTERVAL + 1.0
    # Well under its cap before, the policy's clocks were not read with its power; the sample that found it over
    # its threshold read them at once, so that the algorithm's first step has them.
    [gpu] = [g for node in onset["nodes"] for g in node["gpus"]]
    assert gpu["uuid"] == uuid and gpu["smClock"] > 0


def test_losing_prometheus_reports_it_and_capping_does_not_flap(  # type: ignore[no-untyped-def]
    kubectl, monitor: ClimatikProcess, prometheus: PrometheusServer
) -> None:
    wait_for(lambda: condition(status(kubectl, "inference"), "MetricsAvailable") == "True", timeout=60,
             what="metrics available")
    prometheus.stop()
    try:
        wait_for(lambda: condition(status(kubectl, "inference"), "MetricsAvailable") == "False", timeout=30,
                 what="MetricsAvailable=False", diagnostics=monitor.output)
        samples = []
        for _ in range(12):
            samples.append(status(kubectl, "inference").get("cappingActionRequired"))
            time.sleep(0.5)
        assert len(set(samples)) == 1, samples
    finally:
        prometheus.start()
    wait_for(lambda: condition(status(kubectl, "inference"), "MetricsAvailable") == "True", timeout=60,
             what="metrics available again", diagnostics=monitor.output)


def test_deleting_a_pod_removes_its_gpus_from_the_sum(kubectl, monitor: ClimatikProcess) -> None:  # type: ignore[no-untyped-def]
    wait_for(lambda: status(kubectl, "inference").get("gpuCount") == 3, timeout=60, what="three GPUs")
    assert kubectl("delete", "pod", "-n", NS, "inf-3", "--wait=false").returncode == 0
    after = wait_for(lambda: (s := status(kubectl, "inference")).get("gpuCount") == 2 and s, timeout=30,
                     what="two GPUs", diagnostics=monitor.output)
    assert {n["name"] for n in after["nodes"]} == {"mon-a"}


def test_the_monitor_exports_per_policy_metrics(monitor: ClimatikProcess) -> None:
    port = wait_for(lambda: _port(monitor), what="the metrics port in the log")
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert f'climatik_monitor_policy_limit_watts{{policy="{NS}/inference"}} 3000.0' in text
    assert "climatik_prom_query_duration_seconds_bucket" in text
    assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200


def _port(proc: ClimatikProcess) -> int | None:
    for line in proc.output().splitlines():
        if '"process_started"' in line:
            return int(json.loads(line)["port"])
    return None


def test_the_log_names_no_unexpected_errors(monitor: ClimatikProcess) -> None:
    errors = [line for line in monitor.output().splitlines() if '"level": "error"' in line]
    assert errors == []


_ = Path
