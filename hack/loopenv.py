"""The whole Climatik loop on one machine: real API server and Prometheus, simulated GPU nodes, the three
controllers as real `climatik` processes. Used by `make demo` (hack/demo.py) and the end-to-end tests.

Each simulated node has `gpus_per_node` H100s. On every node one pod of the LLM inference service
(app=llm-inference) holds the first `service_gpus_per_node` GPUs; the rest run an unrelated training job
(app=batch-training) that no policy selects. Prometheus scrapes the nodes' DCGM-format exporters every second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from promenv import PrometheusServer
from simworld import create_node, create_pods, ensure_namespace
from testenv import ControlPlane, start_with_crds

from climatik.clock import SystemClock
from climatik.kube.client import POLICIES, KubeClient, connect
from climatik.kube.errors import KubeError
from climatik.sim.cluster import ClusterConfig, GpuConfig, NodeConfig, SimCluster, start_cluster
from climatik.sim.node import PodRef
from climatik.sim.server import SimControlClient
from climatik.sim.traces import ConstantParams, TrainingParams, Workload

REPO_SAMPLE = Path(__file__).resolve().parent.parent / "manifests" / "samples" / "powercappingpolicy.yaml"
SERVICE_NAMESPACE = "default"
SERVICE_LABELS = {"app": "llm-inference"}
SYSTEM_NAMESPACE = "climatik-system"


@dataclass(frozen=True)
class LoopConfig:
    workdir: Path
    nodes: int = 2
    gpus_per_node: int = 8
    service_gpus_per_node: int = 2
    service_workload: Workload = field(default_factory=ConstantParams)
    monitor_interval: float = 1.0
    scrape_interval: float = 1.0
    seed: int = 7


@dataclass(frozen=True)
class Reading:
    """One look at the loop: the service's true power (sum of its GPUs' 1 s averages), what the policy's status
    says, and the GPUs' clocks."""

    t: float
    power: float
    reported_power: float | None
    capping: bool | None
    clocks: list[int]
    caps: list[int | None]


class ClimatikProcesses:
    """monitor, recommend, and one tune per node, each a real `climatik` process logging to workdir."""

    def __init__(self, workdir: Path, kubeconfig: Path) -> None:
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: Sequence[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with (self.workdir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "climatik", "--log-format=json", *args, f"--kubeconfig={self.kubeconfig}",
                 "--metrics-port=0"], stdout=log, stderr=subprocess.STDOUT, env=env)

    def check(self) -> None:
        """Fail if a controller died."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"climatik {name} exited with {proc.returncode}; see {self.workdir / name}.log")

    def stop(self) -> dict[str, int]:
        """SIGTERM everything (tuners restore defaults) and wait; exit codes by name."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes


class LoopEnv:
    """Starts and stops everything; reads and steers the simulated world."""

    def __init__(self, config: LoopConfig) -> None:
        self.config = config
        self.plane: ControlPlane | None = None
        self.sim: SimCluster | None = None
        self.prometheus: PrometheusServer | None = None
        self.client: KubeClient | None = None
        self.processes: ClimatikProcesses | None = None
        self.service_gpus: dict[str, list[str]] = {}
        self.started = time.monotonic()

    @property
    def node_names(self) -> list[str]:
        return [f"gpu-node-{i + 1}" for i in range(self.config.nodes)]

    def cluster_config(self) -> ClusterConfig:
        c = self.config
        nodes = []
        for name in self.node_names:
            gpus = {i: GpuConfig(workload=c.service_workload,
                                 pods=(PodRef(SERVICE_NAMESPACE, self.service_pod(name), "server"),))
                    for i in range(c.service_gpus_per_node)}
            gpus.update({i: GpuConfig(workload=TrainingParams(utilisation=0.6),
                                      pods=(PodRef("batch", f"trainer-{name}", "trainer"),))
                         for i in range(c.service_gpus_per_node, c.gpus_per_node)})
            nodes.append(NodeConfig(name=name, gpu_count=c.gpus_per_node, gpus=gpus))
        return ClusterConfig(nodes=tuple(nodes), seed=c.seed)

    @staticmethod
    def service_pod(node: str) -> str:
        return f"llm-inference-{node}"

    def start(self, stack: ExitStack) -> None:
        c = self.config
        c.workdir.mkdir(parents=True, exist_ok=True)
        self.plane = start_with_crds(c.workdir / "control-plane")
        stack.callback(self.plane.stop)
        self.sim = start_cluster(self.cluster_config(), clock=SystemClock())
        stack.callback(self.sim.stop)
        self.prometheus = PrometheusServer(c.workdir / "prometheus",
                                           [u.removeprefix("http://") for u in self.sim.urls.values()],
                                           scrape_interval=c.scrape_interval)
        self.prometheus.start()
        stack.callback(self.prometheus.stop)
        self.client = connect(self.plane.kubeconfig)
        stack.callback(self.client.close)
        self._create_world()
        for node in self.node_names:
            gpus = sorted(self.gpus(node), key=lambda g: g.index)
            self.service_gpus[node] = [g.uuid for g in gpus[: c.service_gpus_per_node]]
        self.prometheus.wait_for_series("DCGM_FI_DEV_POWER_USAGE", c.nodes * c.gpus_per_node)
        self.processes = ClimatikProcesses(c.workdir, self.plane.kubeconfig)
        stack.callback(self.processes.stop)
        self._start_controllers()
        self.started = time.monotonic()

    def _create_world(self) -> None:
        assert self.client is not None
        ensure_namespace(self.client, SYSTEM_NAMESPACE)
        pods = []
        for node in self.node_names:
            create_node(self.client, node, self.config.gpus_per_node)
            pods.append((SERVICE_NAMESPACE, self.service_pod(node), node, SERVICE_LABELS))
            pods.append(("batch", f"trainer-{node}", node, {"app": "batch-training"}))
        create_pods(self.client, pods)

    def _start_controllers(self) -> None:
        assert self.processes is not None and self.prometheus is not None and self.sim is not None
        elect = ["--leader-elect", f"--leader-election-namespace={SYSTEM_NAMESPACE}"]
        self.processes.start("monitor", ["monitor", f"--prometheus-url={self.prometheus.url}",
                                         f"--interval={self.config.monitor_interval}s", *elect])
        self.processes.start("recommend", ["recommend", *elect])
        for node in self.node_names:
            self.processes.start(f"tune-{node}", [
                "tune", f"--node-name={node}", "--gpu-backend=sim", f"--sim-url={self.sim.urls[node]}",
                "--no-cpufreq", f"--state-file={self.config.workdir / (node + '-tuner-state.json')}",
                "--resync=10"])

    def apply_policy(self, policy: dict[str, Any]) -> None:
        assert self.plane is not None
        subprocess.run([*self.plane.kubectl, "apply", "-f", "-"], input=json.dumps(policy), text=True,
                       check=True, stdout=subprocess.DEVNULL)

    def policy_status(self, name: str, namespace: str = SERVICE_NAMESPACE) -> dict[str, Any]:
        assert self.client is not None
        try:
            return dict(self.client.get(POLICIES, name, namespace=namespace).get("status") or {})
        except KubeError:  # a missed read is just a gap in the trace
            return {}

    def gpus(self, node: str) -> list[Any]:
        assert self.sim is not None
        return SimControlClient(self.sim.urls[node], session=requests.Session()).gpus()

    def read(self, policy: str) -> Reading:
        power, clocks, caps = 0.0, [], []
        for node in self.node_names:
            for gpu in self.gpus(node):
                if gpu.uuid in self.service_gpus[node]:
                    power += gpu.power_w
                    clocks.append(gpu.current_clock_mhz)
                    caps.append(gpu.locked_clock_mhz)
        status = self.policy_status(policy)
        return Reading(t=time.monotonic() - self.started, power=power, reported_power=status.get("currentPower"),
                       capping=status.get("cappingActionRequired"), clocks=clocks, caps=caps)

    def set_service_load(self, utilisation: float, mix: dict[str, float]) -> None:
        for node in self.node_names:
            client = SimControlClient(self.sim.urls[node], session=requests.Session())  # type: ignore[union-attr]
            for uuid in self.service_gpus[node]:
                client.set_load(utilisation, mix, uuid=uuid)


def load_policy(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


@contextmanager
def running(config: LoopConfig) -> Iterator[LoopEnv]:
    """The loop, up and running; everything it started is stopped on exit (tuners restore clocks first)."""
    env = LoopEnv(config)
    with ExitStack() as stack:
        env.start(stack)
        yield env
