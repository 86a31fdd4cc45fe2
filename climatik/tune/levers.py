"""The levers the node guard pulls, and the one door through which the tuner reaches its GPU backend.

* Power limits: a backend that can read and limit its GPUs' power implements `PowerDevices` (every GPU's
  `PowerState` in one batch, and `set_power_limit`, which raises `PowerLimitError` when a GPU refuses).
* Clock caps: `CappedGpus` stands in front of the GPU backend the applier drives and locks each GPU at the lower
  of the algorithm's target and the guard's cap, so the guard only ever lowers below the recommender's clocks.
  A GPU whose lock the cap holds is recorded in the state file first (kind "gpuClockCap") and forgotten once the
  cap lets go, so that a tuner started after a crash gives back the caps no budget asks for any more
  (`restore_leftovers`).

In the tuner, the applier's reconcile worker and the guard's thread share the backend; `CappedGpus` serialises
every call to it (NVML's session and handles are not meant for two threads at once) and forwards what the
backend offers beyond the basic protocol (`GpuBackendExtras`: release, health, blocked, facts; and its
`PowerDevices` side), so wrapping a backend loses nothing. While the guard holds a budget it `hold`s the backend:
the release between reconciles is then skipped (the guard reads every tick, and the limits it set must stay).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from climatik.api.nodefrequencies import GpuInventory
from climatik.tune.backends.base import (
    BackendHealth,
    BackendUnavailableError,
    DeviceResult,
    GpuBackend,
    GpuBackendExtras,
    GpuNodeFacts,
    join_notes,
)
from climatik.tune.state import CLOCK_CAP_KIND, StateStore


@dataclass(frozen=True)
class PowerState:
    """One GPU's power as read on a tick: the instantaneous reading (W), its power limit now and the range it
    accepts (None: it does not take limits), and its SM clock when the same read gives it (None: ask the clocks)."""

    power: float
    limit: float | None = None
    min_limit: float | None = None
    max_limit: float | None = None
    clock_mhz: int | None = None


class PowerLimitError(Exception):
    """A GPU refused a power limit (no permission, not supported, out of range); the message says which."""


@runtime_checkable
class PowerDevices(Protocol):
    """A node's GPUs as the guard reads and limits them."""

    def power_states(self) -> Mapping[str, PowerState]:
        """Every GPU's power now, in one batch (UUID -> state); a GPU that cannot be read is left out."""
        ...

    def set_power_limit(self, uuid: str, watts: float) -> None:
        """Set a GPU's power limit; raises PowerLimitError when the GPU refuses it."""
        ...


class CappedGpus:
    """The applier's GPU backend with the guard's clock caps on top: each GPU is locked at the lower of the
    algorithm's target (set through `apply`, removed through `reset`) and the guard's cap (set through `cap`).
    Thread-safe: every call reaches the backend under one lock."""

    def __init__(self, inner: GpuBackend, *, state: StateStore | None = None) -> None:
        self.inner = inner
        self._state = state
        self._extras = inner if isinstance(inner, GpuBackendExtras) else None
        self._power = inner if isinstance(inner, PowerDevices) else None
        self._lock = threading.RLock()
        self._held = False
        self._targets: dict[str, int] = {}
        self._caps: dict[str, int] = {}
        self._clocks: dict[str, tuple[int, ...]] = {}

    @property
    def name(self) -> str:
        return self.inner.name

    # ---------------------------------------------------------------------------------------------- GpuBackend

    def inventory(self) -> list[GpuInventory]:
        with self._lock:
            listing = self.inner.inventory()
            self._clocks = {gpu.uuid: tuple(sorted(gpu.supported_frequencies or ())) for gpu in listing}
            return listing

    def apply(self, uuid: str, max_mhz: int) -> DeviceResult:
        with self._lock:
            self._targets[uuid] = max_mhz
            cap = self._caps.get(uuid)
            if cap is None or cap >= max_mhz:
                return self._settled(uuid, self.inner.apply(uuid, max_mhz))
            self._record(uuid)
            result = self.inner.apply(uuid, cap)
            return DeviceResult(result.status, requested_mhz=max_mhz, applied_mhz=result.applied_mhz,
                                current_mhz=result.current_mhz,
                                message=join_notes(f"held at {cap} MHz by the node's power budget", result.message))

    def reset(self, uuid: str) -> DeviceResult:
        with self._lock:
            self._targets.pop(uuid, None)
            cap = self._caps.get(uuid)
            if cap is None:
                return self._settled(uuid, self.inner.reset(uuid))
            self._record(uuid)
            return self.inner.apply(uuid, cap)

    def current_clock(self, uuid: str) -> int | None:
        with self._lock:
            return self.inner.current_clock(uuid)

    def close(self) -> None:
        with self._lock:
            self.inner.close()

    # ---------------------------------------------------------------------------------------- GpuBackendExtras

    def release(self) -> None:
        """The backend's release between reconciles, unless the guard holds it."""
        with self._lock:
            if self._extras is not None and not self._held:
                self._extras.release()

    def health(self) -> BackendHealth:
        return self._extras.health() if self._extras is not None else BackendHealth(True, True, "ok")

    def blocked(self) -> Mapping[str, str]:
        with self._lock:
            return self._extras.blocked() if self._extras is not None else {}

    def facts(self) -> GpuNodeFacts:
        with self._lock:
            return self._extras.facts() if self._extras is not None else GpuNodeFacts(backend=self.name)

    # ------------------------------------------------------------------------------------------ PowerDevices

    def power_states(self) -> Mapping[str, PowerState]:
        with self._lock:
            return self._power.power_states() if self._power is not None else {}

    def set_power_limit(self, uuid: str, watts: float) -> None:
        with self._lock:
            if self._power is None:
                raise PowerLimitError(f"the {self.name} backend sets no power limits")
            self._power.set_power_limit(uuid, watts)

    # ------------------------------------------------------------------------------------------------- guard

    def hold(self, held: bool) -> None:
        """Keep (True) or stop keeping what the backend holds between reconciles: the guard holds it while it
        keeps a budget, since it reads every tick and the driver must keep the limits it set."""
        with self._lock:
            self._held = held

    def clocks(self, uuid: str) -> tuple[int, ...]:
        """The clocks a GPU supports (ascending), as of the last inventory; empty when not known."""
        with self._lock:
            if not self._clocks:
                try:
                    self.inventory()
                except BackendUnavailableError:
                    return ()  # the GPUs are read again on the applier's next pass
            return self._clocks.get(uuid, ())

    def target(self, uuid: str) -> int | None:
        with self._lock:
            return self._targets.get(uuid)

    def cap(self, uuid: str, mhz: int | None) -> DeviceResult | None:
        """Set (or with None remove) the guard's cap of a GPU; locks again only when the lock moves."""
        with self._lock:
            before = self._lock_of(uuid)
            if mhz is None:
                self._caps.pop(uuid, None)
            else:
                self._caps[uuid] = mhz
            after = self._lock_of(uuid)
            if self._capping(uuid):
                self._record(uuid)
            if after == before:
                self._settle(uuid, ok=True)
                return None
            return self._settled(uuid, self.inner.reset(uuid) if after is None else self.inner.apply(uuid, after))

    def restore_leftovers(self) -> list[str]:
        """Give back the caps an earlier run left (recorded in the state file) that no budget holds now: the GPU
        returns to the algorithm's target, or is released. Returns their UUIDs."""
        with self._lock:
            if self._state is None:
                return []
            restored = []
            for uuid in sorted(self._state.entries(CLOCK_CAP_KIND)):
                if self._capping(uuid):
                    continue
                target = self._targets.get(uuid)
                result = self.inner.reset(uuid) if target is None else self.inner.apply(uuid, target)
                if result.ok:
                    self._state.forget(CLOCK_CAP_KIND, uuid)
                    restored.append(uuid)
            return restored

    def _lock_of(self, uuid: str) -> int | None:
        bounds = [mhz for mhz in (self._targets.get(uuid), self._caps.get(uuid)) if mhz is not None]
        return min(bounds) if bounds else None

    def _capping(self, uuid: str) -> bool:
        """Whether the guard's cap, not the algorithm's target, sets the GPU's lock."""
        cap, target = self._caps.get(uuid), self._targets.get(uuid)
        return cap is not None and (target is None or cap < target)

    def _record(self, uuid: str) -> None:
        # Before the lock changes: a crash in between must still find the GPU in the file.
        if self._state is not None:
            self._state.record(CLOCK_CAP_KIND, uuid, None)

    def _settled(self, uuid: str, result: DeviceResult) -> DeviceResult:
        self._settle(uuid, ok=result.ok)
        return result

    def _settle(self, uuid: str, *, ok: bool) -> None:
        """Forget the GPU's record once the cap no longer holds its lock and the lock is where it should be."""
        if self._state is not None and ok and not self._capping(uuid) and self._state.has(CLOCK_CAP_KIND, uuid):
            self._state.forget(CLOCK_CAP_KIND, uuid)
