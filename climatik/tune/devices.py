"""GPUs and CPUs seen alike by the tracker: string keys, a cached inventory, planning, verifying, restoring.

GPU keys are UUIDs, CPU keys the CPU number as a string (as in the state file). Each adapter keeps the last
inventory its backend reported; `refresh` re-reads it. A backend that cannot be reached at all leaves the
last inventory in place and turns every entry it cannot place into Failed with the backend's reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

import structlog

from climatik.api.nodefrequencies import APPLIED, FAILED, UNSUPPORTED, CpuInventory, GpuInventory
from climatik.tune.backends.base import (
    BackendUnavailableError,
    CpuBackend,
    DeviceResult,
    Fit,
    GpuBackend,
    fit_to_range,
    fit_to_steps,
)

InventoryT = TypeVar("InventoryT", GpuInventory, CpuInventory)


class Devices(Protocol):
    """One kind of device as the tracker drives it."""

    @property
    def kind(self) -> str:
        """The section of the state file: "gpu" or "cpu"."""
        ...

    def refresh(self) -> None:
        """Re-read the inventory from the backend."""
        ...

    def keys(self) -> list[str]:
        """Every device in the last inventory."""
        ...

    def check(self, key: str, mhz: int | None) -> DeviceResult | None:
        """A result for a device that cannot be tuned (unknown, backend down), else None."""
        ...

    def plan(self, key: str, mhz: int) -> Fit:
        """What `apply` would set, from the inventory alone."""
        ...

    def original(self, key: str) -> int | None:
        """The setting to record before the first change (None: restore the hardware default)."""
        ...

    def default(self, key: str) -> int | None:
        """The hardware default, to record when the true original is unknown (None: the backend's reset)."""
        ...

    def apply(self, key: str, mhz: int) -> DeviceResult: ...

    def verify(self, key: str, applied_mhz: int) -> DeviceResult | None:
        """A fresh Applied result if the bound we set still holds, else None."""
        ...

    def restore(self, key: str, original: int | None) -> DeviceResult: ...

    def current(self, key: str) -> int | None: ...


class _Inventoried(Generic[InventoryT]):
    """The inventory cache and the checks both kinds share."""

    def __init__(self, kind: str, backend_name: str) -> None:
        self._kind = kind
        self._by_key: dict[str, InventoryT] = {}
        self._error: str | None = None
        self._log = structlog.get_logger(__name__).bind(backend=backend_name, kind=kind)

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def error(self) -> str | None:
        """Why the last inventory could not be read, or None."""
        return self._error

    @property
    def listing(self) -> list[InventoryT]:
        """The last inventory, in the backend's order."""
        return list(self._by_key.values())

    def keys(self) -> list[str]:
        return list(self._by_key)

    def check(self, key: str, mhz: int | None) -> DeviceResult | None:
        if key in self._by_key:
            return None
        if self._error is not None:
            return DeviceResult(FAILED, requested_mhz=mhz, message=self._error)
        return DeviceResult(UNSUPPORTED, requested_mhz=mhz, message=self._unknown(key))

    def _store(self, items: Sequence[InventoryT], keys: Sequence[str]) -> None:
        self._by_key = dict(zip(keys, items, strict=True))
        self._error = None

    def _fail(self, error: BackendUnavailableError) -> None:
        self._error = str(error)
        self._log.error("inventory_unavailable", error=self._error)

    def _unknown(self, key: str) -> str:
        raise NotImplementedError


class GpuDevices(_Inventoried[GpuInventory]):
    """GPUs keyed by UUID."""

    def __init__(self, backend: GpuBackend) -> None:
        super().__init__("gpu", backend.name)
        self._backend = backend

    def refresh(self) -> None:
        try:
            gpus = self._backend.inventory()
        except BackendUnavailableError as error:
            self._fail(error)
            return
        self._store(gpus, [gpu.uuid for gpu in gpus])

    def plan(self, key: str, mhz: int) -> Fit:
        gpu = self._by_key[key]
        if gpu.supported_frequencies:
            return fit_to_steps(mhz, gpu.supported_frequencies)
        return fit_to_range(mhz, gpu.min_frequency, gpu.max_frequency)

    def original(self, key: str) -> int | None:
        return None  # resetting the locked clocks is the GPU's default

    def default(self, key: str) -> int | None:
        return None

    def apply(self, key: str, mhz: int) -> DeviceResult:
        return self._backend.apply(key, mhz)

    def verify(self, key: str, applied_mhz: int) -> DeviceResult | None:
        # NVML cannot read a locked range back; a clock above our bound is the sign that it was lost.
        current = self._backend.current_clock(key)
        if current is None or current > applied_mhz:
            return None
        return DeviceResult(APPLIED, applied_mhz=applied_mhz, current_mhz=current)

    def restore(self, key: str, original: int | None) -> DeviceResult:
        return self._backend.reset(key)

    def current(self, key: str) -> int | None:
        return self._backend.current_clock(key)

    def _unknown(self, key: str) -> str:
        return f"no GPU {key} on this node"


class CpuDevices(_Inventoried[CpuInventory]):
    """Logical CPUs keyed by their number as a string."""

    def __init__(self, backend: CpuBackend) -> None:
        super().__init__("cpu", backend.name)
        self._backend = backend

    def refresh(self) -> None:
        try:
            cpus = self._backend.inventory()
        except BackendUnavailableError as error:
            self._fail(error)
            return
        self._store(cpus, [str(cpu.cpu_id) for cpu in cpus])

    def plan(self, key: str, mhz: int) -> Fit:
        cpu = self._by_key[key]
        return fit_to_range(mhz, cpu.min_frequency, cpu.max_frequency)

    def original(self, key: str) -> int | None:
        return self._backend.limit_khz(int(key))

    def default(self, key: str) -> int | None:
        return self._backend.hardware_max_khz(int(key))

    def apply(self, key: str, mhz: int) -> DeviceResult:
        return self._backend.apply(int(key), mhz)

    def verify(self, key: str, applied_mhz: int) -> DeviceResult | None:
        limit = self._backend.limit_khz(int(key))
        if limit is None or limit // 1000 != applied_mhz:
            return None
        return DeviceResult(APPLIED, applied_mhz=applied_mhz, current_mhz=self._backend.current_clock(int(key)))

    def restore(self, key: str, original: int | None) -> DeviceResult:
        return self._backend.reset(int(key), original)

    def current(self, key: str) -> int | None:
        return self._backend.current_clock(int(key))

    def _unknown(self, key: str) -> str:
        return f"CPU {key} has no cpufreq control on this node"
