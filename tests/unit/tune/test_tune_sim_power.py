"""The sim backend as the node guard's power devices, against a real simulated node served in-process: one
request per tick for every GPU, limits the simulated firmware then holds, and the refusals it answers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from support.clock import FakeClock

from climatik.sim import H100, ClusterConfig, NodeConfig, SimCluster, start_cluster
from climatik.sim.physics import Load, PhaseMix
from climatik.tune.backends.base import BackendUnavailableError
from climatik.tune.backends.sim import SimGpuBackend
from climatik.tune.levers import PowerLimitError

NODE = "node-0"


class CountingSession(requests.Session):
    """A requests session that counts what it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent.append(f"{method!s} {url!s}")
        return super().request(method, url, *args, **kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster(clock: FakeClock) -> Iterator[SimCluster]:
    config = ClusterConfig(nodes=(NodeConfig(name=NODE, profile=H100, gpu_count=8),), lag_s=0.05)
    with start_cluster(config, clock=clock, run_physics=False) as running:
        yield running


@pytest.fixture
def session() -> Iterator[CountingSession]:
    with CountingSession() as opened:
        yield opened


@pytest.fixture
def backend(cluster: SimCluster, session: CountingSession) -> SimGpuBackend:
    return SimGpuBackend(base_url=cluster.urls[NODE], session=session, timeout_s=5.0)


def run(cluster: SimCluster, clock: FakeClock, seconds: float) -> None:
    for _ in range(round(seconds / 0.1)):
        clock.advance(0.1)
        cluster.runner.tick()


def test_every_gpu_is_read_with_one_request(cluster: SimCluster, clock: FakeClock, backend: SimGpuBackend,
                                            session: CountingSession) -> None:
    node = cluster.node(NODE)
    node.set_load(node.uuids()[3], Load(1.0, PhaseMix.from_mapping({"prefill": 1.0})))
    run(cluster, clock, 1.0)
    session.sent.clear()

    states = backend.power_states()

    assert session.sent == [f"GET {cluster.urls[NODE].rstrip('/')}/sim/gpus"]
    assert set(states) == set(node.uuids())
    readings = {reading.uuid: reading for reading in node.readings()}
    for uuid, state in states.items():
        assert state.power == pytest.approx(readings[uuid].instant_power_w, abs=0.01)
        assert (state.limit, state.min_limit, state.max_limit) == (700.0, 200.0, 700.0)
        assert state.clock_mhz == readings[uuid].sm_clock_mhz
    assert states[node.uuids()[3]].power > states[node.uuids()[0]].power


def test_a_limit_is_held_by_the_simulated_firmware(cluster: SimCluster, clock: FakeClock,
                                                   backend: SimGpuBackend) -> None:
    node = cluster.node(NODE)
    uuid = node.uuids()[0]
    node.set_load(uuid, Load(1.0, PhaseMix.from_mapping({"prefill": 1.0})))
    run(cluster, clock, 1.0)
    assert backend.power_states()[uuid].power > 400.0

    backend.set_power_limit(uuid, 300.0)
    run(cluster, clock, 2.0)

    state = backend.power_states()[uuid]
    assert state.limit == 300.0
    assert state.power <= 300.0 * 1.02


def test_a_limit_outside_the_range_or_for_an_unknown_gpu_is_refused(cluster: SimCluster,
                                                                     backend: SimGpuBackend) -> None:
    uuid = cluster.node(NODE).uuids()[0]

    with pytest.raises(PowerLimitError, match=re.escape("outside 200..700 W")):
        backend.set_power_limit(uuid, 150.0)
    with pytest.raises(PowerLimitError, match="404 no GPU GPU-not-here"):
        backend.set_power_limit("GPU-not-here", 300.0)
    assert backend.power_states()[uuid].limit == 700.0


def test_a_simulator_that_is_down_is_the_backend_unavailable(cluster: SimCluster, backend: SimGpuBackend) -> None:
    uuid = cluster.node(NODE).uuids()[0]
    cluster.stop()

    with pytest.raises(BackendUnavailableError, match="cannot list its GPUs"):
        backend.power_states()
    with pytest.raises(BackendUnavailableError, match="does not answer"):
        backend.set_power_limit(uuid, 300.0)
    assert not backend.health().ready


def test_the_inventory_names_each_boards_limit_range(backend: SimGpuBackend) -> None:
    gpu = backend.inventory()[0]
    assert (gpu.power_limit, gpu.min_power_limit, gpu.max_power_limit) == (700, 200, 700)
