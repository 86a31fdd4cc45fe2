"""A simulated cluster on the network: /metrics for scrapers, and the control API that moves clocks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from support.clock import FakeClock

from climatik.sim import (
    ClusterConfig,
    ConstantParams,
    GpuConfig,
    NodeConfig,
    Phase,
    PhaseMix,
    PodRef,
    SimCluster,
    start_cluster,
)
from climatik.sim.server import SimControlClient

PREFILL = ConstantParams(utilisation=1.0, mix=PhaseMix.only(Phase.PREFILL))
SERVING = PodRef(namespace="llm", pod="vllm-0", container="server")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster(clock: FakeClock) -> Iterator[SimCluster]:
    nodes = tuple(
        NodeConfig(name=f"node-{i}", gpu_count=2, workload=PREFILL, gpus={0: GpuConfig(pods=(SERVING,))})
        for i in range(2)
    )
    with start_cluster(ClusterConfig(nodes=nodes, lag_s=0.05), clock=clock, run_physics=False) as running:
        yield running


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as opened:
        yield opened


def advance(cluster: SimCluster, clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    cluster.runner.tick()


def test_each_node_serves_dcgm_metrics_on_its_own_port(cluster: SimCluster, session: requests.Session) -> None:
    urls = cluster.urls
    assert set(urls) == {"node-0", "node-1"}
    assert len(set(urls.values())) == 2
    answer = session.get(f"{urls['node-1']}/metrics", timeout=5)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(answer.text)}
    samples = families["DCGM_FI_DEV_POWER_USAGE"].samples
    assert {sample.labels["Hostname"] for sample in samples} == {"node-1"}
    assert {sample.labels["pod"] for sample in samples} == {"vllm-0", ""}


def test_inventory_lists_each_gpu_with_its_clock_range(cluster: SimCluster, session: requests.Session) -> None:
    gpus = SimControlClient(cluster.urls["node-0"], session=session).gpus()
    assert [gpu.index for gpu in gpus] == [0, 1]
    assert gpus[0].uuid == cluster.node("node-0").uuids()[0]
    assert gpus[0].model == "NVIDIA H100 80GB HBM3"
    assert (gpus[0].min_clock_mhz, gpus[0].max_clock_mhz, gpus[0].default_clock_mhz) == (210, 1980, 1980)
    assert gpus[0].supported_clocks_mhz[0] == 210
    assert gpus[0].supported_clocks_mhz[-1] == 1980
    assert gpus[0].power_limit_w == 700.0
    assert gpus[0].locked_clock_mhz is None


def test_locking_a_clock_changes_the_running_clock_and_power(
    cluster: SimCluster, clock: FakeClock, session: requests.Session
) -> None:
    client = SimControlClient(cluster.urls["node-0"], session=session)
    advance(cluster, clock, 2.0)
    uuid = client.gpus()[1].uuid
    before = client.gpus()[1].power_w

    assert client.set_locked_clock(uuid, 1207) == 1200
    advance(cluster, clock, 2.0)

    after = client.gpus()[1]
    assert after.locked_clock_mhz == 1200
    assert after.current_clock_mhz == 1200
    assert after.power_w < before - 100
    assert client.gpus()[0].current_clock_mhz == 1980
    metrics = session.get(f"{cluster.urls['node-0']}/metrics", timeout=5).text
    assert f'DCGM_FI_DEV_SM_CLOCK{{gpu="1",UUID="{uuid}"' in metrics
    assert any(line.endswith(" 1200") and uuid in line for line in metrics.splitlines())


def test_resetting_a_lock_restores_the_default_clock(
    cluster: SimCluster, clock: FakeClock, session: requests.Session
) -> None:
    client = SimControlClient(cluster.urls["node-0"], session=session)
    uuid = client.gpus()[0].uuid
    client.set_locked_clock(uuid, 900)
    advance(cluster, clock, 1.0)
    client.reset_locked_clock(uuid)
    advance(cluster, clock, 1.0)
    gpu = client.gpus()[0]
    assert (gpu.locked_clock_mhz, gpu.current_clock_mhz) == (None, 1980)


def test_load_and_power_limit_can_be_changed_remotely(
    cluster: SimCluster, clock: FakeClock, session: requests.Session
) -> None:
    client = SimControlClient(cluster.urls["node-1"], session=session)
    uuid = client.gpus()[0].uuid
    client.set_load(0.2, {"decode": 1.0})
    client.set_power_limit(uuid, 300.0)
    advance(cluster, clock, 2.0)
    gpus = client.gpus()
    assert all(gpu.utilisation == pytest.approx(0.2) for gpu in gpus)
    assert all(gpu.power_w < 200 for gpu in gpus)
    assert gpus[0].power_limit_w == 300.0


def test_power_limits_outside_the_boards_range_are_refused_and_the_range_is_listed(
    cluster: SimCluster, clock: FakeClock, session: requests.Session
) -> None:
    client = SimControlClient(cluster.urls["node-0"], session=session)
    gpu = client.gpus()[0]
    assert (gpu.min_power_limit_w, gpu.max_power_limit_w, gpu.default_power_limit_w) == (200.0, 700.0, 700.0)
    for watts in (150.0, 750.0):
        with pytest.raises(requests.HTTPError) as refused:
            client.set_power_limit(gpu.uuid, watts)
        assert refused.value.response.status_code == 400
        assert "200..700 W" in refused.value.response.json()["error"]
    client.set_power_limit(gpu.uuid, 250.0)
    advance(cluster, clock, 1.0)
    limited = client.gpus()[0]
    assert limited.power_limit_w == 250.0
    assert limited.instant_power_w <= 250.0 + 1e-6
    client.reset_power_limit(gpu.uuid)
    advance(cluster, clock, 1.0)
    assert client.gpus()[0].power_limit_w == 700.0
    assert client.gpus()[0].instant_power_w == pytest.approx(700.0)


def test_the_gpu_list_keeps_the_fields_the_tuners_sim_backend_reads(
    cluster: SimCluster, session: requests.Session
) -> None:
    entry = session.get(f"{cluster.urls['node-0']}/sim/gpus", timeout=5).json()["gpus"][0]
    assert {"uuid", "index", "model", "min_clock_mhz", "max_clock_mhz", "default_clock_mhz", "supported_clocks_mhz",
            "power_limit_w", "current_clock_mhz"} <= set(entry)
    assert {"instant_power_w", "min_power_limit_w", "max_power_limit_w", "default_power_limit_w"} <= set(entry)


@pytest.mark.parametrize(
    "request_and_status",
    [
        ("post", "/sim/gpus/GPU-nope/locked-clock", {"max": 1000}, 404),
        ("delete", "/sim/gpus/GPU-nope/locked-clock", None, 404),
        ("post", "/sim/gpus/{uuid}/locked-clock", {"max": -5}, 400),
        ("post", "/sim/gpus/{uuid}/locked-clock", {"min": 1000}, 400),
        ("post", "/sim/gpus/{uuid}/power-limit", {"watts": 100}, 400),
        ("delete", "/sim/gpus/GPU-nope/power-limit", None, 404),
        ("post", "/sim/load", {"utilisation": 2.0, "mix": {"decode": 1.0}}, 400),
        ("post", "/sim/load", {"utilisation": 0.5, "mix": {"decode": 0.5}}, 400),
        ("get", "/nothing-here", None, 404),
    ],
)
def test_bad_requests_get_clear_errors(
    cluster: SimCluster, session: requests.Session, request_and_status: tuple[str, str, object, int]
) -> None:
    method, path, body, status = request_and_status
    uuid = cluster.node("node-0").uuids()[0]
    url = cluster.urls["node-0"] + path.format(uuid=uuid)
    answer = session.request(method, url, json=body, timeout=5)
    assert answer.status_code == status
    assert answer.json()["error"]


def test_malformed_json_is_rejected(cluster: SimCluster, session: requests.Session) -> None:
    answer = session.post(f"{cluster.urls['node-0']}/sim/load", data=b"{not json", timeout=5)
    assert answer.status_code == 400
