"""Wiring of `climatik tune`: this node's NodeFrequencies informer, the applier and its backends, the node guard that
keeps the node's power budgets (a controller of its own that ticks every `guard_interval`, in front of the same
GPU backend), the probes that follow the GPU library's health, and `--probe`, which prints what the tuner would
see and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
import structlog

from climatik.clock import Clock
from climatik.kube.client import NODE_FREQUENCIES, ResourceClient
from climatik.kube.errors import KubeError
from climatik.kube.events import EventRecorder
from climatik.kube.informer import enqueue_own_key
from climatik.kube.process import CommonSettings, Probe, ProcessShell, Wiring
from climatik.tune import probe as node_probe
from climatik.tune.applier import Applier
from climatik.tune.backends.base import CpuBackend, GpuBackend, GpuBackendExtras
from climatik.tune.backends.cpufreq import CpufreqBackend
from climatik.tune.backends.nvml import NvmlGpuBackend
from climatik.tune.backends.sim import SimGpuBackend
from climatik.tune.devices import GPU_COUNT_LABEL
from climatik.tune.guard import NodeGuard
from climatik.tune.guardloop import GUARD_KEY, GuardLoop, GuardMetrics
from climatik.tune.levers import CappedGpus
from climatik.tune.reconciler import REPORT_KEY, TuneMetrics, TuneReconciler
from climatik.tune.state import PowerLimitOriginals, StateStore

log = structlog.get_logger(__name__)

GPU_BACKENDS = ("nvml", "sim", "none")
#: How long the node's GPU count label is trusted before the Node is read again.
NODE_LABEL_TTL_S = 300.0


@dataclass(frozen=True)
class TuneSettings:
    """`gpu_baseline`: the (min, max) MHz range GPUs are locked to on release instead of unlocked (a site that
    locks clocks itself); `cpu_original`: what a CPU's limit returns to ("hardware" or "found")."""

    node_name: str
    gpu_backend: str = "nvml"
    sim_url: str | None = None
    cpufreq: bool = True
    sysfs_root: Path = Path("/sys")
    state_file: Path | None = Path("/var/lib/climatik/tuner-state.json")
    dry_run: bool = False
    resync: float = 30.0
    gpu_baseline: tuple[int, int] | None = None
    cpu_original: str = "hardware"
    guard_interval: float = 0.1
    guard_idle_interval: float = 1.0


def gpu_backend(settings: TuneSettings, *, clock: Clock) -> GpuBackend | None:
    if settings.gpu_backend == "nvml":
        return NvmlGpuBackend(clock=clock, baseline=settings.gpu_baseline)
    if settings.gpu_backend == "sim":
        if not settings.sim_url:
            raise ValueError("--gpu-backend sim needs --sim-url")
        session = requests.Session()
        # The simulated node is reached directly: requests would read the proxy settings of the environment on
        # every request, which costs more than the guard's tick itself.
        session.trust_env = False
        return SimGpuBackend(base_url=settings.sim_url, session=session, baseline=settings.gpu_baseline)
    if settings.gpu_backend == "none":
        return None
    raise ValueError(f"unknown GPU backend {settings.gpu_backend!r}; choose one of {', '.join(GPU_BACKENDS)}")


def cpu_backend(settings: TuneSettings) -> CpuBackend | None:
    return CpufreqBackend(root=settings.sysfs_root, original=settings.cpu_original) if settings.cpufreq else None


def node_gpu_count(nodes: ResourceClient, node: str, *, clock: Clock) -> Callable[[], int | None]:
    """How many GPUs the node should have, from its nvidia.com/gpu.count label (set by GPU feature discovery), read
    at most every NODE_LABEL_TTL_S; None when there is no such label or the Node cannot be read."""
    cached: dict[str, tuple[float, int | None]] = {}

    def read() -> int | None:
        now = clock.now()
        if node in cached and now - cached[node][0] < NODE_LABEL_TTL_S:
            return cached[node][1]
        try:
            labels = nodes.get(node).get("metadata", {}).get("labels") or {}
        except KubeError as error:
            # Only a comparison is lost: the tuner works without it.
            log.warning("node_unreadable", controller="tune", key=node, error=str(error))
            count = None
        else:
            value = str(labels.get(GPU_COUNT_LABEL, ""))
            count = int(value) if value.isdigit() else None
        cached[node] = (now, count)
        return count

    return read


def build(settings: TuneSettings, common: CommonSettings, *, clock: Clock) -> ProcessShell:
    """The tuner process: watches only its node's object (a field selector on the name)."""
    wiring = Wiring(common, clock=clock)
    node = settings.node_name
    informer = wiring.informer(NODE_FREQUENCIES, name="nodefrequencies", field_selector=f"metadata.name={node}")
    cpu = cpu_backend(settings)
    raw_gpu = gpu_backend(settings, clock=clock)
    state = StateStore(settings.state_file)
    # The applier and the guard reach the GPUs through one door, which locks the lower of target and cap.
    gpu = CappedGpus(raw_gpu, state=state) if raw_gpu is not None else None
    applier = Applier(state=state, clock=clock, gpu_backend=gpu, cpu_backend=cpu,
                      gpu_expected_count=node_gpu_count(wiring.client.nodes, node, clock=clock))
    queue = wiring.queue("tune")
    guard_queue = wiring.queue("tune-guard")
    # A dry run changes nothing, so it keeps no budget either.
    guard = None if gpu is None or settings.dry_run else GuardLoop(
        guard=NodeGuard(gpu, gpu, originals=PowerLimitOriginals(state)), devices=gpu, clock=clock, node=node,
        request_report=lambda: queue.add(REPORT_KEY), interval=settings.guard_interval,
        idle_interval=settings.guard_idle_interval, metrics=GuardMetrics(wiring.registry, node))
    reconciler = TuneReconciler(
        node_name=node, cache=informer.store, api=wiring.client.node_frequencies, applier=applier,
        events=EventRecorder(wiring.client, component="climatik-tune", host=node, clock=clock), clock=clock,
        metrics=TuneMetrics(wiring.registry, node), dry_run=settings.dry_run, resync=settings.resync, guard=guard,
    )
    informer.add_handler(enqueue_own_key(queue))
    # Reconcile once even if the object does not exist, so that a restart restores what a crash left behind.
    queue.add(node)
    controllers = [wiring.controller("tune", reconciler, queue)]
    if guard is not None:
        guard_queue.add(GUARD_KEY)
        controllers.append(wiring.controller("tune-guard", guard, guard_queue))

    def restore() -> None:
        # The guard first: a cap still in force would hold a clock the applier restores.
        if guard is not None:
            guard.release()
        if not settings.dry_run:
            restored = applier.restore_all()
            log.info("defaults_restored", controller="tune", key=node, devices=[r.key for r in restored])
        for backend in (gpu, cpu):
            if backend is not None:
                backend.close()

    ready, live = probes(raw_gpu)
    return ProcessShell(
        name="climatik-tune", registry=wiring.registry, informers=[informer], controllers=controllers,
        host=common.metrics_host, port=common.metrics_port, grace_period=common.grace_period,
        shutdown_hooks=[restore], ready_check=ready, live=live,
    )


def probes(gpu: GpuBackend | None) -> tuple[Probe | None, Probe | None]:
    """Readiness and liveness that follow the GPU backend's health: not ready while its library cannot work
    (or sees no GPU); not live when only a new container can fix it (a driver upgraded under the library)."""
    if not isinstance(gpu, GpuBackendExtras):
        return None, None
    extras = gpu

    def ready() -> tuple[bool, str]:
        health = extras.health()
        return health.ready, health.message

    def live() -> tuple[bool, str]:
        health = extras.health()
        return health.live, "ok" if health.live else health.message

    return ready, live


def probe(settings: TuneSettings, *, output: str = "text", clock: Clock) -> str:
    """What the tuner would see on this node, as text or JSON (`output`); reads only, changes nothing."""
    gpu = gpu_backend(settings, clock=clock)
    cpu = cpu_backend(settings)
    try:
        found = node_probe.collect(gpu=gpu, cpu=cpu, sys_admin=node_probe.has_sys_admin())
    finally:
        for backend in (gpu, cpu):
            if backend is not None:
                backend.close()
    return node_probe.render_json(found) + "\n" if output == "json" else node_probe.render_text(found)
