"""The whole Climatik loop on one machine: real API server and Prometheus, simulated GPU nodes, the three
controllers as real `climatik` processes, restarted when they exit as the kubelet would restart a container.
Used by `make demo` (hack/demo.py) and the end-to-end tests.

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
import threading
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


@dataclass
class _Supervised:
    """One controller under supervision: how to start it, its current process and its restart history."""

    argv: list[str]
    proc: subprocess.Popen[bytes]
    started: float
    delay: float
    restarts: list[float] = field(default_factory=list)  # when (monotonic) each restart happened
    exited_at: float | None = None  # set while it waits out its back-off


class ClimatikProcesses:
    """monitor, recommend, and one tune per node, each a real `climatik` process logging to workdir.

    As the kubelet does for a container, a process that exits is started again with the same arguments after a
    back-off (`restart_delay`, doubled after each quick exit up to `max_restart_delay`, back to the start once
    a process ran `healthy_after` seconds); the exit and the restart are logged on stderr and in the process's
    log, and the run goes on. `check()` fails only on a crash loop. Leader-elected controllers are given a
    stable identity (as a pod name is), so a restarted one takes its own lease back at once.
    """

    def __init__(self, workdir: Path, kubeconfig: Path, *, restart_delay: float = 1.0,
                 max_restart_delay: float = 10.0, healthy_after: float = 60.0, crash_loop: int = 5) -> None:
        self.workdir = workdir
        self.kubeconfig = kubeconfig
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # the current process of each controller
        self._restart_delay = restart_delay
        self._max_restart_delay = max_restart_delay
        self._healthy_after = healthy_after
        self._crash_loop = crash_loop
        self._supervised: dict[str, _Supervised] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def start(self, name: str, args: Sequence[str]) -> None:
        argv = [sys.executable, "-m", "climatik", "--log-format=json", *args, f"--kubeconfig={self.kubeconfig}",
                "--metrics-port=0"]
        with self._lock:
            proc = self._spawn(name, argv)
            self._supervised[name] = _Supervised(argv, proc, time.monotonic(), self._restart_delay)
            self.procs[name] = proc
            if self._supervisor is None:
                self._supervisor = threading.Thread(target=self._supervise, name="loopenv-supervisor",
                                                    daemon=True)
                self._supervisor.start()

    def restarts(self) -> dict[str, int]:
        """How many times each controller was restarted."""
        with self._lock:
            return {name: len(s.restarts) for name, s in self._supervised.items()}

    def check(self) -> None:
        """Fail if a controller is crash-looping: `crash_loop` restarts within five minutes."""
        now = time.monotonic()
        with self._lock:
            for name, s in self._supervised.items():
                recent = [t for t in s.restarts if now - t < 300.0]
                if len(recent) >= self._crash_loop:
                    raise RuntimeError(f"climatik {name} is crash-looping ({len(recent)} restarts in 5 min); "
                                       f"see {self.workdir / name}.log")

    def stop(self) -> dict[str, int]:
        """SIGTERM everything (tuners restore defaults) and wait; exit codes by name (of the last run of each)."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
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

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with (self.workdir / f"{name}.log").open("ab") as log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def _supervise(self) -> None:
        while not self._stopping.wait(0.1):
            with self._lock:
                for name, s in self._supervised.items():
                    self._tend(name, s)

    def _tend(self, name: str, s: _Supervised) -> None:
        code = s.proc.poll()
        if code is None or self._stopping.is_set():
            return
        now = time.monotonic()
        if s.exited_at is None:
            s.exited_at = now
            if now - s.started >= self._healthy_after:
                s.delay = self._restart_delay
            self._note(name, f"exited with {code} after {now - s.started:.1f} s; restarting in {s.delay:.1f} s")
            return
        if now - s.exited_at < s.delay:
            return
        s.delay = min(self._max_restart_delay, s.delay * 2)
        s.proc = self.procs[name] = self._spawn(name, s.argv)
        s.started, s.exited_at = now, None
        s.restarts.append(now)
        self._note(name, f"restarted (restart {len(s.restarts)})")

    def _note(self, name: str, what: str) -> None:
        line = f"loopenv: climatik {name} {what}"
        print(line, file=sys.stderr, flush=True)
        with (self.workdir / f"{name}.log").open("a") as log:
            log.write(json.dumps({"event": "loopenv_supervisor", "process": name, "message": what}) + "\n")


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
