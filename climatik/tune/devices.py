"""GPUs and CPUs seen alike by the tracker: string keys, a cached inventory, planning, verifying, restoring.

GPU keys are UUIDs, CPU keys the CPU number as a string (as in the state file). Each adapter keeps the last
inventory its backend reported; `refresh` re-reads it. A backend that cannot be reached at all leaves the
last inventory in place and turns every entry it cannot place into Failed with the backend's reason.

The tracker drives one kind of device towards its targets, remembering what it set and what to restore.
Idempotence: a target equal to the one we last set successfully costs no hardware call until
`verify_interval_s` has passed; then the bound is checked (not re-read against the request, since a
GPU under load or a power limit legitimately runs below its bound) and set again only if it was lost.
Every change is recorded in the state store first; every restore forgets it afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

import structlog

from climatik.api.nodefrequencies import APPLIED, FAILED, PENDING, UNSUPPORTED, CpuInventory, GpuInventory
from climatik.clock import Clock
from climatik.tune.backends.base import (
    BackendUnavailableError,
    CpuBackend,
    DeviceResult,
    Fit,
    GpuBackend,
    fit_to_range,
    fit_to_steps,
    join_notes,
)
from climatik.tune.state import StateError, StateStore

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


@dataclass(frozen=True)
class Restoration:
    """The outcome of putting one device back to its original setting."""

    kind: str
    key: str
    result: DeviceResult


@dataclass(frozen=True)
class _Setting:
    requested_mhz: int
    result: DeviceResult
    checked_at: float


class DeviceTracker:
    """Applies targets to the devices of one kind and restores those no longer wanted."""

    def __init__(self, *, devices: Devices, state: StateStore, clock: Clock, verify_interval_s: float) -> None:
        self._devices = devices
        self._state = state
        self._clock = clock
        self._verify_interval_s = verify_interval_s
        self._settings: dict[str, _Setting] = {}
        self._recovery_done = False
        self._log = structlog.get_logger(__name__).bind(controller="tune", kind=devices.kind)

    def apply(
        self, desired: Mapping[str, int], *, dry_run: bool = False
    ) -> tuple[dict[str, DeviceResult], list[Restoration]]:
        """Set every desired device, then restore recorded ones no longer desired (not in a dry run)."""
        if not dry_run:
            self._recover()
        results = {key: self._apply_one(key, mhz, dry_run=dry_run) for key, mhz in desired.items()}
        restored = [] if dry_run else self._restore_where(lambda key: key not in desired)
        return results, restored

    def restore_all(self) -> list[Restoration]:
        """Put every device this tuner changed (in this run or an earlier one) back to its original."""
        self._recover()
        return self._restore_where(lambda key: True)

    def _apply_one(self, key: str, mhz: int, *, dry_run: bool) -> DeviceResult:
        blocked = self._devices.check(key, mhz)
        if blocked is not None:
            return blocked
        if dry_run:
            fit = self._devices.plan(key, mhz)
            return DeviceResult(PENDING, requested_mhz=mhz, applied_mhz=fit.mhz, current_mhz=self._devices.current(key),
                                message=join_notes(f"dry-run: would set {fit.mhz} MHz; nothing changed", fit.note))
        now = self._clock.now()
        setting = self._settings.get(key)
        if setting is not None and setting.requested_mhz == mhz:
            if now - setting.checked_at < self._verify_interval_s:
                return setting.result
            verified = self._verify(key, setting, now)
            if verified is not None:
                return verified
        try:
            if not self._state.has(self._devices.kind, key):
                self._state.record(self._devices.kind, key, self._devices.original(key))
        except StateError as error:
            self._log.error("change_refused", key=key, error=str(error))
            return DeviceResult(FAILED, requested_mhz=mhz, message=f"left unchanged: {error}")
        result = self._devices.apply(key, mhz)
        if result.ok:
            self._settings[key] = _Setting(mhz, result, now)
            self._log.info("target_applied", key=key, requested_mhz=mhz, applied_mhz=result.applied_mhz,
                           current_mhz=result.current_mhz)
        else:
            self._settings.pop(key, None)
            self._log.warning("target_not_applied", key=key, status=result.status, error=result.message)
        return result

    def _verify(self, key: str, setting: _Setting, now: float) -> DeviceResult | None:
        applied = setting.result.applied_mhz
        fresh = None if applied is None else self._devices.verify(key, applied)
        if fresh is None:
            self._log.warning("setting_lost", key=key, applied_mhz=applied)
            return None
        result = replace(setting.result, current_mhz=fresh.current_mhz)
        self._settings[key] = _Setting(setting.requested_mhz, result, now)
        return result

    def _restore_where(self, wanted: Callable[[str], bool]) -> list[Restoration]:
        restored = []
        for key, original in self._state.entries(self._devices.kind).items():
            if not wanted(key):
                continue
            result = self._devices.restore(key, original)
            # Unsupported means the device is gone or was never changeable: nothing is left to put back.
            if result.status in (APPLIED, UNSUPPORTED):
                self._settings.pop(key, None)
                self._forget(key)
                self._log.info("default_restored", key=key, status=result.status, detail=result.message)
            else:
                self._log.warning("restore_failed", key=key, error=result.message)
            restored.append(Restoration(self._devices.kind, key, result))
        return restored

    def _forget(self, key: str) -> None:
        try:
            self._state.forget(self._devices.kind, key)
        except StateError as error:
            self._log.warning("state_not_cleared", key=key, error=str(error))

    def _recover(self) -> None:
        """After an unusable state file, treat every device seen as changed, with its hardware default."""
        if self._recovery_done or not self._state.recovered:
            return
        keys = self._devices.keys()
        if not keys:
            return  # the inventory is not in yet; try again next time
        try:
            for key in keys:
                self._state.record(self._devices.kind, key, self._devices.default(key))
        except StateError as error:
            self._log.error("recovery_not_recorded", error=str(error))
            return
        self._recovery_done = True
        self._log.warning("state_recovered", devices=len(keys))
