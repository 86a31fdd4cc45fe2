"""GPUs and CPUs seen alike by the tracker: string keys, a cached inventory, planning, verifying, restoring.

GPU keys are UUIDs, CPU keys the CPU number as a string (as in the state file). Each adapter keeps the last
inventory its backend reported; `refresh` re-reads it. A backend that cannot be reached at all leaves the
last inventory in place and turns every entry it cannot place into Failed with the backend's reason.

A device may be changed through another key, its `owner`: CPUs that share a cpufreq policy (acpi-cpufreq with
_PSD coordination, many ARM clusters) have one limit, so they are recorded, set and restored once, under the
policy's first CPU, and their entries resolve to the lowest target among them. A GPU owns itself.

The tracker drives one kind of device towards its targets, remembering what it set and what to restore.
Idempotence: a target equal to the one we last set successfully costs no hardware call until
`verify_interval_s` has passed; then the bound is checked (a GPU's clock may read a few MHz over its bound, so
half a step is tolerated; a GPU under load or a power limit legitimately runs below it) and set again if it
was lost. A lost lock shows only under load, so every `reassert_interval_s` the bound is set again anyway (the
call is idempotent and cheap). Every change is recorded in the state store first; every restore forgets it
afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

import structlog

from climatik.api.nodefrequencies import APPLIED, FAILED, PENDING, UNSUPPORTED, CpuInventory, GpuInventory
from climatik.clock import Clock
from climatik.tune.backends.base import (
    GPU_RUNTIME_HINT,
    BackendUnavailableError,
    CpuBackend,
    CpuPolicy,
    DeviceResult,
    Fit,
    GpuBackend,
    GpuBackendExtras,
    NoGpusVisibleError,
    fit_to_range,
    fit_to_steps,
    join_notes,
)
from climatik.tune.state import StateError, StateStore

InventoryT = TypeVar("InventoryT", GpuInventory, CpuInventory)

#: The node label (set by NVIDIA GPU feature discovery) that says how many GPUs the node has.
GPU_COUNT_LABEL = "nvidia.com/gpu.count"


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
        """Every device in the last inventory that can be changed, by owner key."""
        ...

    def owner(self, key: str) -> str:
        """The key under which `key` is changed, recorded and restored."""
        ...

    def check(self, key: str, mhz: int | None) -> DeviceResult | None:
        """A result for an entry that cannot be tuned (unknown, offline, MIG, backend down), else None."""
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

    def owner(self, key: str) -> str:
        return key

    def check(self, key: str, mhz: int | None) -> DeviceResult | None:
        if key in self._by_key:
            return None
        if self._error is not None:
            return DeviceResult(FAILED, requested_mhz=mhz, message=self._error)
        return DeviceResult(UNSUPPORTED, requested_mhz=mhz, message=self._unknown(key))

    def _store(self, items: Sequence[InventoryT], keys: Sequence[str]) -> None:
        self._by_key = dict(zip(keys, items, strict=True))
        self._error = None

    def _fail(self, reason: str) -> None:
        self._error = reason
        self._log.error("inventory_unavailable", error=reason)

    def _unknown(self, key: str) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class GpuAccess:
    """Why some or all of a node's GPUs cannot be capped (the GpusCappable condition): a CamelCase reason and a
    message naming the GPUs and what to do."""

    reason: str
    message: str


class GpuDevices(_Inventoried[GpuInventory]):
    """GPUs keyed by UUID. `expected_count` answers how many GPUs the node should have (its nvidia.com/gpu.count
    label), or None when unknown; it is asked at each inventory."""

    def __init__(self, backend: GpuBackend, *, expected_count: Callable[[], int | None] | None = None) -> None:
        super().__init__("gpu", backend.name)
        self._backend = backend
        self._extras = backend if isinstance(backend, GpuBackendExtras) else None
        self._expected_count = expected_count
        self._expected: int | None = None
        self._blocked: dict[str, str] = {}
        self._invisible = False
        self._who = "NVML" if backend.name == "nvml" else f"the {backend.name} backend"

    @property
    def access(self) -> GpuAccess | None:
        """Why GPUs cannot be capped, from the last inventory; None when every GPU can."""
        findings: list[tuple[str, str]] = []
        if self._error is not None:
            findings.append(("NoGpusVisible" if self._invisible else "BackendUnavailable", self._error))
        elif self._hidden():
            findings.append(("GpusHidden", self._hidden_message()))
        if self._blocked:
            findings.append(("MigEnabled", f"{', '.join(sorted(self._blocked))}: MIG mode is enabled; their SM "
                                           "clocks are shared by every MIG instance, so the tuner never locks them"))
        if not findings:
            return None
        return GpuAccess(findings[0][0], "; ".join(message for _, message in findings))

    def refresh(self) -> None:
        self._expected = self._expected_count() if self._expected_count is not None else None
        try:
            gpus = self._backend.inventory()
        except BackendUnavailableError as error:
            self._invisible = isinstance(error, NoGpusVisibleError)
            label = f"; the node's {GPU_COUNT_LABEL} label says {self._expected}" if self._expected else ""
            self._fail(f"{error}{label}")
            return
        self._invisible = False
        self._store(gpus, [gpu.uuid for gpu in gpus])
        blocked = self._extras.blocked() if self._extras is not None else {}
        self._blocked = {uuid: why for uuid, why in blocked.items() if uuid in self._by_key}
        if self._hidden():
            self._log.warning("gpus_hidden", visible=len(self._by_key), expected=self._expected)

    def release(self) -> None:
        """Let the backend let go of what it holds between passes (NVML's session)."""
        if self._extras is not None:
            self._extras.release()

    def check(self, key: str, mhz: int | None) -> DeviceResult | None:
        if key in self._blocked:
            return DeviceResult(UNSUPPORTED, requested_mhz=mhz, message=self._blocked[key])
        return super().check(key, mhz)

    def plan(self, key: str, mhz: int) -> Fit:
        gpu = self._by_key[key]
        if gpu.supported_frequencies:
            return fit_to_steps(mhz, gpu.supported_frequencies)
        return fit_to_range(mhz, gpu.min_frequency, gpu.max_frequency)

    def original(self, key: str) -> int | None:
        return None  # the backend's release: the node's baseline, or the GPU's default

    def default(self, key: str) -> int | None:
        return None

    def apply(self, key: str, mhz: int) -> DeviceResult:
        return self._backend.apply(key, mhz)

    def verify(self, key: str, applied_mhz: int) -> DeviceResult | None:
        # NVML cannot read a locked range back; a clock above our bound is the sign that it was lost. Clocks read
        # a few MHz off the bound (nvml.h), so only more than half a step over counts.
        current = self._backend.current_clock(key)
        if current is None or current > applied_mhz + self._half_step(key, applied_mhz):
            return None
        return DeviceResult(APPLIED, applied_mhz=applied_mhz, current_mhz=current)

    def restore(self, key: str, original: int | None) -> DeviceResult:
        return self._backend.reset(key)

    def current(self, key: str) -> int | None:
        return self._backend.current_clock(key)

    def _half_step(self, key: str, mhz: int) -> int:
        gpu = self._by_key.get(key)
        steps = sorted(gpu.supported_frequencies or []) if gpu is not None else []
        above = [step for step in steps if step > mhz]
        below = [step for step in steps if step < mhz]
        gap = above[0] - mhz if above else mhz - below[-1] if below else 0
        return gap // 2

    def _hidden(self) -> bool:
        return self._expected is not None and len(self._by_key) < self._expected

    def _hidden_message(self) -> str:
        return (f"{self._who} sees {len(self._by_key)} GPUs but the node's {GPU_COUNT_LABEL} label says "
                f"{self._expected}: {GPU_RUNTIME_HINT}")

    def _unknown(self, key: str) -> str:
        if self._hidden():
            return f"no GPU {key} among those the tuner sees; {self._hidden_message()}"
        return f"no GPU {key} on this node"


class CpuDevices(_Inventoried[CpuInventory]):
    """Logical CPUs keyed by their number as a string, changed per cpufreq policy."""

    def __init__(self, backend: CpuBackend) -> None:
        super().__init__("cpu", backend.name)
        self._backend = backend
        self._policies: dict[str, CpuPolicy] = {}
        self._owners: dict[str, str] = {}
        self._offline: set[str] = set()

    def refresh(self) -> None:
        try:
            policies = self._backend.policies()
            cpus = self._backend.inventory()
        except BackendUnavailableError as error:
            self._fail(str(error))
            return
        self._store(cpus, [str(cpu.cpu_id) for cpu in cpus])
        self._policies = {str(policy.leader): policy for policy in policies}
        self._owners = {str(cpu): str(policy.leader) for policy in policies for cpu in policy.cpus}
        self._offline = {str(cpu) for policy in policies for cpu in policy.cpus if cpu not in policy.online}

    def keys(self) -> list[str]:
        return [leader for leader, policy in self._policies.items() if policy.active]

    def owner(self, key: str) -> str:
        return self._owners.get(key, key)

    def check(self, key: str, mhz: int | None) -> DeviceResult | None:
        if key in self._offline:
            return DeviceResult(UNSUPPORTED, requested_mhz=mhz,
                                message=f"CPU {key} is offline; its cpufreq policy takes no limit until it is online")
        return super().check(key, mhz)

    def plan(self, key: str, mhz: int) -> Fit:
        policy = self._policies.get(key)
        if policy is None:
            cpu = self._by_key[key]
            return fit_to_range(mhz, cpu.min_frequency, cpu.max_frequency)
        low, high = policy.hardware_min_khz, policy.hardware_max_khz
        return fit_to_range(mhz, None if low is None else math.ceil(low / 1000), None if high is None else high // 1000)

    def original(self, key: str) -> int | None:
        return self._backend.original_khz(int(key))

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
    set_at: float


class DeviceTracker:
    """Applies targets to the devices of one kind and restores those no longer wanted."""

    def __init__(self, *, devices: Devices, state: StateStore, clock: Clock, verify_interval_s: float,
                 reassert_interval_s: float = 300.0) -> None:
        self._devices = devices
        self._state = state
        self._clock = clock
        self._verify_interval_s = verify_interval_s
        self._reassert_interval_s = reassert_interval_s
        self._settings: dict[str, _Setting] = {}
        self._recovery_done = False
        self._log = structlog.get_logger(__name__).bind(controller="tune", kind=devices.kind)

    def apply(
        self, desired: Mapping[str, int], *, dry_run: bool = False
    ) -> tuple[dict[str, DeviceResult], list[Restoration]]:
        """Set every desired device, then restore recorded ones no longer desired (not in a dry run).

        Entries whose devices share an owner resolve to the lowest target among them.
        """
        if not dry_run:
            self._recover()
        results: dict[str, DeviceResult] = {}
        groups: dict[str, list[str]] = {}
        for key, mhz in desired.items():
            blocked = self._devices.check(key, mhz)
            if blocked is not None:
                results[key] = blocked
            else:
                groups.setdefault(self._devices.owner(key), []).append(key)
        for owner, keys in groups.items():
            targets = {desired[key] for key in keys}
            result = self._apply_one(owner, min(targets), dry_run=dry_run)
            # Only CPUs share an owner (GPUs own themselves); a note when their entries asked different things.
            shared = None if len(targets) == 1 else (
                f"CPUs {', '.join(sorted(keys, key=int))} share one cpufreq policy; the lowest target applies")
            for key in keys:
                results[key] = replace(result, requested_mhz=desired[key], message=join_notes(result.message, shared))
        restored = [] if dry_run else self._restore_where(lambda owner: owner not in groups)
        return results, restored

    def restore_all(self) -> list[Restoration]:
        """Put every device this tuner changed (in this run or an earlier one) back to its original."""
        self._recover()
        return self._restore_where(lambda owner: True)

    def _apply_one(self, key: str, mhz: int, *, dry_run: bool) -> DeviceResult:
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
            if verified is not None and now - setting.set_at < self._reassert_interval_s:
                return verified
            if verified is not None:
                self._log.debug("setting_reasserted", key=key, applied_mhz=setting.result.applied_mhz)
        try:
            if not self._state.has(self._devices.kind, key):
                self._state.record(self._devices.kind, key, self._devices.original(key))
        except StateError as error:
            self._log.error("change_refused", key=key, error=str(error))
            return DeviceResult(FAILED, requested_mhz=mhz, message=f"left unchanged: {error}")
        result = self._devices.apply(key, mhz)
        if result.ok:
            self._settings[key] = _Setting(mhz, result, now, now)
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
        self._settings[key] = replace(setting, result=result, checked_at=now)
        return result

    def _restore_where(self, wanted: Callable[[str], bool]) -> list[Restoration]:
        # Entries recorded under several keys of one owner (a state file from before policies were grouped) are
        # restored once, to the least limiting original among them: a later member's "original" may be the
        # limit an earlier member's change had already set.
        groups: dict[str, dict[str, int | None]] = {}
        for key, original in self._state.entries(self._devices.kind).items():
            groups.setdefault(self._devices.owner(key), {})[key] = original
        restored = []
        for owner, members in groups.items():
            if not wanted(owner):
                continue
            originals = list(members.values())
            original = None if None in originals else max(value for value in originals if value is not None)
            result = self._devices.restore(owner, original)
            # Unsupported means the device is gone or was never changeable: nothing is left to put back.
            if result.status in (APPLIED, UNSUPPORTED):
                self._settings.pop(owner, None)
                for key in members:
                    self._forget(key)
                self._log.info("default_restored", key=owner, status=result.status, detail=result.message)
            else:
                self._log.warning("restore_failed", key=owner, error=result.message)
            restored.append(Restoration(self._devices.kind, owner, result))
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
