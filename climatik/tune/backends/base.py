"""What every tuner backend offers: the GPU and CPU protocols, the per-device result, and target fitting.

A backend never raises for one device's trouble: `apply` and `reset` answer with a `DeviceResult` whose status
is one of the NodeFrequencies entry statuses (Applied, Failed, Unsupported) and whose message says why.
Only when the backend cannot work at all (no driver, no simulator, no GPU visible) does `inventory` raise
`BackendUnavailableError`.

GPU backends may offer more (`GpuBackendExtras`, optional so that a minimal backend such as the simulated loop's
stays valid): releasing what they hold between reconciles, their health for the probes, the GPUs they will never
lock (MIG), and a read-only description of the node for `climatik tune --probe` (`GpuNodeFacts`). The CPU side
is described per cpufreq policy (`CpuPolicy`), the unit the kernel really limits.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from climatik.api.nodefrequencies import APPLIED, CpuInventory, GpuInventory

#: What makes a GPU invisible to the tuner's container, for messages that say "sees no GPUs".
GPU_RUNTIME_HINT = (
    "the container runtime did not expose the node's GPUs to the tuner: NVIDIA_VISIBLE_DEVICES=all must reach "
    "the NVIDIA runtime (the node's default runtime, or the nvidia-runtime-class component), the NVIDIA container "
    "toolkit must accept it from unprivileged pods (accept-nvidia-visible-devices-envvar-when-unprivileged), and "
    "where containerd injects devices through CDI itself the variable is ignored (use the nvidia-runtime-class "
    "component)"
)


class BackendUnavailableError(Exception):
    """The backend cannot reach its hardware at all (library missing, driver not loaded, simulator down)."""


class NoGpusVisibleError(BackendUnavailableError):
    """The backend works but sees no GPU at all: on a GPU node, the container runtime hid them."""


@dataclass(frozen=True)
class BackendHealth:
    """What the tuner's probes say about a backend: `ready` (it can apply now), `live` (False only when a fresh
    container is the way out, e.g. a driver upgraded under a loaded library), and why."""

    ready: bool
    live: bool
    message: str


@dataclass(frozen=True)
class DeviceResult:
    """The outcome of one hardware change: what was asked, what was set, and what the device reads now."""

    status: str
    requested_mhz: int | None = None
    applied_mhz: int | None = None
    current_mhz: int | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == APPLIED


@dataclass(frozen=True)
class Fit:
    """A target fitted to what the hardware supports; `note` explains any change from the request."""

    mhz: int
    note: str | None = None


def fit_to_steps(requested: int, steps: Sequence[int]) -> Fit:
    """Snap `requested` down to the nearest supported step; outside the range, use the nearest end."""
    ordered = sorted(set(steps))
    if not ordered:
        raise ValueError("no supported clock steps")
    if requested < ordered[0]:
        return Fit(ordered[0], f"{requested} MHz is below the lowest supported clock; using {ordered[0]} MHz")
    if requested > ordered[-1]:
        return Fit(ordered[-1], f"{requested} MHz is above the highest supported clock; using {ordered[-1]} MHz")
    snapped = ordered[bisect.bisect_right(ordered, requested) - 1]
    if snapped != requested:
        return Fit(snapped, f"{requested} MHz is not a supported step; snapped down to {snapped} MHz")
    return Fit(requested)


def fit_to_range(requested: int, low: int | None, high: int | None) -> Fit:
    """Clamp `requested` into [low, high]; a missing bound does not limit."""
    if low is not None and requested < low:
        return Fit(low, f"{requested} MHz is below the minimum {low} MHz; using {low} MHz")
    if high is not None and requested > high:
        return Fit(high, f"{requested} MHz is above the maximum {high} MHz; using {high} MHz")
    return Fit(requested)


def join_notes(*notes: str | None) -> str | None:
    """The non-empty notes joined into one message, or None."""
    kept = [note for note in notes if note]
    return "; ".join(kept) if kept else None


class GpuBackend(Protocol):
    """GPUs whose SM clock upper bound can be set, read back and reset, keyed by UUID."""

    @property
    def name(self) -> str:
        """Short name reported in the node inventory, e.g. "nvml" or "sim"."""
        ...

    def inventory(self) -> list[GpuInventory]:
        """Every GPU of the node; raises BackendUnavailableError when none can be read."""
        ...

    def apply(self, uuid: str, max_mhz: int) -> DeviceResult:
        """Bound the SM clock by `max_mhz`, fitted to a supported step, and read the clock back."""
        ...

    def reset(self, uuid: str) -> DeviceResult:
        """Remove the bound so the GPU runs at its defaults again."""
        ...

    def current_clock(self, uuid: str) -> int | None:
        """The SM clock now running, in MHz, or None when it cannot be read."""
        ...

    def close(self) -> None:
        """Release the library or connection; the backend may not be used afterwards."""
        ...


@dataclass(frozen=True)
class GpuFacts:
    """One GPU as the tuner would see it, read without changing anything (for `climatik tune --probe`)."""

    uuid: str
    index: int | None = None
    model: str | None = None
    mig_mode: str | None = None
    mig_devices: int | None = None
    persistence_mode: bool | None = None
    memory_clocks_mhz: list[int] | None = None
    min_clock_mhz: int | None = None
    max_clock_mhz: int | None = None
    steps: int | None = None
    step_mhz: int | None = None
    default_clock_mhz: int | None = None
    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    locked_clock_mhz: int | None = None
    power_limit_w: float | None = None
    default_power_limit_w: float | None = None
    min_power_limit_w: float | None = None
    max_power_limit_w: float | None = None
    power_w: float | None = None
    instant_power_w: float | None = None
    lockable: bool = False
    lock_note: str | None = None
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GpuNodeFacts:
    """What a GPU backend sees on this node: where it looks, the library and driver, and every GPU (or why none)."""

    backend: str
    location: str | None = None
    driver_version: str | None = None
    library_version: str | None = None
    cuda_driver_version: str | None = None
    gpus: list[GpuFacts] = field(default_factory=list)
    error: str | None = None


@runtime_checkable
class GpuBackendExtras(Protocol):
    """What a GPU backend may add to `GpuBackend`; the tuner works without it (each has a neutral default)."""

    def release(self) -> None:
        """Let go of what blocks driver maintenance between reconciles, where that loses no setting."""
        ...

    def health(self) -> BackendHealth:
        """The backend's state for the readiness and liveness probes; cheap, no hardware call."""
        ...

    def blocked(self) -> Mapping[str, str]:
        """UUID -> why, for listed GPUs the backend never locks (e.g. MIG enabled), as of the last look."""
        ...

    def facts(self) -> GpuNodeFacts:
        """A read-only description of the node's GPUs; changes nothing."""
        ...


@dataclass(frozen=True)
class CpuPolicy:
    """One cpufreq policy: the CPUs whose frequency it limits together, and its limits in kHz.

    `leader` (its lowest CPU number) is the policy's key wherever the tuner records or restores a policy.
    """

    leader: int
    cpus: tuple[int, ...]
    online: tuple[int, ...]
    path: str
    driver: str | None = None
    governor: str | None = None
    hardware_min_khz: int | None = None
    hardware_max_khz: int | None = None
    min_khz: int | None = None
    max_khz: int | None = None
    current_khz: int | None = None
    bios_limit_khz: int | None = None

    @property
    def active(self) -> bool:
        """Whether any of its CPUs is online; an inactive policy answers EBUSY to every read and write."""
        return bool(self.online)


class CpuBackend(Protocol):
    """Logical CPUs whose frequency upper bound can be set and restored, keyed by CPU number.

    CPUs of one cpufreq policy share one limit: a change through any of them changes all of them.
    """

    @property
    def name(self) -> str:
        """Short name reported in the node inventory, e.g. "cpufreq"."""
        ...

    def inventory(self) -> list[CpuInventory]:
        """Every online CPU with frequency control; raises BackendUnavailableError when none can be read."""
        ...

    def policies(self) -> list[CpuPolicy]:
        """Every cpufreq policy, offline CPUs included; raises BackendUnavailableError when none can be read."""
        ...

    def apply(self, cpu_id: int, max_mhz: int) -> DeviceResult:
        """Bound the frequency of the CPU's policy by `max_mhz`, clamped to its limits, and read it back."""
        ...

    def reset(self, cpu_id: int, original_khz: int | None = None) -> DeviceResult:
        """Put back `original_khz`, else the value found before the first change, else the hardware maximum."""
        ...

    def limit_khz(self, cpu_id: int) -> int | None:
        """The upper bound in force now, in kHz, or None when it cannot be read."""
        ...

    def original_khz(self, cpu_id: int) -> int | None:
        """The bound to restore after our changes, read before the first one (None: the hardware maximum)."""
        ...

    def hardware_max_khz(self, cpu_id: int) -> int | None:
        """The hardware's own upper bound (the kernel's starting value), in kHz, or None when unreadable."""
        ...

    def current_clock(self, cpu_id: int) -> int | None:
        """The frequency now running, in MHz, or None when it cannot be read."""
        ...

    def close(self) -> None:
        """Release whatever the backend holds."""
        ...
