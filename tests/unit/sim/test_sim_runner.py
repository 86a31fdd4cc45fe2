"""Driving simulated nodes: in real time from an injected clock, or on simulated time for benchmarks."""

from __future__ import annotations

import threading

import pytest
from support.clock import FakeClock

from climatik.sim import (
    A100,
    ClusterConfig,
    ConstantParams,
    GpuConfig,
    InferenceParams,
    NodeConfig,
    Phase,
    PhaseMix,
    RealTimeRunner,
    SimulatedTimeDriver,
    TrainingParams,
    build_nodes,
)
from climatik.sim.node import gpu_uuid

PREFILL = ConstantParams(utilisation=1.0, mix=PhaseMix.only(Phase.PREFILL))


class SleepCountingClock(FakeClock):
    """A fake clock that signals once the code under test has slept `wanted` times."""

    def __init__(self, wanted: int) -> None:
        super().__init__()
        self.enough = threading.Event()
        self._wanted = wanted

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if len(self.sleeps) >= self._wanted:
            self.enough.set()


def test_runner_advances_nodes_by_the_clock_time_that_passed() -> None:
    clock = FakeClock()
    nodes = build_nodes(ClusterConfig.uniform(node_count=2, gpus_per_node=1, workload=PREFILL))
    runner = RealTimeRunner(nodes, clock=clock)
    clock.advance(1.5)
    assert runner.tick() == pytest.approx(1.5)
    clock.advance(0.5)
    runner.tick()
    assert [node.now_s for node in nodes] == [pytest.approx(2.0)] * 2
    assert nodes[0].readings()[0].energy_mj == pytest.approx(2.0 * 700.0 * 1000, rel=1e-6)


def test_runner_thread_keeps_time_moving_until_stopped() -> None:
    clock = SleepCountingClock(wanted=20)
    nodes = build_nodes(ClusterConfig.uniform(node_count=1, gpus_per_node=1))
    runner = RealTimeRunner(nodes, clock=clock, tick_s=0.1)
    runner.start()
    assert clock.enough.wait(timeout=10)
    runner.stop()
    stopped_at = nodes[0].now_s
    assert stopped_at >= 1.9
    clock.advance(5.0)
    assert nodes[0].now_s == stopped_at


def test_simulated_time_driver_steps_and_reports_each_step() -> None:
    nodes = build_nodes(ClusterConfig.uniform(node_count=1, gpus_per_node=2, workload=PREFILL))
    seen: list[float] = []
    driver = SimulatedTimeDriver(nodes)
    driver.run(10.0, dt_s=0.5, on_step=seen.append)
    assert len(seen) == 20
    assert seen[-1] == pytest.approx(10.0)
    assert driver.now_s == pytest.approx(10.0)
    assert nodes[0].now_s == pytest.approx(10.0)


def test_same_config_and_seed_reproduce_the_same_cluster() -> None:
    def energies(seed: int) -> list[int]:
        config = ClusterConfig.uniform(node_count=2, gpus_per_node=4, workload=InferenceParams(), seed=seed)
        nodes = build_nodes(config)
        SimulatedTimeDriver(nodes).run(120.0, dt_s=1.0)
        return [reading.energy_mj for node in nodes for reading in node.readings()]

    assert energies(seed=4) == energies(seed=4)
    assert energies(seed=4) != energies(seed=5)
    # Each GPU draws from its own random source, so GPUs of one cluster differ.
    assert len(set(energies(seed=4))) == 8


def test_node_config_assigns_pods_workloads_and_limits_per_gpu() -> None:
    training = TrainingParams()
    config = ClusterConfig(
        nodes=(
            NodeConfig(
                name="a100-node",
                profile=A100,
                gpu_count=2,
                gpus={1: GpuConfig(workload=training, power_limit_w=300.0)},
            ),
        ),
    )
    (node,) = build_nodes(config)
    SimulatedTimeDriver([node]).run(5.0)
    idle, busy = node.readings()
    assert idle.uuid == gpu_uuid("a100-node", 0)
    assert idle.profile.model_name == "NVIDIA A100-SXM4-80GB"
    assert idle.power_w == pytest.approx(A100.idle_w)
    assert busy.power_limit_w == 300.0
    assert busy.power_w <= 300.0
    assert busy.sm_clock_mhz < A100.max_sm_mhz


def test_node_config_rejects_gpu_indices_it_does_not_have() -> None:
    with pytest.raises(ValueError, match="outside"):
        NodeConfig(name="n", gpu_count=2, gpus={2: GpuConfig()})
