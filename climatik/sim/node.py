"""A simulated GPU node: its GPUs, the workload trace and pods of each, stepped together on simulated time; and
the stable, realistic-looking names its GPUs get (UUIDs, device nodes), derived from the node's name.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from climatik.sim.gpu import SimGpu
from climatik.sim.physics import GpuProfile, Load
from climatik.sim.traces import ConstantTrace, Trace

# A fixed namespace makes the same node and index give the same UUID in every process and run.
_GPU_NAMESPACE = uuid.UUID("6f1d2c3a-8b4e-5a7f-9c0d-1e2f3a4b5c6d")


def gpu_uuid(node_name: str, index: int) -> str:
    """The UUID NVML would report for GPU `index` of `node_name`, e.g. "GPU-5fd4c8a1-...".

    Derived from the names so that a simulated cluster is reproducible without storing anything.
    """
    return f"GPU-{uuid.uuid5(_GPU_NAMESPACE, f'{node_name}/{index}')}"


def device_name(index: int) -> str:
    """The device node name DCGM reports, e.g. "nvidia0"."""
    return f"nvidia{index}"


@dataclass(frozen=True)
class PodRef:
    """The container a GPU is allocated to, as the device plugin reports it."""

    namespace: str
    pod: str
    container: str


@dataclass(frozen=True)
class GpuState:
    """What the node reports about one GPU at one moment: `power_w` is the 1 s average, `instant_power_w` the
    50 ms reading, both as the board measures them; the settable power-limit range is the profile's."""

    uuid: str
    index: int
    profile: GpuProfile
    sm_clock_mhz: int
    mem_clock_mhz: int
    target_mhz: int
    locked_max_mhz: int | None
    utilisation: float
    power_w: float
    instant_power_w: float
    energy_mj: int
    power_limit_w: float
    pods: tuple[PodRef, ...]


class SimNode:
    """N GPUs on one host. Thread-safe: a control surface may set clocks while a runner steps the node.

    Each GPU has a trace (what it is asked to do) and zero or more pods (several under time-slicing).
    Steps longer than `max_substep_s` are split so traces and clock lags are resolved finely.
    """

    def __init__(
        self,
        *,
        name: str,
        gpus: Sequence[SimGpu],
        traces: Sequence[Trace],
        pods: Sequence[Sequence[PodRef]] | None = None,
        max_substep_s: float = 0.1,
        start_s: float = 0.0,
    ) -> None:
        if len(traces) != len(gpus) or (pods is not None and len(pods) != len(gpus)):
            raise ValueError("need exactly one trace (and one pod list, if given) per GPU")
        if max_substep_s <= 0:
            raise ValueError(f"max_substep_s must be positive, got {max_substep_s}")
        self.name = name
        self._gpus = list(gpus)
        self._traces = list(traces)
        self._pods: list[tuple[PodRef, ...]] = [tuple(p) for p in pods] if pods is not None else [() for _ in gpus]
        self._max_substep_s = max_substep_s
        self._now_s = start_s
        self._lock = threading.Lock()

    @property
    def now_s(self) -> float:
        """Simulated time the node has been stepped to."""
        with self._lock:
            return self._now_s

    @property
    def gpus(self) -> tuple[SimGpu, ...]:
        """The GPUs; read them only while no other thread steps the node (benchmarks, tests)."""
        return tuple(self._gpus)

    def uuids(self) -> list[str]:
        """The GPU UUIDs in index order."""
        return [gpu.uuid for gpu in self._gpus]

    def step(self, dt_s: float) -> None:
        """Advance every GPU by `dt_s` simulated seconds, each following its trace."""
        if dt_s < 0:
            raise ValueError(f"cannot step backwards ({dt_s} s)")
        with self._lock:
            remaining = dt_s
            # A residue below a nanosecond is float noise, not time to simulate.
            while remaining > 1e-9:
                substep = min(remaining, self._max_substep_s)
                for gpu, trace in zip(self._gpus, self._traces, strict=True):
                    gpu.step(substep, trace.at(self._now_s))
                self._now_s += substep
                remaining -= substep

    def set_locked_clock(self, uuid: str, max_mhz: float) -> int:
        """Lock a GPU's SM clock upper bound (effective after the lag); returns the snapped bound."""
        with self._lock:
            return self._gpu(uuid).set_locked_clock(max_mhz)

    def reset_locked_clock(self, uuid: str) -> None:
        """Unlock a GPU's SM clock (effective after the lag)."""
        with self._lock:
            self._gpu(uuid).reset_locked_clock()

    def set_power_limit(self, uuid: str, watts: float) -> None:
        """Change a GPU's board power limit (ValueError outside the board's range, as NVML refuses it)."""
        with self._lock:
            self._gpu(uuid).set_power_limit(watts)

    def reset_power_limit(self, uuid: str) -> None:
        """Return a GPU to its default board power limit."""
        with self._lock:
            self._gpu(uuid).reset_power_limit()

    def set_trace(self, uuid: str, trace: Trace) -> None:
        """Replace what a GPU is asked to do; traces answer on the node's absolute simulated time."""
        with self._lock:
            self._traces[self._position(uuid)] = trace

    def set_load(self, uuid: str, load: Load) -> None:
        """Run a fixed load on a GPU from now on."""
        self.set_trace(uuid, ConstantTrace(load))

    def readings(self) -> list[GpuState]:
        """A consistent snapshot of every GPU, in index order."""
        with self._lock:
            return [self._reading(gpu, pods) for gpu, pods in zip(self._gpus, self._pods, strict=True)]

    def _reading(self, gpu: SimGpu, pods: tuple[PodRef, ...]) -> GpuState:
        return GpuState(
            uuid=gpu.uuid,
            index=gpu.index,
            profile=gpu.profile,
            sm_clock_mhz=gpu.sm_clock_mhz,
            mem_clock_mhz=gpu.profile.mem_clock_mhz,
            target_mhz=gpu.target_mhz,
            locked_max_mhz=gpu.locked_max_mhz,
            utilisation=gpu.load.utilisation,
            power_w=gpu.average_power_w,
            instant_power_w=gpu.instant_power_w,
            energy_mj=int(gpu.energy_j * 1000.0),
            power_limit_w=gpu.power_limit_w,
            pods=pods,
        )

    def _position(self, uuid: str) -> int:
        for position, gpu in enumerate(self._gpus):
            if gpu.uuid == uuid:
                return position
        raise KeyError(uuid)

    def _gpu(self, uuid: str) -> SimGpu:
        return self._gpus[self._position(uuid)]
