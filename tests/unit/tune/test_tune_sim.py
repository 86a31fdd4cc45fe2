"""The sim backend against a real simulated node served in-process: inventory, locking, reset, errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from support.clock import FakeClock

from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED
from climatik.sim import A100, ClusterConfig, NodeConfig, SimCluster, start_cluster
from climatik.tune.backends.base import BackendUnavailableError
from climatik.tune.backends.sim import SimGpuBackend


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster(clock: FakeClock) -> Iterator[SimCluster]:
    config = ClusterConfig(nodes=(NodeConfig(name="node-0", profile=A100, gpu_count=2),), lag_s=0.05)
    with start_cluster(config, clock=clock, run_physics=False) as running:
        yield running


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as opened:
        yield opened


@pytest.fixture
def backend(cluster: SimCluster, session: requests.Session) -> SimGpuBackend:
    return SimGpuBackend(base_url=cluster.urls["node-0"], session=session, timeout_s=5.0)


def settle(cluster: SimCluster, clock: FakeClock) -> None:
    clock.advance(1.0)
    cluster.runner.tick()


def test_inventory_matches_the_simulated_gpus(cluster: SimCluster, backend: SimGpuBackend) -> None:
    gpus = backend.inventory()

    assert [gpu.uuid for gpu in gpus] == cluster.node("node-0").uuids()
    assert (gpus[0].model, gpus[0].min_frequency, gpus[0].max_frequency) == ("NVIDIA A100-SXM4-80GB", 210, 1410)
    assert gpus[0].supported_frequencies == list(range(210, 1411, 15))
    assert gpus[0].power_limit == 400


def test_apply_locks_the_clock_and_the_gpu_follows(cluster: SimCluster, clock: FakeClock,
                                                   backend: SimGpuBackend) -> None:
    uuid = cluster.node("node-0").uuids()[1]

    result = backend.apply(uuid, 1007)
    settle(cluster, clock)

    assert (result.status, result.requested_mhz, result.applied_mhz) == (APPLIED, 1007, 1005)
    assert result.message is not None and "snapped down to 1005 MHz" in result.message
    assert cluster.node("node-0").readings()[1].locked_max_mhz == 1005
    assert backend.current_clock(uuid) == 1005


def test_reset_unlocks_the_clock(cluster: SimCluster, clock: FakeClock, backend: SimGpuBackend) -> None:
    uuid = cluster.node("node-0").uuids()[0]
    backend.apply(uuid, 600)
    settle(cluster, clock)

    result = backend.reset(uuid)
    settle(cluster, clock)

    assert result.status == APPLIED
    assert cluster.node("node-0").readings()[0].locked_max_mhz is None
    assert backend.current_clock(uuid) == A100.default_sm_mhz


def test_an_unknown_gpu_is_unsupported(backend: SimGpuBackend) -> None:
    assert backend.apply("GPU-not-here", 1000).status == UNSUPPORTED
    reset = backend.reset("GPU-not-here")
    assert reset.status == UNSUPPORTED
    assert reset.message is not None and "404 no GPU GPU-not-here" in reset.message


def test_a_simulator_that_is_down_fails_entries_instead_of_crashing(cluster: SimCluster,
                                                                    backend: SimGpuBackend) -> None:
    uuid = cluster.node("node-0").uuids()[0]
    backend.inventory()
    cluster.stop()

    assert backend.apply(uuid, 1000).status == FAILED
    assert not backend.health().ready, "a failed change says the simulator is gone, not only an inventory"
    with pytest.raises(BackendUnavailableError, match="cannot list its GPUs"):
        backend.inventory()
    assert backend.apply(uuid, 1000).status == FAILED
    assert backend.reset(uuid).status == FAILED
    assert backend.current_clock(uuid) is None


def test_a_simulator_that_is_down_reads_the_same_on_every_try(cluster: SimCluster, backend: SimGpuBackend) -> None:
    # The reason ends up in status: a reason that changed on every try (urllib3 names its connection object by
    # address) made every reconcile write status, whose watch event queued the next reconcile at once.
    cluster.stop()
    reasons = []
    for _ in range(3):
        with pytest.raises(BackendUnavailableError) as raised:
            backend.inventory()
        reasons.append(str(raised.value))

    assert len(set(reasons)) == 1
    assert " at 0x" not in reasons[0]
    assert not backend.health().ready and backend.health().live


def test_a_baseline_is_what_a_released_gpu_returns_to(cluster: SimCluster, clock: FakeClock,
                                                      session: requests.Session) -> None:
    backend = SimGpuBackend(base_url=cluster.urls["node-0"], session=session, baseline=(210, 1200))
    uuid = cluster.node("node-0").uuids()[0]

    held = backend.apply(uuid, 1400)
    released = backend.reset(uuid)
    settle(cluster, clock)

    assert (held.applied_mhz, released.status) == (1200, APPLIED)
    assert held.message is not None and "baseline maximum of 1200 MHz" in held.message
    assert cluster.node("node-0").readings()[0].locked_max_mhz == 1200
