"""The node guard's CPU cost per tick, in process, on the two backends a tuner reaches its GPUs through: the sim
backend over HTTP (against a simulated node served by this process) and the NVML backend over the device zoo's
fake NVML (tests/support/nvml_zoo.py).

Each run builds the tuner's own guard stack (NvmlGpuBackend or SimGpuBackend behind CappedGpus, NodeGuard with
its originals, GuardLoop) with one budget over all the node's loaded GPUs, ticks it at the guard interval in real
time (so that the simulated firmware and loads move between ticks), and measures the CPU time of the ticking
thread alone (time.thread_time: the simulator's server threads and anything else in the process are not
counted). Every call into the backend is timed too, which splits a tick into the backend's part (reading the GPUs,
setting limits and clocks: HTTP requests, or NVML calls) and the guard's own (stepping the budget, deciding
writes, bookkeeping).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests"))

from support.nvml_zoo import FakeNvml  # noqa: E402

from climatik.api.nodefrequencies import PowerBudget  # noqa: E402
from climatik.clock import SystemClock  # noqa: E402
from climatik.sim.cluster import ClusterConfig, NodeConfig, start_cluster  # noqa: E402
from climatik.sim.server import SimControlClient  # noqa: E402
from climatik.tune.backends.base import GpuBackend  # noqa: E402
from climatik.tune.backends.nvml import NvmlGpuBackend  # noqa: E402
from climatik.tune.backends.sim import SimGpuBackend  # noqa: E402
from climatik.tune.guard import NodeGuard  # noqa: E402
from climatik.tune.guardloop import GUARD_KEY, GuardLoop  # noqa: E402
from climatik.tune.levers import CappedGpus  # noqa: E402

NODE = "guard-cost-node"


@dataclass(frozen=True)
class TickCost:
    """CPU seconds of the ticking thread per tick, in all and inside the backend's calls."""

    label: str
    ticks: int
    total: list[float]
    backend: list[float]
    limit_writes: int

    def share(self, interval: float) -> float:
        """Percent of one core at one tick per `interval` seconds."""
        return 100 * statistics.mean(self.total) / interval


class TimedBackend:
    """Forwards every call to a backend and adds the calling thread's CPU time spent inside it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.spent = 0.0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value):
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return value(*args, **kwargs)
            finally:
                self.spent += time.thread_time() - started

        return timed


def measure(label: str, backend: GpuBackend, gpus: list[str], *, watts: int, ticks: int, interval: float,
            settle: Callable[[], None] = lambda: None) -> TickCost:
    """Tick a guard over `backend` `ticks` times, `interval` apart, with one budget of `watts` over `gpus`."""
    timed = TimedBackend(backend)
    devices = CappedGpus(timed)  # type: ignore[arg-type]
    devices.inventory()
    loop = GuardLoop(guard=NodeGuard(devices, devices, originals={}), devices=devices, clock=SystemClock(),
                     node=NODE, request_report=lambda: None, interval=interval)
    loop.enforce([PowerBudget(policy="bench/llm", watts=watts, gpu_ids=gpus)])
    settle()
    total, inside, writes = [], [], 0
    deadline = time.monotonic()
    for _ in range(ticks):
        deadline += interval
        timed.spent = 0.0
        started = time.thread_time()
        loop(GUARD_KEY)
        total.append(time.thread_time() - started)
        inside.append(timed.spent)
        latest = loop.latest()
        writes += latest[0].limit_writes if latest is not None else 0
        time.sleep(max(0.0, deadline - time.monotonic()))
    loop.release()
    return TickCost(label, ticks, total, inside, writes)


def sim_cost(gpus: int, *, ticks: int, interval: float) -> TickCost:
    """The sim backend over HTTP, against a simulated node of `gpus` H100s under a prefill load."""
    cluster = start_cluster(ClusterConfig(nodes=(NodeConfig(name=NODE, gpu_count=gpus),)), clock=SystemClock())
    try:
        with requests.Session() as session:
            session.trust_env = False  # as the tuner's own session
            SimControlClient(cluster.urls[NODE], session=session).set_load(1.0, {"prefill": 0.5, "decode": 0.5})
            backend = SimGpuBackend(base_url=cluster.urls[NODE], session=session)
            return measure("sim over HTTP", backend, cluster.node(NODE).uuids(), watts=gpus * 500, ticks=ticks,
                           interval=interval, settle=lambda: time.sleep(1.0))
    finally:
        cluster.stop()


def nvml_cost(gpus: int, *, ticks: int, interval: float) -> TickCost:
    """The NVML backend over the zoo's fake NVML: `gpus` loaded H100 SXM boards."""
    nvml = FakeNvml.node("h100-sxm", count=gpus)
    for index in range(gpus):
        nvml.load(index)
    backend = NvmlGpuBackend(nvml=nvml, clock=SystemClock())
    cost = measure("NVML over the zoo fake", backend, nvml.uuids(), watts=gpus * 500, ticks=ticks, interval=interval)
    backend.close()
    return cost


def table(costs: list[TickCost], *, gpus: int, interval: float) -> list[str]:
    lines = [f"Guard CPU per tick: {gpus} GPUs under one budget, a tick every {interval * 1000:.0f} ms "
             "(CPU time of the ticking thread)", "",
             f"{'backend':<24} | {'ticks':>5} | {'ms/tick p50':>11} | {'ms/tick p99':>11} | {'in backend':>10} |"
             f" {'guard own':>9} | {'% of a core':>11} | {'limit writes':>12}"]
    for cost in costs:
        ordered = sorted(s * 1000 for s in cost.total)
        backend = statistics.mean(cost.backend) / statistics.mean(cost.total)
        lines.append(f"{cost.label:<24} | {cost.ticks:>5} | {statistics.median(ordered):>11.3f} |"
                     f" {ordered[max(0, -(-len(ordered) * 99 // 100) - 1)]:>11.3f} | {100 * backend:>9.0f}% |"
                     f" {100 * (1 - backend):>8.0f}% | {cost.share(interval):>10.2f}% | {cost.limit_writes:>12}")
    return lines
