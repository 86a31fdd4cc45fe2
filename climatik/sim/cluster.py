"""A simulated cluster: plain dataclasses that describe it, building its nodes, serving them on free ports, and
the drivers that advance them (by wall-clock time in a thread, or by simulated time at once).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import structlog

from climatik.clock import Clock
from climatik.sim.exporter import ExporterOptions
from climatik.sim.gpu import SimGpu
from climatik.sim.node import PodRef, SimNode, gpu_uuid
from climatik.sim.physics import H100, GpuProfile
from climatik.sim.server import NodeServer
from climatik.sim.traces import ConstantParams, Trace, Workload


class RealTimeRunner:
    """Steps nodes by the time that passed on `clock` since the previous tick, every `tick_s`.

    Used when real processes (controllers, Prometheus) watch the simulation. `tick()` does one round so
    tests drive it with a fake clock; `start()` loops in a daemon thread until `stop()`.
    """

    def __init__(self, nodes: Sequence[SimNode], *, clock: Clock, tick_s: float = 0.05) -> None:
        if tick_s <= 0:
            raise ValueError(f"tick_s must be positive, got {tick_s}")
        self._nodes = list(nodes)
        self._clock = clock
        self._tick_s = tick_s
        self._last_s = clock.now()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = structlog.get_logger(__name__)

    def tick(self) -> float:
        """Advance every node by the clock time elapsed since the last tick; returns that time."""
        now = self._clock.now()
        elapsed = max(0.0, now - self._last_s)
        self._last_s = now
        for node in self._nodes:
            node.step(elapsed)
        return elapsed

    def start(self) -> None:
        """Tick in a daemon thread until `stop()`."""
        self._stop.clear()
        self._last_s = self._clock.now()
        self._thread = threading.Thread(target=self._loop, name="sim-runner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking and wait for the thread to finish its round."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                # A broken trace must not silently freeze every node's clock; log it and keep time moving.
                self._log.exception("simulation_step_failed")
            self._clock.sleep(self._tick_s)


class SimulatedTimeDriver:
    """Steps nodes on simulated time only, as fast as the CPU allows; for benchmarks and tests.

    `run(duration_s, dt_s, on_step)` calls `on_step(now_s)` after every step, which is where a benchmark
    reads power and runs its controller.
    """

    def __init__(self, nodes: Sequence[SimNode]) -> None:
        self._nodes = list(nodes)
        self._now_s = min((node.now_s for node in self._nodes), default=0.0)

    @property
    def now_s(self) -> float:
        """Simulated time reached."""
        return self._now_s

    def run(self, duration_s: float, *, dt_s: float = 0.1, on_step: Callable[[float], None] | None = None) -> None:
        """Advance `duration_s` simulated seconds in steps of at most `dt_s`."""
        if dt_s <= 0:
            raise ValueError(f"dt_s must be positive, got {dt_s}")
        end = self._now_s + duration_s
        while end - self._now_s > 1e-9:
            step = min(dt_s, end - self._now_s)
            for node in self._nodes:
                node.step(step)
            self._now_s += step
            if on_step is not None:
                on_step(self._now_s)


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
