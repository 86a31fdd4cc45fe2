"""The whole Climatik loop on one machine: real API server and Prometheus, simulated GPU nodes, the three
controllers as real `climatik` processes, restarted when they exit as the kubelet would restart a container.
Used by `make demo` (hack/demo.py) and the end-to-end tests.

Each simulated node has `gpus_per_node` H100s, shared by tenants: each tenant has one pod on every node holding
the next `gpus_per_node` of its GPUs, and runs its own trace. By default the first tenant is the LLM inference
service (app=llm-inference) on the first `service_gpus_per_node` GPUs and the second an unrelated training job
(app=batch-training) on the rest, which no policy selects. Nodes may carry labels (a rack, for a PowerDomain).
Prometheus scrapes the nodes' DCGM-format exporters every second. Faults: a controller killed, and restarted or
kept down until revived (hack/processes.py), Prometheus stalled.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from processes import ClimatikProcesses
from promenv import PrometheusServer
from simworld import create_node, create_pods, ensure_namespace
from testenv import ControlPlane, start_with_crds

from climatik.clock import SystemClock
from climatik.kube.client import EVENTS, NODE_FREQUENCIES, POLICIES, POWER_DOMAINS, KubeClient, Resource, connect
from climatik.kube.errors import KubeError, NotFoundError
from climatik.sim.cluster import ClusterConfig, GpuConfig, NodeConfig, SimCluster, start_cluster
from climatik.sim.node import PodRef
from climatik.sim.server import GpuInfo, SimControlClient
from climatik.sim.traces import ConstantParams, TrainingParams, Workload

REPO_SAMPLE = Path(__file__).resolve().parent.parent / "manifests" / "samples" / "powercappingpolicy.yaml"
SERVICE_NAMESPACE = "default"
SERVICE_LABELS = {"app": "llm-inference"}
SYSTEM_NAMESPACE = "climatik-system"


@dataclass(frozen=True)
class Tenant:
    """A workload on the loop's nodes: one pod per node, `<name>-<node>` in `namespace` with `labels`, holding
    `gpus_per_node` GPUs that run `workload`'s trace."""

    name: str
    labels: Mapping[str, str]
    gpus_per_node: int
    workload: Workload = field(default_factory=ConstantParams)
    namespace: str = SERVICE_NAMESPACE


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
    tenants: tuple[Tenant, ...] = ()  # empty: the service and the unrelated training job (the service_* fields)
    node_labels: Mapping[str, str] = field(default_factory=dict)  # on every node

    def layout(self) -> tuple[Tenant, ...]:
        """The tenants, in the order they take the GPUs of each node."""
        tenants = self.tenants or (
            Tenant("llm-inference", SERVICE_LABELS, self.service_gpus_per_node, self.service_workload),
            Tenant("trainer", {"app": "batch-training"}, self.gpus_per_node - self.service_gpus_per_node,
                   TrainingParams(utilisation=0.6), namespace="batch"))
        if sum(t.gpus_per_node for t in tenants) > self.gpus_per_node:
            raise ValueError(f"the tenants hold more than the {self.gpus_per_node} GPUs of a node")
        return tuple(t for t in tenants if t.gpus_per_node > 0)


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


class LoopEnv:
    """Starts and stops everything; reads and steers the simulated world."""

    def __init__(self, config: LoopConfig) -> None:
        self.config = config
        self.tenants = config.layout()
        self.plane: ControlPlane | None = None
        self.sim: SimCluster | None = None
        self.prometheus: PrometheusServer | None = None
        self.client: KubeClient | None = None
        self.processes: ClimatikProcesses | None = None
        self.tenant_gpus: dict[str, dict[str, list[str]]] = {}  # tenant -> node -> GPU UUIDs
        self.service_gpus: dict[str, list[str]] = {}  # the first tenant's, by node
        self.started = time.monotonic()

    @property
    def node_names(self) -> list[str]:
        return [f"gpu-node-{i + 1}" for i in range(self.config.nodes)]

    def cluster_config(self) -> ClusterConfig:
        c = self.config
        nodes = []
        for name in self.node_names:
            gpus, first = {}, 0
            for tenant in self.tenants:
                pods = (PodRef(tenant.namespace, self.pod_name(tenant, name), "main"),)
                gpus.update({i: GpuConfig(workload=tenant.workload, pods=pods)
                             for i in range(first, first + tenant.gpus_per_node)})
                first += tenant.gpus_per_node
            nodes.append(NodeConfig(name=name, gpu_count=c.gpus_per_node, gpus=gpus))
        return ClusterConfig(nodes=tuple(nodes), seed=c.seed)

    @staticmethod
    def pod_name(tenant: Tenant, node: str) -> str:
        return f"{tenant.name}-{node}"

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
            gpus, first = sorted(self.gpus(node), key=lambda g: g.index), 0
            for tenant in self.tenants:
                held = gpus[first: first + tenant.gpus_per_node]
                self.tenant_gpus.setdefault(tenant.name, {})[node] = [g.uuid for g in held]
                first += tenant.gpus_per_node
            self.service_gpus[node] = self.tenant_gpus[self.tenants[0].name][node]
        self.prometheus.wait_for_series("DCGM_FI_DEV_POWER_USAGE", c.nodes * c.gpus_per_node)
        self.processes = ClimatikProcesses(c.workdir, self.plane.kubeconfig)
        stack.callback(self.processes.stop)
        self._start_controllers()
        self.started = time.monotonic()

    def _create_world(self) -> None:
        assert self.client is not None
        ensure_namespace(self.client, SYSTEM_NAMESPACE)
        for node in self.node_names:
            create_node(self.client, node, self.config.gpus_per_node, labels=self.config.node_labels)
        create_pods(self.client, [(tenant.namespace, self.pod_name(tenant, node), node, tenant.labels)
                                  for node in self.node_names for tenant in self.tenants])

    def _start_controllers(self) -> None:
        assert self.processes is not None and self.prometheus is not None and self.sim is not None
        elect = ["--leader-elect", f"--leader-election-namespace={SYSTEM_NAMESPACE}"]
        # Stable identities, as pod names are: a controller restarted after an exit takes its lease back at once.
        self.processes.start("monitor", ["monitor", f"--prometheus-url={self.prometheus.url}",
                                         f"--interval={self.config.monitor_interval}s", *elect,
                                         "--leader-election-identity=climatik-monitor-0"])
        self.processes.start("recommend", ["recommend", *elect, "--leader-election-identity=climatik-recommend-0"])
        for node in self.node_names:
            self.processes.start(f"tune-{node}", [
                "tune", f"--node-name={node}", "--gpu-backend=sim", f"--sim-url={self.sim.urls[node]}",
                "--no-cpufreq", f"--state-file={self.config.workdir / (node + '-tuner-state.json')}",
                "--resync=10"])

    def apply(self, obj: Mapping[str, Any]) -> None:
        """`kubectl apply` an object (a policy, a PowerDomain): created, or its spec changed."""
        assert self.plane is not None
        subprocess.run([*self.plane.kubectl, "apply", "-f", "-"], input=json.dumps(obj), text=True,
                       check=True, stdout=subprocess.DEVNULL)

    def apply_policy(self, policy: dict[str, Any]) -> None:
        self.apply(policy)

    def get(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object as the API server has it now; None if there is none."""
        assert self.client is not None
        try:
            return self.client.get(resource, name, namespace=namespace)
        except NotFoundError:
            return None

    def policy_status(self, name: str, namespace: str = SERVICE_NAMESPACE) -> dict[str, Any]:
        return self._status(POLICIES, name, namespace)

    def domain_status(self, name: str) -> dict[str, Any]:
        return self._status(POWER_DOMAINS, name)

    def node_frequencies_status(self, node: str) -> dict[str, Any]:
        return self._status(NODE_FREQUENCIES, node)

    def _status(self, resource: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        try:
            return dict((self.get(resource, name, namespace) or {}).get("status") or {})
        except KubeError:  # a missed read is just a gap in the trace
            return {}

    def events(self, name: str, namespace: str = SERVICE_NAMESPACE) -> list[dict[str, Any]]:
        """The Events recorded about the object `name` in `namespace` (any kind)."""
        assert self.client is not None
        found = self.client.list(EVENTS, namespace=namespace, field_selector=f"involvedObject.name={name}")
        return list(found.get("items") or [])

    def gpus(self, node: str) -> list[GpuInfo]:
        assert self.sim is not None
        return SimControlClient(self.sim.urls[node], session=requests.Session()).gpus()

    def all_gpus(self) -> dict[str, list[GpuInfo]]:
        """Every node's GPUs as the simulator reports them (GET /sim/gpus), by node."""
        return {node: self.gpus(node) for node in self.node_names}

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

    @contextmanager
    def prometheus_stalled(self) -> Iterator[None]:
        """Prometheus frozen (SIGSTOP: connections open, nothing answered, nothing scraped) for the block."""
        assert self.prometheus is not None
        self.prometheus.pause()
        try:
            yield
        finally:
            self.prometheus.resume()


def load_policy(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


@contextmanager
def running(config: LoopConfig) -> Iterator[LoopEnv]:
    """The loop, up and running; everything it started is stopped on exit (tuners restore clocks first)."""
    env = LoopEnv(config)
    with ExitStack() as stack:
        env.start(stack)
        yield env
