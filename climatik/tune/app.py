"""Wiring of `climatik tune`: this node's NodeFrequencies informer, the applier and its backends."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import requests
import structlog

from climatik.clock import Clock
from climatik.kube.client import NODE_FREQUENCIES
from climatik.kube.events import EventRecorder
from climatik.kube.informer import enqueue_own_key
from climatik.kube.process import CommonSettings, ProcessShell, Wiring
from climatik.tune.applier import Applier
from climatik.tune.backends.base import CpuBackend, GpuBackend
from climatik.tune.backends.cpufreq import CpufreqBackend
from climatik.tune.backends.nvml import NvmlGpuBackend
from climatik.tune.backends.sim import SimGpuBackend
from climatik.tune.reconciler import TuneMetrics, TuneReconciler
from climatik.tune.state import StateStore

log = structlog.get_logger(__name__)

GPU_BACKENDS = ("nvml", "sim", "none")


@dataclass(frozen=True)
class TuneSettings:
    node_name: str
    gpu_backend: str = "nvml"
    sim_url: str | None = None
    cpufreq: bool = True
    sysfs_root: Path = Path("/sys")
    state_file: Path | None = Path("/var/lib/climatik/tuner-state.json")
    dry_run: bool = False
    resync: float = 30.0


def gpu_backend(settings: TuneSettings) -> GpuBackend | None:
    if settings.gpu_backend == "nvml":
        return NvmlGpuBackend()
    if settings.gpu_backend == "sim":
        if not settings.sim_url:
            raise ValueError("--gpu-backend sim needs --sim-url")
        return SimGpuBackend(base_url=settings.sim_url, session=requests.Session())
    if settings.gpu_backend == "none":
        return None
    raise ValueError(f"unknown GPU backend {settings.gpu_backend!r}; choose one of {', '.join(GPU_BACKENDS)}")


def build(settings: TuneSettings, common: CommonSettings, *, clock: Clock) -> ProcessShell:
    """The tuner process: watches only its node's object (a field selector on the name)."""
    wiring = Wiring(common, clock=clock)
    node = settings.node_name
    informer = wiring.informer(NODE_FREQUENCIES, name="nodefrequencies", field_selector=f"metadata.name={node}")
    cpu: CpuBackend | None = CpufreqBackend(root=settings.sysfs_root) if settings.cpufreq else None
    gpu = gpu_backend(settings)
    applier = Applier(state=StateStore(settings.state_file), clock=clock, gpu_backend=gpu, cpu_backend=cpu)
    reconciler = TuneReconciler(
        node_name=node, cache=informer.store, api=wiring.client.node_frequencies, applier=applier,
        events=EventRecorder(wiring.client, component="climatik-tune", host=node, clock=clock), clock=clock,
        metrics=TuneMetrics(wiring.registry, node), dry_run=settings.dry_run, resync=settings.resync,
    )
    queue = wiring.queue("tune")
    informer.add_handler(enqueue_own_key(queue))
    # Reconcile once even if the object does not exist, so that a restart restores what a crash left behind.
    queue.add(node)

    def restore() -> None:
        if not settings.dry_run:
            restored = applier.restore_all()
            log.info("defaults_restored", controller="tune", key=node, devices=[r.key for r in restored])
        for backend in (gpu, cpu):
            if backend is not None:
                backend.close()

    return ProcessShell(
        name="climatik-tune", registry=wiring.registry, informers=[informer],
        controllers=[wiring.controller("tune", reconciler, queue)], host=common.metrics_host,
        port=common.metrics_port, grace_period=common.grace_period, shutdown_hooks=[restore],
    )
