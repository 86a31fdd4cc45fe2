"""Describe a simulated cluster with plain dataclasses, build its nodes, and serve them on free ports."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

from climatik.clock import Clock
from climatik.sim.exporter import ExporterOptions
from climatik.sim.gpu import SimGpu
from climatik.sim.naming import gpu_uuid
from climatik.sim.node import PodRef, SimNode
from climatik.sim.profiles import H100, GpuProfile
from climatik.sim.runner import RealTimeRunner
from climatik.sim.server import NodeServer
from climatik.sim.traces import ConstantParams, Trace, Workload


@dataclass(frozen=True)
class GpuConfig:
    """Per-GPU overrides: its workload (None: the node's), the pods it is allocated to, its power limit."""

    workload: Workload | None = None
    pods: tuple[PodRef, ...] = ()
    power_limit_w: float | None = None


@dataclass(frozen=True)
class NodeConfig:
    """One node: its name, GPU model and count, default workload, and per-GPU overrides by index."""

    name: str
    profile: GpuProfile = H100
    gpu_count: int = 8
    workload: Workload = field(default_factory=ConstantParams)
    gpus: Mapping[int, GpuConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.gpu_count < 1:
            raise ValueError(f"node {self.name}: gpu_count must be >= 1")
        outside = [index for index in self.gpus if not 0 <= index < self.gpu_count]
        if outside:
            raise ValueError(f"node {self.name}: GPU indices {outside} outside 0..{self.gpu_count - 1}")


@dataclass(frozen=True)
class ClusterConfig:
    """A whole simulated cluster. `seed` makes every trace reproducible."""

    nodes: tuple[NodeConfig, ...]
    seed: int = 0
    lag_s: float = 0.03
    max_substep_s: float = 0.1
    exporter: ExporterOptions = field(default_factory=ExporterOptions)

    @classmethod
    def uniform(
        cls,
        *,
        node_count: int,
        gpus_per_node: int,
        profile: GpuProfile = H100,
        workload: Workload | None = None,
        seed: int = 0,
        name_prefix: str = "gpu-node-",
    ) -> ClusterConfig:
        """K identical nodes of N GPUs running the same kind of workload (each GPU its own draw); idle by default."""
        workload = workload or ConstantParams()
        nodes = tuple(
            NodeConfig(name=f"{name_prefix}{i}", profile=profile, gpu_count=gpus_per_node, workload=workload)
            for i in range(node_count)
        )
        return cls(nodes=nodes, seed=seed)


def build_node(config: NodeConfig, *, seed: int, lag_s: float = 0.03, max_substep_s: float = 0.1) -> SimNode:
    """A node with its GPUs and traces; each GPU's random source is seeded from (seed, node, index)."""
    gpus: list[SimGpu] = []
    traces: list[Trace] = []
    pods: list[tuple[PodRef, ...]] = []
    for index in range(config.gpu_count):
        override = config.gpus.get(index, GpuConfig())
        gpus.append(
            SimGpu(
                profile=config.profile,
                uuid=gpu_uuid(config.name, index),
                index=index,
                lag_s=lag_s,
                power_limit_w=override.power_limit_w,
            )
        )
        workload = override.workload or config.workload
        traces.append(workload.build(random.Random(f"{seed}/{config.name}/{index}")))
        pods.append(override.pods)
    return SimNode(name=config.name, gpus=gpus, traces=traces, pods=pods, max_substep_s=max_substep_s)


def build_nodes(config: ClusterConfig) -> list[SimNode]:
    """Every node of the cluster, at simulated time 0, without servers (for simulated-time benchmarks)."""
    return [
        build_node(node, seed=config.seed, lag_s=config.lag_s, max_substep_s=config.max_substep_s)
        for node in config.nodes
    ]


class SimCluster:
    """Running simulated nodes: one exporter/control server per node and the runner that steps them."""

    def __init__(self, nodes: list[SimNode], servers: list[NodeServer], runner: RealTimeRunner) -> None:
        self.nodes = nodes
        self.runner = runner
        self._servers = servers

    @property
    def urls(self) -> dict[str, str]:
        """Base URL of each node's server, by node name; metrics at <url>/metrics."""
        return {node.name: server.url for node, server in zip(self.nodes, self._servers, strict=True)}

    def node(self, name: str) -> SimNode:
        """The node called `name`."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def stop(self) -> None:
        """Stop the runner and every server."""
        self.runner.stop()
        for server in self._servers:
            server.stop()

    def __enter__(self) -> SimCluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def start_cluster(
    config: ClusterConfig,
    *,
    clock: Clock,
    host: str = "127.0.0.1",
    tick_s: float = 0.05,
    run_physics: bool = True,
) -> SimCluster:
    """Build the nodes, serve each on a free port, and (unless `run_physics` is False) step them in real time.

    With `run_physics=False` nothing moves until the caller steps the nodes or calls `runner.tick()`.
    """
    nodes = build_nodes(config)
    servers: list[NodeServer] = []
    try:
        for node in nodes:
            server = NodeServer(node, options=config.exporter, host=host)
            server.start()
            servers.append(server)
    except OSError:
        for server in servers:
            server.stop()
        raise
    runner = RealTimeRunner(nodes, clock=clock, tick_s=tick_s)
    if run_physics:
        runner.start()
    return SimCluster(nodes, servers, runner)
