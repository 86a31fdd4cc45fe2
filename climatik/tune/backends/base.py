"""What every tuner backend offers: the GPU and CPU protocols, the per-device result, and target fitting.

A backend never raises for one device's trouble: `apply` and `reset` answer with a `DeviceResult` whose status
is one of the NodeFrequencies entry statuses (Applied, Failed, Unsupported) and whose message says why.
Only when the backend cannot work at all (no driver, no simulator) does `inventory` raise `BackendUnavailableError`.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from climatik.api.nodefrequencies import APPLIED, CpuInventory, GpuInventory


class BackendUnavailableError(Exception):
    """The backend cannot reach its hardware at all (library missing, driver not loaded, simulator down)."""


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


class CpuBackend(Protocol):
    """Logical CPUs whose frequency upper bound can be set and restored, keyed by CPU number."""

    @property
    def name(self) -> str:
        """Short name reported in the node inventory, e.g. "cpufreq"."""
        ...

    def inventory(self) -> list[CpuInventory]:
        """Every CPU with frequency control; raises BackendUnavailableError when none can be read."""
        ...

    def apply(self, cpu_id: int, max_mhz: int) -> DeviceResult:
        """Bound the CPU's frequency by `max_mhz`, clamped to its limits, and read the setting back."""
        ...

    def reset(self, cpu_id: int, original_khz: int | None = None) -> DeviceResult:
        """Put back `original_khz`, else the value found before the first change, else the hardware maximum."""
        ...

    def limit_khz(self, cpu_id: int) -> int | None:
        """The upper bound in force now, in kHz, or None when it cannot be read."""
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
